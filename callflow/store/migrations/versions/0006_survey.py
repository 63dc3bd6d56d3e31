"""the survey step's rating: call_steps.score and call_steps.scale

Revision ID: 0006_survey
Revises: 0005_driver
Create Date: 2026-12-03

A ``survey`` step records the caller's rating of the conversation (``score``, 1 ..
``scale``, the survey's highest rating) as columns of its step, beside its result
(``rated``, ``no rating``), so the report counts and averages ratings without reading
any prose.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_survey"
down_revision: str | Sequence[str] | None = "0005_driver"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("call_steps") as batch_op:
        batch_op.add_column(sa.Column("score", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("scale", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("call_steps") as batch_op:
        batch_op.drop_column("scale")
        batch_op.drop_column("score")
