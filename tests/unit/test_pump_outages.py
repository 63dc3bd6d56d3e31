"""The daemon's event pump tells the CDR import when it lost Asterisk and got it back: a
call Asterisk cut at its stop, unseen by the daemon, is then looked for in its CDRs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from callflow.app import Daemon
from callflow.ari.client import EVENT_CONNECTED, EVENT_DISCONNECTED, AriClient
from callflow.ari.service import CallService
from callflow.store.aftercrash import CUT_MARGIN, AfterCrash
from callflow.store.privacy import CallerPrivacy


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


async def test_the_pump_marks_each_loss_of_asterisk_for_the_cdr_import() -> None:
    base = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
    ticks = iter(base + timedelta(minutes=m) for m in range(10))  # a minute a reading
    part = AfterCrash(
        cast(Any, None),
        cast(Any, None),
        cast(Any, None),
        cdr_file=None,
        privacy=CallerPrivacy(),
        flow_of=lambda _: "",
        clock=lambda: next(ticks),  # started at ``base``
    )
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
