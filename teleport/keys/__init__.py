"""Keys and certificates: SSH and X.509 CAs, issuing and verifying certificates, the CA pin.

Pure functions without I/O (except loading TLS contexts); CPU-heavy ones are synchronous, so
callers run them in a thread pool.
"""
