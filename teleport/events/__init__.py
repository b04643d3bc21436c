"""Audit events: one emitter interface, sinks (files, the auth API), and search later."""
