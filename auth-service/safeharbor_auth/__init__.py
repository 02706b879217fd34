"""SafeHarbor auth-service: users, passwords, MFA, sessions and session tokens, Stream credentials."""
