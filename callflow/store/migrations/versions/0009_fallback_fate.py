"""what the dialplan fallback did with a call, and where it left it

Revision ID: 0009_fallback_fate
Revises: 0008_drills
Create Date: 2026-12-04

A call the daemon shed, or handed to the dialplan fallback, was logged as the daemon let it
go: whether the secretariat then answered was nowhere.  ``calls.fallback`` keeps the
fallback's trace from Asterisk's CDR (``secretariat=NOANSWER outside dial=ANSWER``) and
``calls.fallback_fate`` where it left the call (secretariat, outside, voicemail, nobody,
abandoned, cut).  Both stay NULL for older rows, and for calls that never went there.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_fallback_fate"
down_revision: str | Sequence[str] | None = "0008_drills"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FATES = "'secretariat', 'outside', 'voicemail', 'nobody', 'abandoned', 'cut'"


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch_op:
        batch_op.add_column(sa.Column("fallback", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("fallback_fate", sa.String(), nullable=True))
        batch_op.create_check_constraint(
            op.f("ck_calls_fallback_fate"), f"fallback_fate IN ({FATES})"
        )


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch_op:
        batch_op.drop_constraint(op.f("ck_calls_fallback_fate"), type_="check")
        batch_op.drop_column("fallback_fate")
        batch_op.drop_column("fallback")
