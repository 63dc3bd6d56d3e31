"""What the engine needs from the rest of the daemon, as small protocols.

The composition root (app.py, or the simulator) hands the engine real or simulated parts;
the engine imports no transport, database or clock of its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from ..schedule import OverrideStore
from ..telephony import DialStatus, VoicemailProblem, no_problem
from .events import NullObserver, Observer


@dataclass(frozen=True)
class CallbackRequest:
    call_id: str
    flow: str
    caller: str
    queue: str
    priority: str
    tier: int | None
    at: datetime


class CallbackSink(Protocol):
    def submit(self, request: CallbackRequest) -> None:
        """Queue a callback request; must not block (storage is asynchronous)."""
        ...


class MemoryCallbacks:
    def __init__(self) -> None:
        self.requests: list[CallbackRequest] = []

    def submit(self, request: CallbackRequest) -> None:
        self.requests.append(request)


class TrunkSelector(Protocol):
    """Decides which trunks of a route to try, in what order, and learns from results."""

    def candidates(self, trunks: Sequence[str], *, emergency: bool) -> list[str]: ...

    def report(self, trunk: str, status: DialStatus) -> None: ...


class InOrder:
    """Every trunk in the route's order, no health knowledge (the simulator's default)."""

    def candidates(self, trunks: Sequence[str], *, emergency: bool) -> list[str]:
        return list(trunks)

    def report(self, trunk: str, status: DialStatus) -> None:
        pass


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Services:
    clock: Callable[[], datetime] = utc_now
    overrides: OverrideStore = field(default_factory=OverrideStore)
    trunks: TrunkSelector = field(default_factory=InOrder)
    callbacks: CallbackSink = field(default_factory=MemoryCallbacks)
    observer: Observer = field(default_factory=NullObserver)
    max_steps: int = 200  # a guard against flows that loop through the caller's keys
    # Seconds a trunk has to show signs of life (ringing, progress) before the next is tried.
    trunk_setup_timeout: float = 5.0
    # Why the PBX's voicemail cannot take a caller now (its module list): a voicemail step
    # then keeps the caller (its failed branch) rather than have the dialplan hang up.
    voicemail_problem: VoicemailProblem = no_problem


_CALLABLE = re.compile(r"^\+?[0-9]{3,20}$")


def callable_number(caller: str) -> str | None:
    """The caller's number normalised for a callback, or None if it cannot be called."""
    cleaned = re.sub(r"[\s.()-]", "", caller or "")
    return cleaned if _CALLABLE.match(cleaned) else None
