"""errorgate.intake."""
