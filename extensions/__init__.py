"""errorgate.extensions: shared services as components (the Collector's ``extensions:``).

Each module is one extension type: its config model, its class (an ``Extension``) and its
``factory``, listed in ``pyproject.toml`` under ``errorgate.extensions``. Processors reach an
extension by type (``context.extension(KeyringExtension)``), never through a name lookup.
"""
