"""errorgate.pipeline.hold."""
