"""Alembic environment: the store hands over its open connection, so migrations run inside the
same transaction and on the same database the engine uses (SQLite or PostgreSQL)."""

from alembic import context

connection = context.config.attributes["connection"]
# Batch mode lets later migrations alter columns on SQLite, which has no ALTER COLUMN.
context.configure(connection=connection, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
