"""SafeHarbor's wire formats, written once for the services and the client SDK alike (no server dependency)."""
