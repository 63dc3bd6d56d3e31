"""What the admin API needs from the daemon: one dataclass, so that tests build it with fakes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from ..drills import DrillResult, DrillRunner
from ..drills.scheduler import LegReading
from ..flow.live import ReloadResult
from ..flow.registry import FlowSet
from ..flow.services import utc_now
from ..metrics import Metrics
from ..schedule import OverrideStore
from .accounts import Credentials


class FlowSource(Protocol):
    """The flows running now (``LiveFlows``)."""

    @property
    def current(self) -> FlowSet: ...


class TrunkSource(Protocol):
    """Trunk states (``HealthAwareSelector``)."""

    def snapshot_json(self) -> dict[str, Any]: ...


class DrillSource(Protocol):
    """Forwarding drills (the daemon's ``drills.scheduler.Drills``)."""

    @property
    def runner(self) -> DrillRunner: ...

    @property
    def next_drill(self) -> Mapping[str, datetime | None]: ...

    async def drill(self, flow_name: str, destination: str | None = None) -> list[DrillResult]: ...

    def readings(self) -> Sequence[LegReading]: ...


#: ``audit(who, action, detail)``: adds an entry to the audit trail (``Recorder.audit``).
AuditFn = Callable[[str, str, Mapping[str, Any]], None]


def _never() -> bool:
    return False


@dataclass
class AdminContext:
    """The admin API's dependencies.

    ``overrides`` must be the engine's own ``OverrideStore`` (``Services.overrides``) so
    that an override takes effect on the next call.  ``reload`` reloads the flows like
    SIGHUP does (and returns the ``ReloadResult``).  ``db`` is the call log's engine
    (None: the callback and call routes answer 503).  ``credentials``: who may use the API
    (none refuses every ``/api/`` route); the daemon replaces them on SIGHUP.
    ``ari_connected`` decides readiness (with the flows); ``checks`` are reported by
    ``/healthz`` without deciding it (database, AMI ...).
    """

    flows: FlowSource
    overrides: OverrideStore
    reload: Callable[[], ReloadResult | Awaitable[ReloadResult]]
    clock: Callable[[], datetime] = utc_now
    trunks: TrunkSource | None = None
    db: AsyncEngine | None = None
    metrics: Metrics | None = None
    credentials: Credentials = field(default_factory=Credentials)
    audit: AuditFn | None = None
    ari_connected: Callable[[], bool] = _never
    checks: Mapping[str, Callable[[], bool]] = field(default_factory=dict)
    db_timeout: float = 5.0  # seconds a database query of the API may take
    backlog_interval: float = 15.0  # seconds between two callback backlog queries (/metrics)
    language: str = "en"  # the page's words; the daemon passes [daemon] language (fr default)
    node: str = ""  # this daemon's node ([node] name): its trunks are the live ones
    drills: DrillSource | None = None  # forwarding drills (None: the drill routes answer 503)
    #: ``[http] behind_proxy``: the client's address is the proxy's last X-Forwarded-For entry
    behind_proxy: bool = False


__all__ = ["AdminContext", "AuditFn", "DrillSource", "FlowSource", "TrunkSource"]
