"""errorgate.demo."""
