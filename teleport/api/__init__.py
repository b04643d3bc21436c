"""What the auth API and the proxy's web API share on the wire, below both services.

Today: the HTTP server plumbing (`httpserver`) and the per-address rate limiter. Planned
(issue 10): the request and response models of both APIs and the one HTTP client path.
"""
