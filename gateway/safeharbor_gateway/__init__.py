"""SafeHarbor gateway: the one door in front of every service."""
