"""the CDRs of Asterisk the call log took: each one once, keyed by its uniqueid

Revision ID: 0004_cdr_import
Revises: 0003_outcomes
Create Date: 2026-12-03

``cdr_imports`` holds one row per call Asterisk recorded (its CDRs merged, keyed by the
caller channel's ``uniqueid``) that the call log took: ``imported`` (a call the daemon
never saw, logged with outcome ``fallback``) or ``closed`` (a call a crash had left open).
Reading a CDR file again, or a second daemon on the same database, imports nothing twice.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_cdr_import"
down_revision: str | Sequence[str] | None = "0003_outcomes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "cdr_imports",
        sa.Column("uniqueid", sa.String(), nullable=False),
        sa.Column("linkedid", sa.String(), nullable=False),
        sa.Column("call_id", sa.String(), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("uniqueid", name=op.f("pk_cdr_imports")),
        sa.CheckConstraint("action IN ('imported', 'closed')", name=op.f("ck_cdr_imports_action")),
    )
    op.create_index(op.f("ix_cdr_imports_at"), "cdr_imports", ["at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_cdr_imports_at"), table_name="cdr_imports")
    op.drop_table("cdr_imports")
