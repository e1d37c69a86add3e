"""errorgate.pipeline."""
