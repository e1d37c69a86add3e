"""Alembic migration environment of the incident store (run programmatically by ``Store.upgrade``)."""
