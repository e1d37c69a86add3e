"""errorgate.otlp."""
