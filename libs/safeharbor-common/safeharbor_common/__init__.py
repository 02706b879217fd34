"""SafeHarbor's shared library: only what must be identical in every service."""
