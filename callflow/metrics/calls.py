"""Call metrics: the engine's ``Observer``, counting what the calls do.

Calls by outcome, active calls, time to answer, call duration, missed calls, escalations
by tier and their acceptance time, trunk attempts and failovers, step latency, callback
requests and completions.  Every value is read from the fields of the engine's typed
events; none from their prose.

Definitions (they match ``callflow report``):

* missed call: a call that ended ``abandoned`` or ``failed``; also, counted once its CDR
  is read, a call a flow sent to voicemail that left no message (the call log then says
  ``abandoned`` or ``failed``; ``callflow_calls`` counted it ``voicemail`` at the
  hand-over, and a counter never goes back);
* time to answer: from ``CallInfo.started`` to the call's first ``CallAnswered`` (menus
  and ring time included);
* failover: an attempt on a trunk that ended with a trunk fault (CHANUNAVAIL, CONGESTION,
  FAILED), followed within the same ring by an attempt on another trunk;
* escalation acceptance time: from the start of the ``escalate`` step to the moment the
  person (or the emergency line) answered and, for a confirmed leg, accepted;
* surveys: a ``survey`` step that asked the caller ends ``rated`` (counted with its score)
  or ``no rating`` (declined: hung up, no key, keys outside the scale); one not asked
  (after an emergency tier) or that failed is not counted.

Labels are bounded: flow, step, step kind, outcome, driver, tier, trunk, dial result, survey
score (1-9) and answer -- names from the flow files or fixed vocabularies, never a caller
number or a call id.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..flow.events import (
    MISSED,
    REACHED_RESULTS,
    CallAnswered,
    CallInfo,
    Outcome,
    OutcomeKind,
    StepKind,
    StepRecord,
    StepResult,
)

log = logging.getLogger("callflow.metrics")

# Calls followed at once; a call whose end never comes (a bug) is forgotten past this.
_MAX_TRACKED = 10_000

ANSWER_BUCKETS = (1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0)
DURATION_BUCKETS = (5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
STEP_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
ACCEPT_BUCKETS = (5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0)
CALLBACK_BUCKETS = (300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0, 172800.0)


_M = TypeVar("_M", Counter, Gauge, Histogram)


class _Children(Generic[_M]):
    """A labelled metric's children, kept by their label values: ``labels()`` takes the
    metric's lock and checks and converts every value at each observation (a few per call,
    on the event loop); a dict lookup does not.  The labels are bounded (see above), and no
    child is ever removed, so the children kept are the metric's own."""

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: _M) -> None:
        self._metric: _M = metric
        self._children: dict[tuple[str, ...], _M] = {}

    def __call__(self, *values: str) -> _M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


def tier_label(tier: int | None) -> str:
    return "none" if tier is None else str(tier)


@dataclass
class _CallState:
    flow: str
    started: datetime
    last_attempt: StepRecord | None = None  # the previous attempt of the ring under way
    answers: dict[str, datetime] = field(default_factory=dict)  # step → first answer


class CallMetrics:
    """The engine's ``Observer``: call counters and histograms on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.calls = Counter(
            "callflow_calls",
            "Calls ended, by flow, outcome and driver (ari, agi).",
            ["flow", "outcome", "driver"],
            registry=r,
        )
        self.missed = Counter(
            "callflow_calls_missed",
            "Calls that reached nobody (outcome abandoned or failed, and calls sent to "
            "voicemail that left no message, counted once their CDR is read).",
            ["flow"],
            registry=r,
        )
        self.active = Gauge(
            "callflow_calls_active", "Calls in progress in the engine.", ["flow"], registry=r
        )
        self.answer_time = Histogram(
            "callflow_call_answer_seconds",
            "From the start of the call to the answer of the person who took it.",
            ["flow"],
            buckets=ANSWER_BUCKETS,
            registry=r,
        )
        self.duration = Histogram(
            "callflow_call_duration_seconds",
            "From the start of the call to its end, by outcome.",
            ["flow", "outcome"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.steps = Counter(
            "callflow_steps",
            "Flow steps taken (trunk and person attempts excluded).",
            ["flow", "step", "kind"],
            registry=r,
        )
        self.step_latency = Histogram(
            "callflow_step_duration_seconds",
            "Time spent in one step of a flow, by step kind.",
            ["kind"],
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.escalations = Counter(
            "callflow_escalations",
            "Escalate steps by tier and result (accepted, failed, abandoned).",
            ["tier", "result"],
            registry=r,
        )
        self.accept_time = Histogram(
            "callflow_escalation_accept_seconds",
            "From the start of an escalate step to its acceptance, by tier.",
            ["tier"],
            buckets=ACCEPT_BUCKETS,
            registry=r,
        )
        self.attempts = Counter(
            "callflow_trunk_attempts",
            "Outside calls tried on a trunk, by dial result.",
            ["trunk", "result"],
            registry=r,
        )
        self.failovers = Counter(
            "callflow_trunk_failovers",
            "Trunk faults followed by an attempt on another trunk, by the trunk that failed.",
            ["trunk"],
            registry=r,
        )
        self.callbacks_requested = Counter(
            "callflow_callbacks_requested",
            "Callback requests queued by the flows.",
            ["flow", "tier"],
            registry=r,
        )
        self.callbacks_completed = Counter(
            "callflow_callbacks_completed",
            "Callback requests marked done through the admin API.",
            ["flow", "tier"],
            registry=r,
        )
        self.callback_delay = Histogram(
            "callflow_callback_completion_delay_seconds",
            "From a callback request to its completion, by tier.",
            ["tier"],
            buckets=CALLBACK_BUCKETS,
            registry=r,
        )
        self.survey_ratings = Counter(
            "callflow_survey_ratings",
            "Survey ratings given by callers, by flow and score (1 .. the survey's scale).",
            ["flow", "score"],
            registry=r,
        )
        self.no_message = Counter(
            "callflow_voicemail_no_message",
            "Calls sent to voicemail that left no message, by flow, as their CDRs were read "
            "(counted voicemail when handed over; missed calls too).",
            ["flow"],
            registry=r,
        )
        self.surveys = Counter(
            "callflow_surveys",
            "Surveys asked after a conversation, by flow and answer (answered, declined).",
            ["flow", "answer"],
            registry=r,
        )
        self._calls: OrderedDict[str, _CallState] = OrderedDict()
        # The children observed per call, looked up without ``labels()`` (see _Children).
        self._ended = _Children(self.calls)
        self._missed = _Children(self.missed)
        self._active = _Children(self.active)
        self._answer_time = _Children(self.answer_time)
        self._duration = _Children(self.duration)
        self._steps = _Children(self.steps)
        self._step_latency = _Children(self.step_latency)

    # -- the engine's Observer: never raises ---------------------------------------------

    def call_started(self, info: CallInfo) -> None:
        try:
            self._active(info.flow).inc()
            self._calls[info.call_id] = _CallState(info.flow, info.started)
            while len(self._calls) > _MAX_TRACKED:
                self._calls.popitem(last=False)
        except Exception:  # pragma: no cover - metrics must never touch a call
            log.exception("metrics: call_started")

    def step(self, record: StepRecord) -> None:
        try:
            self._step(record)
        except Exception:  # pragma: no cover
            log.exception("metrics: step")

    def call_answered(self, event: CallAnswered) -> None:
        try:
            state = self._calls.get(event.call_id)
            if state is None:
                return
            if not state.answers:  # time to answer: the first person to take the call
                self._answer_time(event.flow).observe(_seconds(state.started, event.at))
            state.answers.setdefault(event.step, event.at)
        except Exception:  # pragma: no cover
            log.exception("metrics: call_answered")

    def call_ended(self, info: CallInfo, outcome: Outcome, at: datetime) -> None:
        try:
            self._end(info, outcome, at)
        except Exception:  # pragma: no cover
            log.exception("metrics: call_ended")

    def _step(self, r: StepRecord) -> None:
        state = self._calls.get(r.call_id)
        if r.kind is StepKind.ATTEMPT:
            self._attempt(r, state)
            return
        if state is not None:
            state.last_attempt = None  # a new ring starts after any other step
        if r.kind is not StepKind.FALLBACK:  # bookkeeping records, always 0 s
            self._step_latency(r.kind).observe(max(r.duration, 0.0))
        self._steps(r.flow, r.step, r.kind).inc()
        if r.kind is StepKind.ESCALATE:
            self._escalation(r, state)
        elif r.kind is StepKind.SURVEY:
            self._survey(r)

    def _survey(self, r: StepRecord) -> None:
        if r.result is StepResult.RATED and r.score is not None:
            self.survey_ratings.labels(r.flow, str(r.score)).inc()
            self.surveys.labels(r.flow, "answered").inc()
        elif r.result is StepResult.NO_RATING:
            self.surveys.labels(r.flow, "declined").inc()

    def _escalation(self, r: StepRecord, state: _CallState | None) -> None:
        label = tier_label(r.tier)
        if r.result in REACHED_RESULTS:
            self.escalations.labels(label, "accepted").inc()
            answered = state.answers.get(r.step) if state is not None else None
            if answered is not None:
                started = r.at - timedelta(seconds=max(r.duration, 0.0))
                self.accept_time.labels(label).observe(_seconds(started, answered))
        elif r.result is StepResult.ABANDONED:
            self.escalations.labels(label, "abandoned").inc()
        else:
            self.escalations.labels(label, "failed").inc()

    def _attempt(self, r: StepRecord, state: _CallState | None) -> None:
        if r.trunk is None or r.dial_status is None:
            return  # an internal endpoint: no trunk involved
        self.attempts.labels(r.trunk, r.dial_status.lower()).inc()
        if state is None:
            return
        last = state.last_attempt
        if (
            last is not None
            and last.trunk is not None
            and last.destination == r.destination
            and last.trunk != r.trunk
            and last.dial_status is not None
            and last.dial_status.trunk_fault
        ):
            self.failovers.labels(last.trunk).inc()
        state.last_attempt = r

    def _end(self, info: CallInfo, outcome: Outcome, at: datetime) -> None:
        self._calls.pop(info.call_id, None)
        self._active(info.flow).dec()
        kind = str(outcome.kind)
        self._ended(info.flow, kind, info.driver.value).inc()
        if outcome.kind in MISSED:
            self._missed(info.flow).inc()
        else:
            self._missed(info.flow)  # the series exists (at 0) for rate()
        self._duration(info.flow, kind).observe(_seconds(info.started, at))
        if outcome.kind is OutcomeKind.CALLBACK:
            self.callbacks_requested.labels(info.flow, tier_label(outcome.tier)).inc()

    # -- after the call (its CDR) --------------------------------------------------------

    def voicemail_without_message(self, flow: str) -> None:
        """A call of ``flow`` handed to voicemail left no message: a missed call after all."""
        self.no_message.labels(flow).inc()
        self._missed(flow).inc()

    # -- callbacks (the admin API) -------------------------------------------------------

    def callback_completed(self, flow: str, tier: int | None, delay_seconds: float) -> None:
        """A callback request was marked done ``delay_seconds`` after it was made."""
        label = tier_label(tier)
        self.callbacks_completed.labels(flow, label).inc()
        self.callback_delay.labels(label).observe(max(delay_seconds, 0.0))


def _seconds(start: datetime, end: datetime) -> float:
    return max((end - start).total_seconds(), 0.0)


__all__ = ["ACCEPT_BUCKETS", "ANSWER_BUCKETS", "CallMetrics", "tier_label"]
