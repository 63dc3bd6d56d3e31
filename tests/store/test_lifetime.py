"""The daemon's lifetime, declared once (``Daemon.parts`` + ``Lifetime``): a part whose
shutdown fails does not keep the others from stopping, and no queued record is lost.

The daemon runs for real, without Asterisk: ARI and AMI point at a port that refuses
connections (a socket bound but not listening, held for the test), the call log is a
SQLite file upgraded to the current schema, the admin API listens on a free port.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from callflow.app import Daemon
from callflow.lifetime import Lifetime, Part
from callflow.settings import (
    AgiSettings,
    AmiSettings,
    AriSettings,
    DaemonSettings,
    DatabaseSettings,
    FlowsSettings,
    HttpSettings,
    Settings,
)
from callflow.store.db import create_engine, upgrade
from callflow.store.models import Call, CallStep
from tests.support.fake_agi import FakeAgiAsterisk
from tests.support.polling import wait_until

from .support import count, play_call

REPO = Path(__file__).resolve().parents[2]

# Daemon.parts, in order; the test below fails each one's shutdown in turn.
PARTS = [
    "call log",
    "calendar overrides",
    "event-loop lag",
    "retention purge",
    "calendar feeds",
    "reloads",
    "AMI",
    "admin API",
    "ARI events",
    "ARI client",
    "call service",
    "drills",
    "after crash",
    "FastAGI",
    "systemd notify",
]
STEPS = 3  # steps per call played


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port where every connection is refused: bound by us, never listening."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def make_daemon(tmp_path: Path, port: int) -> Daemon:
    settings = Settings(
        ari=AriSettings(url=f"http://127.0.0.1:{port}", password_env="TEST_ARI_PASSWORD"),
        ami=AmiSettings(port=port, secret_env="TEST_AMI_SECRET"),
        flows=FlowsSettings(dir=str(REPO / "dialplans")),
        daemon=DaemonSettings(stop_grace=0.1, state_dir="var"),
        database=DatabaseSettings(
            url=f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}", spool_dir="spool"
        ),
        http=HttpSettings(listen="127.0.0.1:0"),
        agi=AgiSettings(enabled=True, listen="127.0.0.1:0"),
        base_dir=tmp_path,
    )
    env = {"TEST_ARI_PASSWORD": "ari-secret", "TEST_AMI_SECRET": "ami-secret"}
    return Daemon(settings, env)


class Spy:
    """A part as the daemon declares it, watched: on its way out it reports one more call
    (what parts still produce while they stop), then stops for real, or fails.

    ``fail="before"``: its exit raises without stopping the part (the worst case: it never
    stopped); ``fail="after"``: it stops, then raises (the call log's own exit cannot fail
    before writing and still be expected to write)."""

    def __init__(self, part: Part, report: Callable[[str], None], fail: str | None) -> None:
        self.part = part
        self.report = report
        self.fail = fail
        self.entered = False
        self.exited = False  # its real exit ran to the end

    async def __aenter__(self) -> None:
        await self.part.context.__aenter__()
        self.entered = True

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.report(f"stopping {self.part.name}")
        if self.fail == "before":
            raise RuntimeError(f"{self.part.name} cannot stop")
        await self.part.context.__aexit__(exc_type, exc, tb)
        self.exited = True
        if self.fail == "after":
            raise RuntimeError(f"{self.part.name} stopped badly")


@pytest.mark.parametrize("failing", PARTS)
async def test_each_part_failing_to_stop_loses_no_record_and_stops_the_others(
    failing: str,
    tmp_path: Path,
    refused_port: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    schema = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}")
    await upgrade(schema)
    daemon = make_daemon(tmp_path, refused_port)
    observer = daemon.services.observer
    calls: list[str] = []

    def report(call_id: str) -> None:
        calls.append(call_id)
        play_call(observer, call_id, STEPS)

    parts = daemon.parts()
    assert [p.name for p in parts] == PARTS
    spies = [
        Spy(
            p,
            report,
            ("after" if p.name == "call log" else "before") if p.name == failing else None,
        )
        for p in parts
    ]
    monkeypatch.setattr(daemon, "parts", lambda: [Part(s.part.name, s) for s in spies])
    for i in range(3):  # queued before the daemon runs: the recorder takes them on start
        report(f"call-{i}")
    daemon.request_stop()  # the daemon starts every part, then stops at once

    with caplog.at_level(logging.ERROR, "callflow"):
        code = await asyncio.wait_for(daemon.run(), 30)

    assert code == 1
    assert f"{failing}: shutdown failed" in caplog.text
    assert all(s.entered for s in spies)
    assert [s.part.name for s in spies if not s.exited] == (
        [] if failing == "call log" else [failing]
    )
    assert daemon.ari_client.closed == (failing != "ARI client")
    assert daemon.ami is not None and daemon.ami.closed == (failing != "AMI")
    assert daemon.service.accepting == (failing == "call service")
    assert daemon.agi is not None and daemon.agi.accepting == (failing == "FastAGI")
    # Every call, including those reported while the parts stopped, is in the database.
    assert len(calls) == 3 + len(PARTS)
    assert await count(schema, Call) == len(calls)
    assert await count(schema, CallStep) == len(calls) * STEPS
    assert daemon.store.recorder.queue_depth == 0 and daemon.store.recorder.spool_size == 0

    # The part that never stopped is stopped now; then nothing is left running.
    for spy in spies:
        if not spy.exited and spy.part.name != "call log":
            await spy.part.context.__aexit__(None, None, None)
    assert asyncio.all_tasks() == {asyncio.current_task()}
    await schema.dispose()


async def test_a_clean_stop_exits_0_with_every_record_written(
    tmp_path: Path, refused_port: int
) -> None:
    schema = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}")
    await upgrade(schema)
    daemon = make_daemon(tmp_path, refused_port)
    play_call(daemon.services.observer, "call-1", STEPS)
    daemon.request_stop()
    assert await asyncio.wait_for(daemon.run(), 30) == 0
    assert await count(schema, Call) == 1
    assert asyncio.all_tasks() == {asyncio.current_task()}
    await schema.dispose()


class Recording:
    def __init__(self, name: str, log: list[str], *, enter_fails: bool = False) -> None:
        self.name = name
        self.log = log
        self.enter_fails = enter_fails

    async def __aenter__(self) -> None:
        if self.enter_fails:
            raise OSError(f"{self.name} cannot start")
        self.log.append(f"enter {self.name}")

    async def __aexit__(self, *exc: Any) -> None:
        self.log.append(f"exit {self.name}")


async def test_a_part_that_cannot_start_stops_those_started_in_reverse() -> None:
    log: list[str] = []
    parts = [Part(n, Recording(n, log, enter_fails=n == "c")) for n in "abcd"]
    with pytest.raises(OSError, match="c cannot start"):
        async with Lifetime(parts):
            pytest.fail("the body must not run")
    assert log == ["enter a", "enter b", "exit b", "exit a"]


async def test_a_failure_of_the_body_still_stops_every_part_and_is_raised() -> None:
    log: list[str] = []
    parts = [Part(n, Recording(n, log)) for n in "abc"]
    with pytest.raises(LookupError):
        async with Lifetime(parts) as life:
            raise LookupError("the event pump failed")
    assert log == ["enter a", "enter b", "enter c", "exit c", "exit b", "exit a"]
    assert life.failed == []


async def test_an_agi_call_goes_to_the_same_log_and_metrics_marked_agi(
    tmp_path: Path, refused_port: int
) -> None:
    schema = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}")
    await upgrade(schema)
    daemon = make_daemon(tmp_path, refused_port)
    run = asyncio.create_task(daemon.run())
    agi = daemon.agi
    assert agi is not None
    await wait_until(lambda: agi.accepting, 10)
    assert agi.port is not None
    # The caller hangs up at the first thing the flow asks of Asterisk.
    peer = FakeAgiAsterisk(agi.port, script="cabinet-du-parc", uniqueid="agi-1", hangup_on="")
    await asyncio.wait_for(peer.run(), 10)
    assert 'callflow_calls_total{driver="agi",flow="cabinet-du-parc",outcome="abandoned"} 1.0' in (
        daemon.metrics.render().decode()
    )
    daemon.request_stop()
    assert await asyncio.wait_for(run, 30) == 0
    async with schema.connect() as conn:
        rows = (await conn.exec_driver_sql("SELECT id, driver, outcome FROM calls")).all()
    assert [tuple(r) for r in rows] == [("agi-1", "agi", "abandoned")]
    await schema.dispose()
