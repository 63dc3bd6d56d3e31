"""calls, steps, callbacks, trunk events, admin actions

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-26

Times are ``timestamptz`` on PostgreSQL and UTC text on SQLite (see models.UTCDateTime).
Migrations use plain SQLAlchemy types, never the models: they must not change with them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_initial"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = sa.DateTime(timezone=True)
OUTCOMES = (
    "'answered', 'forwarded', 'emergency', 'callback', 'voicemail', 'hangup', 'abandoned', 'failed'"
)


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("flow", sa.String(), nullable=False),
        sa.Column("flow_version", sa.String(), nullable=False),
        sa.Column("dialed", sa.String(), nullable=False),
        sa.Column("caller", sa.String(), nullable=False),
        sa.Column("started", UTC, nullable=False),
        sa.Column("answered", UTC, nullable=True),
        sa.Column("ended", UTC, nullable=True),
        sa.Column("outcome", sa.String(), nullable=True),
        sa.Column("tier", sa.Integer(), nullable=True),
        sa.Column("destination", sa.String(), nullable=True),
        sa.Column("trunk", sa.String(), nullable=True),
        sa.Column("end_step", sa.String(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.CheckConstraint(f"outcome IN ({OUTCOMES})", name=op.f("ck_calls_outcome")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_calls")),
    )
    with op.batch_alter_table("calls") as batch_op:
        batch_op.create_index(batch_op.f("ix_calls_caller"), ["caller"])
        batch_op.create_index(batch_op.f("ix_calls_flow_started"), ["flow", "started"])
        batch_op.create_index(batch_op.f("ix_calls_started"), ["started"])

    op.create_table(
        "call_steps",
        sa.Column("call_id", sa.String(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("at", UTC, nullable=False),
        sa.Column("step", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("result", sa.String(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("next", sa.String(), nullable=True),
        sa.Column("duration", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["call_id"],
            ["calls.id"],
            name=op.f("fk_call_steps_call_id_calls"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("call_id", "seq", name=op.f("pk_call_steps")),
    )

    op.create_table(
        "callbacks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("call_id", sa.String(), nullable=False),
        sa.Column("flow", sa.String(), nullable=False),
        sa.Column("queue", sa.String(), nullable=False),
        sa.Column("priority", sa.String(), nullable=False),
        sa.Column("tier", sa.Integer(), nullable=True),
        sa.Column("caller", sa.String(), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("created", UTC, nullable=False),
        sa.Column("completed", UTC, nullable=True),
        sa.Column("completed_by", sa.String(), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'done', 'cancelled')", name=op.f("ck_callbacks_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_callbacks")),
        sa.UniqueConstraint("call_id", "created", name=op.f("uq_callbacks_call_id_created")),
    )
    with op.batch_alter_table("callbacks") as batch_op:
        batch_op.create_index(batch_op.f("ix_callbacks_caller"), ["caller"])
        batch_op.create_index(batch_op.f("ix_callbacks_created"), ["created"])
        batch_op.create_index(batch_op.f("ix_callbacks_status_created"), ["status", "created"])

    op.create_table(
        "trunk_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("trunk", sa.String(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("rtt_ms", sa.Float(), nullable=True),
        sa.Column("at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trunk_events")),
        sa.UniqueConstraint("trunk", "at", name=op.f("uq_trunk_events_trunk_at")),
    )
    with op.batch_alter_table("trunk_events") as batch_op:
        batch_op.create_index(batch_op.f("ix_trunk_events_at"), ["at"])

    op.create_table(
        "admin_actions",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("at", UTC, nullable=False),
        sa.Column("who", sa.String(), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admin_actions")),
    )
    with op.batch_alter_table("admin_actions") as batch_op:
        batch_op.create_index(batch_op.f("ix_admin_actions_at"), ["at"])


def downgrade() -> None:
    op.drop_table("admin_actions")
    op.drop_table("trunk_events")
    op.drop_table("callbacks")
    op.drop_table("call_steps")
    op.drop_table("calls")
