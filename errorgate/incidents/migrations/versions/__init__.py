"""Bundled migration scripts; Alembic skips this file."""
