"""outcomes for calls the flow did not carry to their end: shed, fallback, recovered, lost

Revision ID: 0003_outcomes
Revises: 0002_step_fields
Create Date: 2026-12-02

``shed``: the daemon, overloaded, sent the call straight to the dialplan fallback.
``fallback``: the dialplan fallback alone handled it (the daemon never saw the call).
``recovered`` / ``lost``: a call a crash left open, closed when the daemon came back.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003_outcomes"
down_revision: str | Sequence[str] | None = "0002_step_fields"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BEFORE = (
    "'answered', 'forwarded', 'emergency', 'callback', 'voicemail', 'hangup', 'abandoned', 'failed'"
)
AFTER = BEFORE + ", 'shed', 'fallback', 'recovered', 'lost'"


def _check(outcomes: str) -> None:
    with op.batch_alter_table("calls") as batch_op:
        batch_op.drop_constraint(op.f("ck_calls_outcome"), type_="check")
        batch_op.create_check_constraint(op.f("ck_calls_outcome"), f"outcome IN ({outcomes})")


def upgrade() -> None:
    _check(AFTER)


def downgrade() -> None:
    # Calls with a new outcome cannot be kept under the old constraint: they read as failed.
    op.execute(
        "UPDATE calls SET outcome = 'failed' "
        "WHERE outcome IN ('shed', 'fallback', 'recovered', 'lost')"
    )
    _check(BEFORE)
