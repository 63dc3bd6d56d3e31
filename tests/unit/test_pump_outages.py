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
    part = AfterCrash(
        cast(Any, None),
        cast(Any, None),
        cast(Any, None),
        cdr_file=None,
        privacy=CallerPrivacy(),
        flow_of=lambda _: "",
        clock=lambda: datetime.now(UTC) - timedelta(hours=1),  # started an hour ago
    )
    kinds = (EVENT_CONNECTED, "StasisStart", EVENT_DISCONNECTED, EVENT_CONNECTED)
    service = Service()
    before = datetime.now(UTC)
    await Daemon._pump(cast(AriClient, Events(*kinds)), cast(CallService, service), part)
    after = datetime.now(UTC)
    assert service.seen == list(kinds)  # every event still reaches the call service
    ((lo, hi),) = part.cut_windows(after + timedelta(hours=1))
    assert before - CUT_MARGIN <= lo <= after - CUT_MARGIN and lo + CUT_MARGIN <= hi <= after
    # Lost and not back yet: the window runs to now.
    await Daemon._pump(
        cast(AriClient, Events(EVENT_DISCONNECTED)), cast(CallService, service), part
    )
    later = after + timedelta(hours=2)
    assert part.cut_windows(later)[-1][1] == later
