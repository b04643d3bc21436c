"""The proxy service: SSH proxy, reverse tunnels, web server."""
