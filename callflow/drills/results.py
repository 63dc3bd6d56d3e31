"""What a drill found, as typed values (stored, exported, shown as they are)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from ..telephony import DialStatus


class DrillMode(StrEnum):
    CALL = "call"  # a real test call, hung up at once on answer
    HEALTH = "health"  # an emergency route: only the trunk's health is checked


@dataclass(frozen=True)
class TestCall:
    """How one test call went: answered (with the delay), or why not."""

    __test__ = False  # not a pytest class, whatever its name

    status: DialStatus
    answer_delay: float | None = None  # seconds from the originate to the answer
    detail: str = ""  # e.g. the PBX's refusal


@dataclass(frozen=True)
class DrillResult:
    """One leg of a drill: a destination over one trunk, at one time."""

    flow: str
    destination: str
    trunk: str
    mode: DrillMode
    passed: bool
    reason: str
    at: datetime  # aware, when the leg ended
    answer_delay: float | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "flow": self.flow,
            "destination": self.destination,
            "trunk": self.trunk,
            "mode": str(self.mode),
            "passed": self.passed,
            "reason": self.reason,
            "at": self.at.isoformat(),
            "answer_delay": self.answer_delay,
        }

    def line(self) -> str:
        """One line for people: ``PASS telesecretariat via trunk-a: answered in 2.1 s``."""
        verdict = "PASS" if self.passed else "FAIL"
        return f"{verdict} {self.flow}/{self.destination} via {self.trunk}: {self.reason}"
