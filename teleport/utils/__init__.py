"""Tiny dependency-free helpers: durations, addresses, the clock, private files."""
