"""errorgate.pipeline.assembly."""
