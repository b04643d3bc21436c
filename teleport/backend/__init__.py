"""The one key-value backend interface and its drivers (memory, sqlite; etcd, postgres later)."""

from teleport.backend.base import Backend, Event, EventType, Item, Watcher, key, range_end

__all__ = ["Backend", "Event", "EventType", "Item", "Watcher", "key", "range_end"]
