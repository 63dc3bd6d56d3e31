"""The daemon's event pump tells the CDR import when it lost Asterisk and got it back: a
call Asterisk cut at its stop, unseen by the daemon, is then looked for in its CDRs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from callflow.app import Daemon
from callflow.ari.client import EVENT_CONNECTED, EVENT_DISCONNECTED, AriClient, AriConfig
from callflow.ari.service import CallService
from callflow.settings import AriSettings, DaemonSettings, FlowsSettings, HttpSettings, Settings
from callflow.store.aftercrash import CUT_HOLD, CUT_MARGIN, AfterCrash
from callflow.store.cdr import CdrCall
from callflow.store.privacy import CallerPrivacy

REPO = Path(__file__).resolve().parents[2]


class Events:
    def __init__(self, *kinds: str) -> None:
        self.kinds = kinds

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        for kind in self.kinds:
            yield {"type": kind}


class Service:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def dispatch(self, event: dict[str, Any]) -> None:
        self.seen.append(event["type"])


def after_crash(clock: Callable[[], datetime], **options: Any) -> AfterCrash:
    """The part with no database, recorder or channels: only its outage book-keeping."""
    return AfterCrash(
        cast(Any, None),
        cast(Any, None),
        cast(Any, None),
        cdr_file=None,
        privacy=CallerPrivacy(),
        flow_of=lambda _: "",
        clock=clock,
        **options,
    )


async def test_the_pump_marks_each_loss_of_asterisk_for_the_cdr_import() -> None:
    base = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
    ticks = iter(base + timedelta(minutes=m) for m in range(10))  # a minute a reading
    part = after_crash(lambda: next(ticks))  # started at ``base``
    kinds = (EVENT_CONNECTED, "StasisStart", EVENT_DISCONNECTED, EVENT_CONNECTED)
    service = Service()
    await Daemon._pump(cast(AriClient, Events(*kinds)), cast(CallService, service), part)
    assert service.seen == list(kinds)  # every event still reaches the call service
    lost, back = base + timedelta(minutes=1), base + timedelta(minutes=2)
    assert part.cut_windows(base + timedelta(hours=1)) == [(lost - CUT_MARGIN, back)]
    # Lost and not back yet: the window runs to now.
    await Daemon._pump(
        cast(AriClient, Events(EVENT_DISCONNECTED)), cast(CallService, service), part
    )
    later = base + timedelta(hours=2)
    assert part.cut_windows(later)[-1] == (base + timedelta(minutes=3) - CUT_MARGIN, later)


def test_a_loss_noticed_late_widens_the_search_by_as_much() -> None:
    """A silent Asterisk (no close: a power cut) is noticed up to 1.5 heartbeats after its
    last word: the calls it cut started that much earlier, and their CDRs, read before the
    loss was known, are kept that much longer."""
    base = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
    now = [base]
    ari = AriConfig("http://pbx:8088", "callflow", "u", "p", heartbeat=5.0)
    late = timedelta(seconds=ari.loss_noticed_within)
    assert late == timedelta(seconds=7.5)
    part = after_crash(lambda: now[0], noticed_within=late)
    now[0] = base + timedelta(minutes=5)
    part.pbx_lost()
    lost = now[0]
    assert part.cut_windows(lost + timedelta(seconds=1)) == [
        (lost - CUT_MARGIN - late, lost + timedelta(seconds=1))
    ]
    cut = CdrCall(
        uniqueid="c1",
        linkedid="c1",
        start=lost - timedelta(seconds=40),
        end=lost - timedelta(seconds=1),
        dialed="903",
        hangup_by="pbx",
        disposition="FAILED",
        entered=True,
    )
    assert part._held(cut, cut.end + CUT_HOLD + late - timedelta(seconds=1))
    assert not part._held(cut, cut.end + CUT_HOLD + late + timedelta(seconds=1))


def test_the_daemon_searches_as_far_back_as_its_heartbeat_may_notice_a_loss_late(
    tmp_path: Path,
) -> None:
    settings = Settings(
        ari=AriSettings(password_env="TEST_ARI", heartbeat=8.0),
        flows=FlowsSettings(dir=str(REPO / "dialplans")),
        daemon=DaemonSettings(state_dir=str(tmp_path)),
        http=HttpSettings(enabled=False),
        base_dir=tmp_path,
    )
    daemon = Daemon(settings, {"TEST_ARI": "x", "CALLFLOW_AMI_SECRET": "y"})
    assert daemon.ari_config.heartbeat == 8.0
    # 8 s, rounded up to 9 by aiohttp, then 4 s for the pong, then 3 s for the lane to close.
    assert daemon.after_crash.noticed_within == timedelta(seconds=16)


@pytest.mark.parametrize(
    ("heartbeat", "lanes", "transport", "within"),
    [
        (5.0, 0, "auto", 7.5),  # a ping 5 s after the last frame, 2.5 s for its pong
        (5.0, 1, "auto", 10.5),  # and up to 3 s for the lane to close before it is said
        (5.0, 1, "http", 7.5),  # no lane over HTTP
        (12.0, 0, "auto", 20.0),  # 12 s and 6 s, each rounded up a second by aiohttp
        (None, 0, "auto", 0.0),  # no heartbeat: only a close or a reset is noticed
    ],
)
def test_how_late_a_silent_asterisk_is_noticed(
    heartbeat: float | None, lanes: int, transport: str, within: float
) -> None:
    ari = AriConfig(
        "http://pbx:8088",
        "callflow",
        "u",
        "p",
        heartbeat=heartbeat,
        rest_lanes=lanes,
        transport=cast(Any, transport),
    )
    assert ari.loss_noticed_within == within
