"""Typed stores over the backend, one per kind of state, each owning its key prefix."""
