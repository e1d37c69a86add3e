"""errorgate.service."""
