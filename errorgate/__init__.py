"""errorgate: an error-control gateway for OpenTelemetry (OTLP in, processors, reliable OTLP out)."""

__version__ = "0.1.0"
