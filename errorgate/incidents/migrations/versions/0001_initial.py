"""incidents, their alerts, the timeline and the audit trail

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "incidents",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("group_key", sa.String(512), nullable=False, index=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(4), nullable=False),
        sa.Column("title", sa.String(512), nullable=False),
        sa.Column("team", sa.String(128), nullable=False),
        sa.Column("services", sa.Text, nullable=False),
        sa.Column("first_error_at", sa.Float, nullable=False),
        sa.Column("fired_at", sa.Float, nullable=False),
        sa.Column("opened_at", sa.Float, nullable=False),
        sa.Column("acknowledged_at", sa.Float),
        sa.Column("resolved_at", sa.Float),
        sa.Column("closed_at", sa.Float),
        sa.Column("escalation_step", sa.Integer, nullable=False, server_default="0"),
        sa.Column("escalated_at", sa.Float),
        sa.Column("postmortem_key", sa.String(64)),
        sa.Column("postmortem_status", sa.String(64)),
        sa.Column("postmortem_done", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("silences", sa.Text, nullable=False, server_default="[]"),
        sa.Column("paged", sa.String(16), nullable=False, server_default=""),
    )
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("incident_id", sa.Integer, sa.ForeignKey("incidents.id"), nullable=False, index=True),
        sa.Column("fingerprint", sa.String(128), nullable=False),
        sa.Column("alertname", sa.String(256), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("labels", sa.Text, nullable=False),
        sa.Column("starts_at", sa.Float, nullable=False),
        sa.Column("ends_at", sa.Float),
        sa.UniqueConstraint("incident_id", "fingerprint"),
    )
    op.create_table(
        "timeline",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("incident_id", sa.Integer, sa.ForeignKey("incidents.id"), nullable=False, index=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
    )
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(128), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
    )


def downgrade() -> None:
    for table in ("audit", "timeline", "alerts", "incidents"):
        op.drop_table(table)
