"""What the engine reports, as typed values: the one contract between the engine and the
call log, the metrics, the simulator and the tests.

Every fact a consumer needs is a field (step kind, result, destination, trunk, tier, dial
status, attempt, outcome).  ``detail`` is prose for people reading a transcript and nothing
else: no module parses it, and the engine never writes a caller's number into it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from ..errors import LinkFault
from ..telephony import DialStatus, Driver


class OutcomeKind(StrEnum):
    ANSWERED = "answered"  # a person of the practice (or an on-call doctor) took the call
    FORWARDED = "forwarded"  # sent to an outside number (e.g. the telephone secretariat)
    EMERGENCY = "emergency"  # connected to the emergency destination (tier 1)
    CALLBACK = "callback"  # a callback request was queued
    VOICEMAIL = "voicemail"
    HANGUP = "hangup"  # the flow ended the call on purpose (e.g. after a message)
    ABANDONED = "abandoned"  # the caller hung up before reaching anyone
    FAILED = "failed"  # nothing reached anyone (a technical failure: the detail says why)
    # Calls the flow did not carry to their end; each went to the dialplan fallback or died.
    SHED = "shed"  # the daemon was overloaded: sent straight to the dialplan fallback
    FALLBACK = "fallback"  # handled by the dialplan fallback alone (the daemon never saw it)
    RECOVERED = "recovered"  # left open by a crash of the daemon, sent to the fallback after
    LOST = "lost"  # left open by a crash, gone when the daemon came back


#: Outcomes where nobody was reached: the missed calls of the metrics and the report.
MISSED = frozenset({OutcomeKind.ABANDONED, OutcomeKind.FAILED, OutcomeKind.LOST})


class StepKind(StrEnum):
    """The flow language's step kinds, plus two the engine records inside a step."""

    PLAY = "play"
    MENU = "menu"
    SCHEDULE = "schedule"
    DIAL = "dial"
    FORWARD = "forward"
    ESCALATE = "escalate"
    CALLBACK = "callback"
    VOICEMAIL = "voicemail"
    SET = "set"
    GOTO = "goto"
    HANGUP = "hangup"
    SURVEY = "survey"
    ATTEMPT = "attempt"  # one trunk or person rung inside a step
    FALLBACK = "fallback"  # the flow could not carry on: its fallback destination rung


class StepResult(StrEnum):
    """How a step (or an attempt) ended.  Values are what the call log stores."""

    # A destination rung: the dial statuses (attempts, fallbacks, and steps not reached).
    ANSWER = "answer"
    BUSY = "busy"
    NOANSWER = "noanswer"
    DECLINED = "declined"
    CHANUNAVAIL = "chanunavail"
    CONGESTION = "congestion"
    FAILED = "failed"  # also: a menu out of attempts, a voicemail that took no message
    # Steps.
    ANSWERED = "answered"  # dial, forward, tier 1: the destination took the call
    ACCEPTED = "accepted"  # escalate: an on-call person pressed the confirm key
    NOBODY_ACCEPTED = "nobody accepted"
    PLAYED = "played"
    INTERRUPTED = "interrupted"  # a key stopped the sounds (``key``)
    PRESSED = "pressed"  # a menu option was chosen (``key``)
    OPEN = "open"
    CLOSED = "closed"
    HOLIDAY = "holiday"
    QUEUED = "queued"
    NO_CALLER_NUMBER = "no caller number"
    LEFT = "left"  # voicemail: handed over (whether a message was left, the CDR says)
    SET = "set"
    GOTO = "goto"
    DONE = "done"
    # Survey: the caller rated the conversation (``score``), or gave no rating (hung up,
    # pressed nothing, or only keys outside the scale): an answer of the caller, not an error.
    RATED = "rated"
    NO_RATING = "no rating"
    NOT_ASKED = "not asked"  # no conversation to rate, or after an emergency tier
    NONE = "none"  # fallback: the flow has no fallback destination
    # The step did not finish.
    ERROR = "error"  # the PBX failed to carry it out, or a bug
    ABANDONED = "abandoned"  # the caller hung up
    LOST = "lost"  # the PBX lost the call
    # The link to the PBX failed mid-step (the call went to the dialplan fallback).
    PBX_TIMEOUT = "pbx timeout"  # no answer from the PBX in time
    PBX_DISCONNECTED = "pbx disconnected"  # the connection dropped or was refused
    PBX_ERROR = "pbx error"  # the PBX answered with a server error (5xx)

    @classmethod
    def of_dial(cls, status: DialStatus) -> StepResult:
        return cls(status.value.lower())

    @classmethod
    def of_fault(cls, fault: LinkFault) -> StepResult:
        return _OF_FAULT[fault]


_OF_FAULT = {
    LinkFault.TIMEOUT: StepResult.PBX_TIMEOUT,
    LinkFault.DISCONNECTED: StepResult.PBX_DISCONNECTED,
    LinkFault.SERVER_ERROR: StepResult.PBX_ERROR,
}


#: Step results that mean the step put the call through to someone.
REACHED_RESULTS = frozenset({StepResult.ANSWERED, StepResult.ACCEPTED})


@dataclass(frozen=True)
class CallInfo:
    call_id: str
    flow: str
    version: str
    caller: str
    dialed: str
    started: datetime
    driver: Driver = Driver.ARI  # ARI or FastAGI: the same records, marked with it


@dataclass(frozen=True)
class StepRecord:
    call_id: str
    flow: str
    seq: int  # 1, 2, 3 ... in the order taken
    step: str
    kind: StepKind
    result: StepResult
    next: str | None
    at: datetime  # when the step ended
    duration: float  # seconds spent in the step
    detail: str = ""  # for people only: never parsed, never a caller's number
    key: str | None = None  # the menu key chosen, or the key that interrupted a play
    attempt: int | None = None  # menu: the attempt that ended it; a ring: its number in the step
    destination: str | None = None  # the destination rung (a name from the flow)
    trunk: str | None = None  # the trunk it left by, for an outside number
    tier: int | None = None  # the escalation tier the call is in
    dial_status: DialStatus | None = None  # what ringing the destination gave
    outcome: OutcomeKind | None = None  # set when this step decided how the call ends
    score: int | None = None  # survey: the rating the caller gave (1 .. scale)
    scale: int | None = None  # survey: its highest rating (a score reads against it)


@dataclass(frozen=True)
class CallAnswered:
    """Someone took the call: a person, the secretariat, the emergency line."""

    call_id: str
    flow: str
    at: datetime
    step: str
    destination: str
    trunk: str | None
    tier: int | None


@dataclass(frozen=True)
class Outcome:
    kind: OutcomeKind
    step: str | None  # the step where the call ended
    destination: str | None = None
    trunk: str | None = None
    tier: int | None = None
    detail: str = ""  # for people only


class Observer(Protocol):
    """Receives engine events.  Must not block: the engine awaits nothing from it."""

    def call_started(self, info: CallInfo) -> None: ...

    def step(self, record: StepRecord) -> None: ...

    def call_answered(self, event: CallAnswered) -> None: ...

    def call_ended(self, info: CallInfo, outcome: Outcome, at: datetime) -> None: ...


class NullObserver:
    def call_started(self, info: CallInfo) -> None:
        pass

    def step(self, record: StepRecord) -> None:
        pass

    def call_answered(self, event: CallAnswered) -> None:
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

    def call_answered(self, event: CallAnswered) -> None:
        for o in self.observers:
            _safe(o.call_answered, event)

    def call_ended(self, info: CallInfo, outcome: Outcome, at: datetime) -> None:
        for o in self.observers:
            _safe(o.call_ended, info, outcome, at)


def _safe(fn: Callable[..., None], *args: object) -> None:
    try:
        fn(*args)
    except Exception:
        logging.getLogger("callflow.engine").exception("observer failed; the call goes on")
