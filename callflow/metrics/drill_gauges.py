"""The drills' metrics, read at scrape time from the drills part.

* ``callflow_drill_last_success_timestamp_seconds{flow,destination,trunk,mode}``: when the
  leg last passed (0: never, so that an alert sees a destination never drilled);
* ``callflow_drill_last_result{...}``: 1 passed, 0 failed, -1 never drilled;
* ``callflow_drill_last_run_timestamp_seconds{...}``: when the leg last ran (passed or not);
* ``callflow_drill_next_timestamp_seconds{flow}``: the next scheduled drill (absent: none
  in the coming week).

Labels are names from the flow files, never a number.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from ..drills.scheduler import LegReading

log = logging.getLogger("callflow.metrics")

LABELS = ["flow", "destination", "trunk", "mode"]


class DrillGauges(Collector):
    def __init__(
        self,
        readings: Callable[[], Iterable[LegReading]],
        next_drills: Callable[[], Mapping[str, datetime | None]],
    ) -> None:
        self.readings = readings
        self.next_drills = next_drills

    def register(self, registry: CollectorRegistry) -> None:
        registry.register(self)

    def describe(self) -> Iterable[Metric]:
        return []  # read at scrape time

    def collect(self) -> Iterator[Metric]:
        success = GaugeMetricFamily(
            "callflow_drill_last_success_timestamp_seconds",
            "When the forwarding drill of this destination over this trunk last passed (0: never).",
            labels=LABELS,
        )
        result = GaugeMetricFamily(
            "callflow_drill_last_result",
            "The last forwarding drill of this destination over this trunk: 1 passed, "
            "0 failed, -1 never drilled.",
            labels=LABELS,
        )
        ran = GaugeMetricFamily(
            "callflow_drill_last_run_timestamp_seconds",
            "When the forwarding drill of this destination over this trunk last ran (0: never).",
            labels=LABELS,
        )
        upcoming = GaugeMetricFamily(
            "callflow_drill_next_timestamp_seconds",
            "The next scheduled forwarding drill of the flow (before a closure, holiday or "
            "weekend).",
            labels=["flow"],
        )
        try:
            for r in self.readings():
                labels = [r.flow, r.destination, r.trunk, str(r.mode)]
                ok = r.last_success
                success.add_metric(labels, ok.at.timestamp() if ok else 0.0)
                last = r.last
                result.add_metric(labels, -1.0 if last is None else float(last.passed))
                ran.add_metric(labels, last.at.timestamp() if last else 0.0)
            for flow, at in sorted(self.next_drills().items()):
                if at is not None:
                    upcoming.add_metric([flow], at.timestamp())
        except Exception:  # a scrape never fails for the drills' sake
            log.exception("drill metrics not read")
            return
        yield from (success, result, ran, upcoming)
