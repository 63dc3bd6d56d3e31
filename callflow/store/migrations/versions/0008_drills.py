"""forwarding drills: one row per leg (a destination over one trunk) of each drill

Revision ID: 0008_drills
Revises: 0007_cluster
Create Date: 2026-12-03

A drill places a real test call to each forwarding destination over each trunk of its
route (or, for an emergency route, only checks the trunk's health).  The rows hold no
patient data: flow, destination and trunk names, the verdict and its reason.  Each row
carries its node ([node] name): every node drills over its own trunks (trunk-a of one node
is not trunk-a of another), so each node reads back its own results.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_drills"
down_revision: str | Sequence[str] | None = "0007_cluster"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "drills",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("node", sa.String(), nullable=False),
        sa.Column("flow", sa.String(), nullable=False),
        sa.Column("destination", sa.String(), nullable=False),
        sa.Column("trunk", sa.String(), nullable=False),
        sa.Column("mode", sa.String(), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("at", UTC, nullable=False),
        sa.Column("answer_delay", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_drills")),
        sa.CheckConstraint("mode IN ('call', 'health')", name=op.f("ck_drills_mode")),
    )
    op.create_index(
        op.f("ix_drills_node_flow_destination_trunk_at"),
        "drills",
        ["node", "flow", "destination", "trunk", "at"],
    )
    op.create_index(op.f("ix_drills_at"), "drills", ["at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_drills_at"), table_name="drills")
    op.drop_index(op.f("ix_drills_node_flow_destination_trunk_at"), table_name="drills")
    op.drop_table("drills")
