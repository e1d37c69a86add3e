"""errorgate.processors: one module per processor (config model, class, ``factory``), listed once
as entry points in ``pyproject.toml``."""
