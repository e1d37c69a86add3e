"""Building blocks of the ``redact`` processor: key policy and packs, recognizers, the
analysis engine with its value cache, the multi-core pool, the walker over OTLP string
locations, and the actions that replace what was found."""
