"""errorgate.exporters: one module per exporter (config model, class, ``factory``), listed once
as entry points in ``pyproject.toml``."""
