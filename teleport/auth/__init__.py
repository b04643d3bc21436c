"""The auth service: CAs, users, logins, host identities, and its mTLS API and client."""
