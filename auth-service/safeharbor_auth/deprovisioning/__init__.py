"""Deprovisioning: deactivate and reactivate users; Stream and keydir follow-ups as durable jobs."""
