"""the driver that carried each call: ari (a Stasis application) or agi (FastAGI)

Revision ID: 0005_driver
Revises: 0004_cdr_import
Create Date: 2026-12-03

Both drivers run the same flows and write the same records; ``calls.driver`` tells them
apart.  Calls logged before this revision came over ARI, the only driver there was.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_driver"
down_revision: str | Sequence[str] | None = "0004_cdr_import"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch_op:
        batch_op.add_column(sa.Column("driver", sa.String(), nullable=False, server_default="ari"))


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch_op:
        batch_op.drop_column("driver")
