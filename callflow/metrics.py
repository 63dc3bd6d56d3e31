"""Live metrics for Prometheus: what the calls do, and how the daemon's parts are doing.

``Metrics`` owns its own ``CollectorRegistry`` (nothing is registered in
prometheus-client's global one, and nothing at import time), and is two things at once:

* the engine's ``Observer`` (the composition root fans events out to it beside the
  recorder): calls by outcome, active calls, time to answer, call duration, missed calls,
  escalations by tier and their acceptance time, trunk attempts and failovers, step
  latency, callback requests;
* a collector of values read *at scrape time* from callables handed in as ``Probes``
  (ARI / AMI connected and their reconnect counters, the recorder's queue and spool, trunk
  states and round-trip times, calendars, flows loaded): nothing is copied, so a value is
  never stale and this module imports none of the parts it watches.

The callback backlog (pending, overdue, oldest) lives in the database: the admin API
refreshes it with ``set_callback_backlog`` just before a scrape (see ``callflow.api``).

Units are base units (seconds).  Labels are bounded: flow, step, step kind, outcome, tier,
trunk, dial result, calendar -- all names from the flow files or fixed vocabularies,
never a caller number or a call id.

Definitions (they match ``callflow report``):

* missed call: a call that ended ``abandoned`` or ``failed``;
* time to answer: from ``CallInfo.started`` to the call's first ``CallAnswered`` (menus
  and ring time included);
* failover: an attempt on a trunk that ended with a trunk fault (CHANUNAVAIL, CONGESTION,
  FAILED), followed within the same ring by an attempt on another trunk;
* escalation acceptance time: from the start of the ``escalate`` step to the moment the
  person (or the emergency line) answered and, for a confirmed leg, accepted.

Every value is read from the fields of the engine's typed events; none from their prose.

``callflow_trunk_up`` is 1 when qualify sees the trunk reachable and its circuit breaker is
closed, 0 when qualify says unreachable or the breaker is open, and absent while the state
is unknown (qualify off or not yet done), so that an alert on ``callflow_trunk_up == 0``
fires on evidence only; ``callflow_trunk_state{state}`` tells all three states.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib import metadata
from typing import Protocol, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from .flow.events import (
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

__all__ = [
    "CONTENT_TYPE",
    "CalendarReading",
    "CallbackBacklog",
    "Metrics",
    "Probes",
    "TrunkReading",
]

log = logging.getLogger("callflow.metrics")

#: The Content-Type of ``Metrics.render()``: Prometheus' text format 0.0.4, which every
#: Prometheus 2 and 3 reads (names are plain, nothing needs the 1.0.0 escaping).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
_T = TypeVar("_T")

# Calls followed at once; a call whose end never comes (a bug) is forgotten past this.
_MAX_TRACKED = 10_000

ANSWER_BUCKETS = (1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0)
DURATION_BUCKETS = (5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
STEP_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
ACCEPT_BUCKETS = (5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0)
CALLBACK_BUCKETS = (300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0, 172800.0)


def tier_label(tier: int | None) -> str:
    return "none" if tier is None else str(tier)


class TrunkReading(Protocol):
    """What ``HealthAwareSelector.snapshot()`` gives for one trunk."""

    @property
    def name(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def rtt_ms(self) -> float | None: ...
    @property
    def breaker_open(self) -> bool: ...


class CalendarReading(Protocol):
    """One calendar's state now (``callflow.api.calendars.CalendarView`` is one)."""

    @property
    def flow(self) -> str: ...
    @property
    def calendar(self) -> str: ...
    @property
    def open(self) -> bool: ...
    @property
    def overridden(self) -> bool: ...


@dataclass
class Probes:
    """Values read at scrape time.  Each is optional: a missing one leaves its metrics out.

    A probe that raises is logged and skipped; the rest of the scrape goes on.
    """

    ari_connected: Callable[[], bool] | None = None
    ari_reconnects: Callable[[], int] | None = None
    ari_recoveries: Callable[[], int] | None = None
    ami_connected: Callable[[], bool] | None = None
    ami_reconnects: Callable[[], int] | None = None
    recorder_queue_depth: Callable[[], int] | None = None
    recorder_spool_size: Callable[[], int] | None = None
    recorder_database_up: Callable[[], bool] | None = None
    recorder_dropped: Callable[[], int] | None = None
    recorder_rejected: Callable[[], int] | None = None
    recorder_written: Callable[[], int] | None = None
    trunks: Callable[[], Iterable[TrunkReading]] | None = None
    trunk_feed_live: Callable[[], bool] | None = None
    calendars: Callable[[], Iterable[CalendarReading]] | None = None
    flows_loaded: Callable[[], int] | None = None


@dataclass(frozen=True)
class CallbackBacklog:
    """Pending callback requests by tier label ("1", "2", "none" ...), from the database."""

    pending: Mapping[str, int] = field(default_factory=dict)
    overdue: Mapping[str, int] = field(default_factory=dict)
    oldest_pending_seconds: float = 0.0


@dataclass
class _CallState:
    flow: str
    started: datetime
    last_attempt: StepRecord | None = None  # the previous attempt of the ring under way
    answers: dict[str, datetime] = field(default_factory=dict)  # step → first answer


class Metrics:
    """The daemon's metrics, in ``self.registry``; the engine's ``Observer``."""

    def __init__(self, probes: Probes | None = None, *, process: bool = True) -> None:
        self.probes = probes or Probes()
        # No ``*_created`` series beside each counter and histogram: they double the series
        # count for no use here (a process-wide switch of prometheus-client; this daemon
        # has no other registry).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        r = self.registry
        self.calls = Counter(
            "callflow_calls", "Calls ended, by flow and outcome.", ["flow", "outcome"], registry=r
        )
        self.missed = Counter(
            "callflow_calls_missed",
            "Calls that reached nobody (outcome abandoned or failed).",
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
        Info("callflow_build", "The callflow version running.", registry=r).info(
            {"version": _version()}
        )
        self._backlog: CallbackBacklog | None = None
        self._calls: OrderedDict[str, _CallState] = OrderedDict()
        r.register(_ScrapeTime(self))
        if process:
            ProcessCollector(registry=r)

    # -- exposition ----------------------------------------------------------------------

    def render(self) -> bytes:
        """The metrics in Prometheus' text format (``CONTENT_TYPE``)."""
        return generate_latest(self.registry)

    # -- the engine's Observer: never raises ---------------------------------------------

    def call_started(self, info: CallInfo) -> None:
        try:
            self.active.labels(info.flow).inc()
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
                self.answer_time.labels(event.flow).observe(_seconds(state.started, event.at))
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
            self.step_latency.labels(r.kind).observe(max(r.duration, 0.0))
        self.steps.labels(r.flow, r.step, r.kind).inc()
        if r.kind is StepKind.ESCALATE:
            self._escalation(r, state)

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
        self.active.labels(info.flow).dec()
        kind = str(outcome.kind)
        self.calls.labels(info.flow, kind).inc()
        if outcome.kind in MISSED:
            self.missed.labels(info.flow).inc()
        else:
            self.missed.labels(info.flow)  # the series exists (at 0) for rate()
        self.duration.labels(info.flow, kind).observe(_seconds(info.started, at))
        if outcome.kind is OutcomeKind.CALLBACK:
            self.callbacks_requested.labels(info.flow, tier_label(outcome.tier)).inc()

    # -- callbacks (the admin API) -------------------------------------------------------

    def callback_completed(self, flow: str, tier: int | None, delay_seconds: float) -> None:
        """A callback request was marked done ``delay_seconds`` after it was made."""
        label = tier_label(tier)
        self.callbacks_completed.labels(flow, label).inc()
        self.callback_delay.labels(label).observe(max(delay_seconds, 0.0))

    def set_callback_backlog(self, backlog: CallbackBacklog) -> None:
        """The pending callback requests now (read from the database)."""
        self._backlog = backlog

    @property
    def callback_backlog(self) -> CallbackBacklog | None:
        return self._backlog


def _version() -> str:
    try:
        return metadata.version("callflow")
    except metadata.PackageNotFoundError:  # pragma: no cover - run from a source tree
        return "unknown"


def _seconds(start: datetime, end: datetime) -> float:
    return max((end - start).total_seconds(), 0.0)


class _ScrapeTime(Collector):
    """The values read from the probes (and the callback backlog) at each scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return []  # names are only known at scrape time; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        p = self.metrics.probes
        yield from _gauge(
            "callflow_ari_connected", "1 while the ARI events websocket is up.", p.ari_connected
        )
        yield from _counter(
            "callflow_ari_reconnects",
            "Times the ARI events websocket connected again.",
            p.ari_reconnects,
        )
        yield from _counter(
            "callflow_ari_recoveries",
            "Recoveries that found calls stranded in the Stasis application.",
            p.ari_recoveries,
        )
        yield from _gauge("callflow_ami_connected", "1 while logged in to AMI.", p.ami_connected)
        yield from _counter(
            "callflow_ami_reconnects", "Times AMI logged in again.", p.ami_reconnects
        )
        yield from _gauge(
            "callflow_recorder_queue_depth",
            "Call-log records in memory, waiting for the database or the spool.",
            p.recorder_queue_depth,
        )
        yield from _gauge(
            "callflow_recorder_spool_size",
            "Call-log records in the spool, waiting for the database.",
            p.recorder_spool_size,
        )
        yield from _gauge(
            "callflow_recorder_database_up",
            "1 while the call log's database takes writes.",
            p.recorder_database_up,
        )
        yield from _counter(
            "callflow_recorder_dropped",
            "Call-log records lost (memory full).",
            p.recorder_dropped,
        )
        yield from _counter(
            "callflow_recorder_rejected",
            "Call-log records refused by the database (kept in rejected.jsonl).",
            p.recorder_rejected,
        )
        yield from _counter(
            "callflow_recorder_written",
            "Call-log records written to the database.",
            p.recorder_written,
        )
        yield from _gauge(
            "callflow_trunk_feed_live",
            "1 while trunk health is fed live by AMI (else states may be stale).",
            p.trunk_feed_live,
        )
        yield from _gauge("callflow_flows_loaded", "Flows the daemon runs.", p.flows_loaded)
        yield from self._trunks(p.trunks)
        yield from self._calendars(p.calendars)
        yield from self._backlog()

    def _trunks(self, probe: Callable[[], Iterable[TrunkReading]] | None) -> Iterator[Metric]:
        readings = _read_all(probe, "trunks")
        if readings is None:
            return
        up = GaugeMetricFamily(
            "callflow_trunk_up",
            "1 reachable and breaker closed, 0 unreachable or breaker open; absent if unknown.",
            labels=["trunk"],
        )
        state = GaugeMetricFamily(
            "callflow_trunk_state",
            "1 for the trunk's qualify state (reachable, unreachable, unknown).",
            labels=["trunk", "state"],
        )
        breaker = GaugeMetricFamily(
            "callflow_trunk_breaker_open",
            "1 while the trunk's circuit breaker is open (calls failed in a row).",
            labels=["trunk"],
        )
        rtt = GaugeMetricFamily(
            "callflow_trunk_rtt_seconds",
            "Round-trip time of the trunk's qualify (SIP OPTIONS).",
            labels=["trunk"],
        )
        for t in readings:
            s = str(t.state)
            for name in ("reachable", "unreachable", "unknown"):
                state.add_metric([t.name, name], 1.0 if s == name else 0.0)
            breaker.add_metric([t.name], 1.0 if t.breaker_open else 0.0)
            if s == "unreachable" or t.breaker_open:
                up.add_metric([t.name], 0.0)
            elif s == "reachable":
                up.add_metric([t.name], 1.0)
            if t.rtt_ms is not None:
                rtt.add_metric([t.name], t.rtt_ms / 1000.0)
        yield from (up, state, breaker, rtt)

    def _calendars(self, probe: Callable[[], Iterable[CalendarReading]] | None) -> Iterator[Metric]:
        readings = _read_all(probe, "calendars")
        if readings is None:
            return
        is_open = GaugeMetricFamily(
            "callflow_calendar_open", "1 while the calendar is open.", labels=["flow", "calendar"]
        )
        override = GaugeMetricFamily(
            "callflow_calendar_overridden",
            "1 while a runtime override decides the calendar's state.",
            labels=["flow", "calendar"],
        )
        for c in readings:
            is_open.add_metric([c.flow, c.calendar], 1.0 if c.open else 0.0)
            override.add_metric([c.flow, c.calendar], 1.0 if c.overridden else 0.0)
        yield from (is_open, override)

    def _backlog(self) -> Iterator[Metric]:
        b = self.metrics.callback_backlog
        if b is None:
            return
        pending = GaugeMetricFamily(
            "callflow_callbacks_pending", "Callback requests not done yet.", labels=["tier"]
        )
        overdue = GaugeMetricFamily(
            "callflow_callbacks_overdue",
            "Pending callback requests waiting longer than [http] callback_overdue.",
            labels=["tier"],
        )
        for tier in sorted(set(b.pending) | set(b.overdue)):
            pending.add_metric([tier], float(b.pending.get(tier, 0)))
            overdue.add_metric([tier], float(b.overdue.get(tier, 0)))
        oldest = GaugeMetricFamily(
            "callflow_callbacks_oldest_pending_seconds",
            "How long the oldest pending callback request has waited (0: none).",
            value=b.oldest_pending_seconds,
        )
        yield from (pending, overdue, oldest)


def _read(probe: Callable[[], _T] | None, name: str) -> _T | None:
    if probe is None:
        return None
    try:
        return probe()
    except Exception:
        log.exception("metrics: probe %s failed; left out of this scrape", name)
        return None


def _read_all(probe: Callable[[], Iterable[_T]] | None, name: str) -> list[_T] | None:
    return _read(None if probe is None else lambda: list(probe()), name)


def _gauge(name: str, doc: str, probe: Callable[[], float | bool] | None) -> Iterator[Metric]:
    value = _read(probe, name)
    if value is not None:
        yield GaugeMetricFamily(name, doc, value=float(value))


def _counter(name: str, doc: str, probe: Callable[[], int] | None) -> Iterator[Metric]:
    value = _read(probe, name)
    if value is not None:
        yield CounterMetricFamily(name, doc, value=float(value))
