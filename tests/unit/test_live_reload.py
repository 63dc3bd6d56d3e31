"""LiveFlows.reload_async: the flow files are parsed off the event loop, bounded in time,
and a hostile file is refused while the running flows stay and calls go on."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from callflow.flow.live import LiveFlows
from callflow.flow.registry import FlowSet
from tests.support.flows import write_flow
from tests.support.polling import wait_until
from tests.unit.test_loader import billion_laughs


@pytest.fixture
def live(tmp_path: Path) -> LiveFlows:
    write_flow(tmp_path)
    return LiveFlows(tmp_path, None)


async def test_an_alias_bomb_is_refused_and_the_flows_run_on(live: LiveFlows) -> None:
    before = live.current
    (live.directory / "bomb.yaml").write_text(billion_laughs())
    result = await live.reload_async()
    assert not result.ok
    assert any("bomb.yaml:" in e and "alias expansions" in e for e in result.errors)
    assert live.current is before and live.generation == 1
    assert live.for_number("100") is not None


async def test_the_loop_keeps_serving_while_the_files_are_parsed(
    live: LiveFlows, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsing, release = threading.Event(), threading.Event()
    load = live._load

    def slow_load() -> FlowSet:
        parsing.set()
        release.wait(60)  # a parse that only ends when the loop has shown it is alive
        return load()

    monkeypatch.setattr(live, "_load", slow_load)
    reload = asyncio.create_task(live.reload_async())
    await wait_until(parsing.is_set, timeout=30)
    # The loop runs other work (a call being answered) while the parse is under way.
    answered = await asyncio.wait_for(asyncio.sleep(0, result="answered"), 10)
    assert answered == "answered" and not reload.done()
    release.set()
    result = await reload
    assert result.ok and live.generation == 2


async def test_a_parse_that_takes_too_long_is_refused(
    live: LiveFlows, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    load = live._load

    def stuck_load() -> FlowSet:
        release.wait(60)
        return load()

    monkeypatch.setattr(live, "_load", stuck_load)
    before = live.current
    try:
        result = await live.reload_async(timeout=0.2)
    finally:
        release.set()
    assert not result.ok and "took more than 0.2 s" in result.errors[0]
    assert live.current is before
