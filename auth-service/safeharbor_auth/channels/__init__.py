"""Channels: Stream credentials for a session, the channel filter by role, creating channels by role."""
