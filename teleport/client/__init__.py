"""What `tsh` does: profiles in ~/.tsh, login through the web API, ssh through the proxy."""
