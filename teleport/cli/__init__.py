"""The `teleport`, `tctl` and `tsh` command lines: parse, call, format. No logic lives here."""

import os

# The first time a model validates, pydantic looks for plugins among the entry points of every
# installed distribution (~10 ms on each CLI call); this product loads none. A user who wants
# one sets the variable.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
