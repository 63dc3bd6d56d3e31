"""What the engine reports: call starts, each step, call outcomes (for logs, DB, metrics)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol


class OutcomeKind(StrEnum):
    ANSWERED = "answered"  # a person of the practice (or an on-call doctor) took the call
    FORWARDED = "forwarded"  # sent to an outside number (e.g. the telephone secretariat)
    EMERGENCY = "emergency"  # connected to the emergency destination (tier 1)
    CALLBACK = "callback"  # a callback request was queued
    VOICEMAIL = "voicemail"
    HANGUP = "hangup"  # the flow ended the call on purpose (e.g. after a message)
    ABANDONED = "abandoned"  # the caller hung up before reaching anyone
    FAILED = "failed"  # nothing reached anyone


@dataclass(frozen=True)
class CallInfo:
    call_id: str
    flow: str
    version: str
    caller: str
    dialed: str
    started: datetime


@dataclass(frozen=True)
class StepRecord:
    call_id: str
    flow: str
    seq: int  # 1, 2, 3 ... in the order taken
    step: str
    kind: str  # the step kind, or "attempt" for one trunk/person attempt inside a step
    result: str
    detail: str
    next: str | None
    at: datetime
    duration: float  # seconds spent in the step


@dataclass(frozen=True)
class Outcome:
    kind: OutcomeKind
    step: str | None  # the step where the call ended
    destination: str | None = None
    trunk: str | None = None
    tier: int | None = None
    detail: str = ""
    answered: datetime | None = None  # when the person who took the call answered


class Observer(Protocol):
    """Receives engine events.  Must not block: the engine awaits nothing from it."""

    def call_started(self, info: CallInfo) -> None: ...

    def step(self, record: StepRecord) -> None: ...

    def call_ended(self, info: CallInfo, outcome: Outcome, at: datetime) -> None: ...


class NullObserver:
    def call_started(self, info: CallInfo) -> None:
        pass

    def step(self, record: StepRecord) -> None:
        pass

    def call_ended(self, info: CallInfo, outcome: Outcome, at: datetime) -> None:
        pass


class FanOut:
    """Sends each event to several observers; one failing observer never touches the call."""

    def __init__(self, *observers: Observer) -> None:
        self.observers = list(observers)

    def call_started(self, info: CallInfo) -> None:
        for o in self.observers:
            _safe(o.call_started, info)

    def step(self, record: StepRecord) -> None:
        for o in self.observers:
            _safe(o.step, record)

    def call_ended(self, info: CallInfo, outcome: Outcome, at: datetime) -> None:
        for o in self.observers:
            _safe(o.call_ended, info, outcome, at)


def _safe(fn: Callable[..., None], *args: object) -> None:
    try:
        fn(*args)
    except Exception:
        logging.getLogger("callflow.engine").exception("observer failed; the call goes on")
