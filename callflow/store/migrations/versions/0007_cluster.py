"""several nodes on one database: calls and trunk changes tagged with their node; calendar
overrides shared by every node

Revision ID: 0007_cluster
Revises: 0006_survey
Create Date: 2026-12-03

``calls.node`` stays NULL for calls logged before this revision (one node then: the
after-crash pass of any node may close them).  A trunk change was keyed by ``(trunk, at)``;
two nodes may see the same trunk change at the same instant, so the node joins the key.
``calendar_overrides`` replaces each node's ``overrides.json`` (the daemon moves an existing
file into it once, at its start).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_cluster"
down_revision: str | Sequence[str] | None = "0006_survey"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch_op:
        batch_op.add_column(sa.Column("node", sa.String(), nullable=True))
        batch_op.create_index(batch_op.f("ix_calls_node_outcome"), ["node", "outcome"])
    with op.batch_alter_table("trunk_events") as batch_op:
        batch_op.add_column(sa.Column("node", sa.String(), nullable=False, server_default=""))
        batch_op.drop_constraint("uq_trunk_events_trunk_at", type_="unique")
        batch_op.create_unique_constraint(
            batch_op.f("uq_trunk_events_trunk_at_node"), ["trunk", "at", "node"]
        )
    op.create_table(
        "calendar_overrides",
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("flow", sa.String(), nullable=False),
        sa.Column("open", sa.Boolean(), nullable=False),
        sa.Column("until", UTC, nullable=False),
        sa.Column("label", sa.String(), nullable=True),
        sa.Column("set_by", sa.String(), nullable=True),
        sa.Column("set_at", UTC, nullable=False),
        sa.Column("node", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_calendar_overrides")),
    )
    with op.batch_alter_table("calendar_overrides") as batch_op:
        batch_op.create_index(batch_op.f("ix_calendar_overrides_flow"), ["flow"])


def downgrade() -> None:
    op.drop_table("calendar_overrides")
    with op.batch_alter_table("trunk_events") as batch_op:
        batch_op.drop_constraint("uq_trunk_events_trunk_at_node", type_="unique")
        batch_op.create_unique_constraint("uq_trunk_events_trunk_at", ["trunk", "at"])
        batch_op.drop_column("node")
    with op.batch_alter_table("calls") as batch_op:
        batch_op.drop_index("ix_calls_node_outcome")
        batch_op.drop_column("node")
