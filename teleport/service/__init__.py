"""The teleport process: which services run, their identities, listeners and lifecycle."""
