"""Sessions: login (an explicit state machine), tokens, refresh rotation, logout, the revocation feed."""
