"""postmortem action items, filed as linked Jira issues

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "action_items",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("incident_id", sa.Integer, sa.ForeignKey("incidents.id"), nullable=False, index=True),
        sa.Column("team", sa.String(128), nullable=False),
        sa.Column("summary", sa.String(255), nullable=False),
        sa.Column("due_at", sa.Float),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("jira_key", sa.String(64), index=True),
        sa.Column("status", sa.String(64)),
        sa.Column("done", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("done_at", sa.Float),
    )


def downgrade() -> None:
    op.drop_table("action_items")
