"""typed fields of a step: key, attempt, destination, trunk, tier, dial status, outcome

Revision ID: 0002_step_fields
Revises: 0001_initial
Create Date: 2026-12-02

Until now these facts lived in the prose of ``call_steps.detail`` (and menu keys in
``result``, e.g. "pressed 1"); from this revision on they are columns, and ``detail`` is
for people only.  Rows written before keep their prose and have these columns empty.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_step_fields"
down_revision: str | Sequence[str] | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (
    ("key", sa.String()),
    ("attempt", sa.Integer()),
    ("destination", sa.String()),
    ("trunk", sa.String()),
    ("tier", sa.Integer()),
    ("dial_status", sa.String()),
    ("outcome", sa.String()),
)


def upgrade() -> None:
    with op.batch_alter_table("call_steps") as batch_op:
        for name, type_ in COLUMNS:
            batch_op.add_column(sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("call_steps") as batch_op:
        for name, _ in reversed(COLUMNS):
            batch_op.drop_column(name)
