"""errorgate.pipeline.worker."""
