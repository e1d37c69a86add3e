"""CLI sub-commands. Each module here exposes ``add_commands(subparsers)``; ``errorgate.cli``
discovers them, so an area adds commands without editing the CLI core."""
