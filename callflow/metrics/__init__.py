"""Live metrics for Prometheus: what the calls do, and how the daemon's parts are doing.

``Metrics`` owns its own ``CollectorRegistry`` (nothing is registered in
prometheus-client's global one, and nothing at import time) and gathers two rooms:

* ``calls``: ``CallMetrics``, the engine's ``Observer`` (the composition root fans events
  out to it beside the recorder);
* ``parts``: ``ScrapeTime``, the values the daemon's parts report, read at scrape time
  from ``Probes``.

Units are base units (seconds).  Labels never hold a caller number or a call id.
"""

from __future__ import annotations

from importlib import metadata

from prometheus_client import CollectorRegistry, Histogram, Info, disable_created_metrics
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.process_collector import ProcessCollector

from .calls import CallMetrics, tier_label
from .parts import (
    CalendarReading,
    CallbackBacklog,
    FeedReading,
    Probes,
    ScrapeTime,
    TrunkReading,
)

#: The Content-Type of ``Metrics.render()``: Prometheus' text format 0.0.4, which every
#: Prometheus 2 and 3 reads (names are plain, nothing needs the 1.0.0 escaping).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

ANSWER_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)


class Metrics(CallMetrics):
    """The daemon's metrics, in ``self.registry``; the engine's ``Observer``."""

    def __init__(self, probes: Probes | None = None, *, process: bool = True) -> None:
        self.probes = probes or Probes()
        # No ``*_created`` series beside each counter and histogram: they double the series
        # count for no use here (a process-wide switch of prometheus-client; this daemon
        # has no other registry).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        super().__init__(self.registry)
        Info("callflow_build", "The callflow version running.", registry=self.registry).info(
            {"version": _version()}
        )
        self._backlog: CallbackBacklog | None = None
        # The caller's wait for the daemon: arrival in Stasis to Asterisk's answer.
        self.answer_latency = Histogram(
            "callflow_answer_latency_seconds",
            "From a call's arrival in the Stasis application to its answer by Asterisk.",
            buckets=ANSWER_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(ScrapeTime(self.probes, lambda: self._backlog))
        if process:
            ProcessCollector(registry=self.registry)

    def render(self) -> bytes:
        """The metrics in Prometheus' text format (``CONTENT_TYPE``)."""
        return generate_latest(self.registry)

    def observe_answer_latency(self, seconds: float) -> None:
        self.answer_latency.observe(seconds)

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


__all__ = [
    "CONTENT_TYPE",
    "CalendarReading",
    "CallbackBacklog",
    "FeedReading",
    "Metrics",
    "Probes",
    "TrunkReading",
    "tier_label",
]
