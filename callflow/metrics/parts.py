"""What the daemon's parts report, read *at scrape time*: ARI and AMI connected and their
reconnect counters, overload (event-loop lag, ARI requests in flight, shedding, calls
shed), the call log's queue and spool, trunk states and round-trip times, calendars and
their iCal feeds, flows loaded, and the callback backlog.

Each value comes from a callable of ``Probes``, handed in by the composition root: nothing
is copied, so a value is never stale, and this module imports none of the parts it
watches.  A probe that raises is logged and left out of that scrape.

``callflow_trunk_up`` is 1 when qualify sees the trunk reachable and its circuit breaker is
closed, 0 when qualify says unreachable or the breaker is open, and absent while the state
is unknown (qualify off or not yet done), so that an alert on ``callflow_trunk_up == 0``
fires on evidence only; ``callflow_trunk_state{state}`` tells all three states.

The callback backlog (pending, overdue, oldest) lives in the database: the admin API
refreshes it with ``Metrics.set_callback_backlog`` just before a scrape.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger("callflow.metrics")
_T = TypeVar("_T")


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


class FeedReading(Protocol):
    """One calendar feed (``callflow.feeds.FeedStatus`` is one)."""

    @property
    def feed(self) -> str: ...
    @property
    def last_success(self) -> float | None: ...
    @property
    def failures(self) -> int: ...
    @property
    def up(self) -> bool | None: ...


@dataclass
class Probes:
    """Values read at scrape time.  Each is optional: a missing one leaves its metrics out.

    A probe that raises is logged and skipped; the rest of the scrape goes on.
    """

    ari_connected: Callable[[], bool] | None = None
    ari_reconnects: Callable[[], int] | None = None
    ari_recoveries: Callable[[], int] | None = None
    ari_transport: Callable[[], str] | None = None  # "websocket" or "http": REST now
    ari_requests: Callable[[], Mapping[str, int]] | None = None  # REST sent, by transport
    ari_lanes_open: Callable[[], int] | None = None  # REST lanes open beside the events socket
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
    feeds: Callable[[], Iterable[FeedReading]] | None = None
    # Overload: event-loop lag (worst since the last scrape), ARI requests awaiting an
    # answer, 1 while new calls are shed, and calls shed so far by reason.
    loop_lag: Callable[[], float] | None = None
    ari_in_flight: Callable[[], int] | None = None
    shedding: Callable[[], bool] | None = None
    calls_shed: Callable[[], Mapping[str, int]] | None = None
    # Where the dialplan fallback left the calls that went there, as their CDRs were read
    # (this run): secretariat, outside, voicemail, nobody, abandoned, cut, unknown.
    fallback_fates: Callable[[], Mapping[str, int]] | None = None
    # 1 while Asterisk's CDR file can be read ([cdr] file set; a file not written yet
    # counts as readable): else calls the fallback took are not logged.
    cdr_readable: Callable[[], bool] | None = None
    # 0 when Asterisk's module list shows no working VoiceMail() (e.g. Debian's
    # app_voicemail_odbc.so declined beside app_voicemail.so and unregistered it).
    voicemail_ready: Callable[[], bool] | None = None


@dataclass(frozen=True)
class CallbackBacklog:
    """Pending callback requests by tier label ("1", "2", "none" ...), from the database."""

    pending: Mapping[str, int] = field(default_factory=dict)
    overdue: Mapping[str, int] = field(default_factory=dict)
    oldest_pending_seconds: float = 0.0


class ScrapeTime(Collector):
    """The values read from the probes (and the callback backlog) at each scrape."""

    def __init__(
        self, probes: Probes, backlog: Callable[[], CallbackBacklog | None] = lambda: None
    ) -> None:
        self.probes = probes
        self.backlog = backlog

    def describe(self) -> Iterable[Metric]:
        return []  # names are only known at scrape time; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        p = self.probes
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
        yield from self._ari_transport(p.ari_transport, p.ari_requests)
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
        yield from _gauge(
            "callflow_cdr_readable",
            "1 while Asterisk's CDR file can be read (else the fallback's calls go unlogged).",
            p.cdr_readable,
        )
        yield from _gauge(
            "callflow_voicemail_ready",
            "0 when Asterisk's modules show no working VoiceMail() (read at each connection).",
            p.voicemail_ready,
        )
        yield from _gauge("callflow_flows_loaded", "Flows the daemon runs.", p.flows_loaded)
        yield from _gauge(
            "callflow_event_loop_lag_seconds",
            "Worst lateness of the event loop since the previous scrape.",
            p.loop_lag,
        )
        yield from _gauge(
            "callflow_ari_requests_in_flight",
            "ARI REST requests sent and not yet answered (a shed call's handoff aside).",
            p.ari_in_flight,
        )
        yield from _gauge(
            "callflow_ari_rest_lanes_open",
            "Websockets carrying ARI REST requests beside the events socket ([ari] rest_lanes).",
            p.ari_lanes_open,
        )
        yield from _gauge(
            "callflow_shedding",
            "1 while new calls are sent straight to the dialplan fallback (overload).",
            p.shedding,
        )
        yield from _counters(
            "callflow_calls_shed",
            "Calls sent straight to the dialplan fallback because the daemon was behind.",
            "reason",
            p.calls_shed,
        )
        yield from _counters(
            "callflow_fallback_fates",
            "Calls that went to the dialplan fallback (shed, handed over, or taken while the "
            "daemon was away), by where it left them, as their CDRs were read.",
            "fate",
            p.fallback_fates,
        )
        yield from self._trunks(p.trunks)
        yield from self._calendars(p.calendars)
        yield from self._feeds(p.feeds)
        yield from self._backlog()

    def _ari_transport(
        self,
        in_use: Callable[[], str] | None,
        requests: Callable[[], Mapping[str, int]] | None,
    ) -> Iterator[Metric]:
        now = _read(in_use, "ari_transport")
        if now is not None:
            gauge = GaugeMetricFamily(
                "callflow_ari_transport",
                "1 for the way ARI REST requests travel now (websocket or http).",
                labels=["transport"],
            )
            for name in ("websocket", "http"):
                gauge.add_metric([name], 1.0 if now == name else 0.0)
            yield gauge
        yield from _counters(
            "callflow_ari_requests", "ARI REST requests sent, by transport.", "transport", requests
        )

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

    def _feeds(self, probe: Callable[[], Iterable[FeedReading]] | None) -> Iterator[Metric]:
        readings = _read_all(probe, "feeds")
        if readings is None:
            return
        last = GaugeMetricFamily(
            "callflow_calendar_feed_last_success_timestamp_seconds",
            "Unix time of the last good read of the calendar feed (absent: none yet).",
            labels=["feed"],
        )
        up = GaugeMetricFamily(
            "callflow_calendar_feed_up",
            "1 if the last read of the feed succeeded, 0 if the calendars use an old copy.",
            labels=["feed"],
        )
        failures = CounterMetricFamily(
            "callflow_calendar_feed_failures",
            "Failed reads of the calendar feed (down, timeout, not iCalendar).",
            labels=["feed"],
        )
        for f in readings:
            if f.last_success is not None:
                last.add_metric([f.feed], f.last_success)
            if f.up is not None:
                up.add_metric([f.feed], 1.0 if f.up else 0.0)
            failures.add_metric([f.feed], float(f.failures))
        yield from (last, up, failures)

    def _backlog(self) -> Iterator[Metric]:
        b = self.backlog()
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


def _counters(
    name: str, doc: str, label: str, probe: Callable[[], Mapping[str, int]] | None
) -> Iterator[Metric]:
    """One counter per value of ``label``, from a probe that counts by it."""
    counts = _read(probe, name)
    if counts is not None:
        family = CounterMetricFamily(name, doc, labels=[label])
        for value, n in sorted(counts.items()):
            family.add_metric([value], float(n))
        yield family


__all__ = [
    "CalendarReading",
    "CallbackBacklog",
    "FeedReading",
    "Probes",
    "ScrapeTime",
    "TrunkReading",
]
