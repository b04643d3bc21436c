"""In-memory replicas of what proxies read, so they keep answering while the auth server is down."""

from teleport.cache.replica import CachedAuth

__all__ = ["CachedAuth"]
