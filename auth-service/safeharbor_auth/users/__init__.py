"""Users: create, list, read, change name or role."""
