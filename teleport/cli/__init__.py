"""The `teleport`, `tctl` and `tsh` command lines: parse, call, format. No logic lives here."""
