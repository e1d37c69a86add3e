"""errorgate.delivery."""
