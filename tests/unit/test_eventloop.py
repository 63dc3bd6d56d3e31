"""The daemon's event loop: uvloop by default, the standard library's on request."""

import asyncio
from pathlib import Path

import pytest
import uvloop

from callflow.errors import SettingsError
from callflow.eventloop import LoopKind, run
from callflow.settings import load_settings


async def loop_type() -> type[asyncio.AbstractEventLoop]:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop())


def test_uvloop_is_the_default() -> None:
    kind = LoopKind(load_settings(None, env={}).daemon.event_loop)
    assert kind is LoopKind.UVLOOP
    assert issubclass(run(loop_type(), kind), uvloop.Loop)


def test_the_standard_loop_on_request(tmp_path: Path) -> None:
    path = tmp_path / "callflow.toml"
    path.write_text('[daemon]\nevent_loop = "asyncio"\n', encoding="utf-8")
    kind = LoopKind(load_settings(path, env={}).daemon.event_loop)
    ran = run(loop_type(), kind)
    assert not issubclass(ran, uvloop.Loop)
    assert issubclass(ran, asyncio.BaseEventLoop)


def test_an_unknown_loop_is_refused() -> None:
    refused = r"\[daemon\] event_loop must be one of uvloop, asyncio"
    with pytest.raises(SettingsError, match=refused):
        load_settings(None, env={"CALLFLOW_DAEMON_EVENT_LOOP": "trio"})


def test_a_failure_inside_comes_out_and_the_loop_is_closed() -> None:
    loops: list[asyncio.AbstractEventLoop] = []

    async def fail() -> None:
        loops.append(asyncio.get_running_loop())
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run(fail(), LoopKind.UVLOOP)
    assert loops and loops[0].is_closed()
