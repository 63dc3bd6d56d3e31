"""systemd's notify protocol over a real unix datagram socket, as systemd listens."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from callflow.app import Daemon
from callflow.sdnotify import Notifier
from callflow.settings import AriSettings, DaemonSettings, FlowsSettings, HttpSettings, Settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[socket.socket]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(tmp_path / "notify"))
    s.setblocking(False)
    yield s
    s.close()


async def receive(s: socket.socket) -> str:
    """The next datagram (generous bound: a loaded machine is slow, never wrong)."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(30):
        return (await loop.sock_recv(s, 4096)).decode()


async def test_ready_on_entry_stopping_on_exit(listener: socket.socket) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": listener.getsockname()})
    async with notifier:
        assert (await receive(listener)).splitlines()[0] == "READY=1"
    assert (await receive(listener)).splitlines()[0] == "STOPPING=1"


async def test_the_watchdog_pings_while_the_loop_runs(listener: socket.socket) -> None:
    env = {"NOTIFY_SOCKET": listener.getsockname(), "WATCHDOG_USEC": "20000"}
    notifier = Notifier(env)
    assert notifier.watchdog == pytest.approx(0.02)
    async with notifier:
        assert (await receive(listener)).startswith("READY=1")
        assert await receive(listener) == "WATCHDOG=1"
        assert await receive(listener) == "WATCHDOG=1"
    # Leaving stops the pings: STOPPING is the last word, nothing after it.
    while (message := await receive(listener)) == "WATCHDOG=1":
        pass
    assert message.startswith("STOPPING=1")
    with pytest.raises(BlockingIOError):
        listener.recv(4096)


async def test_an_abstract_socket_name_is_understood() -> None:
    name = f"callflow-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        s.setblocking(False)
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).notify("READY=1")
        assert await receive(s) == "READY=1"


def test_a_watchdog_meant_for_another_process_is_not_ours() -> None:
    env = {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}
    assert Notifier(env).watchdog is None
    env["WATCHDOG_PID"] = str(os.getpid())
    assert Notifier(env).watchdog == 1.0


async def test_outside_systemd_nothing_is_sent_and_nothing_fails(tmp_path: Path) -> None:
    assert Notifier({}).notify("READY=1") is False
    # A socket that is gone: logged, never raised (calls matter more than systemd).
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone"), "WATCHDOG_USEC": "1000"})
    async with notifier:
        assert notifier.notify("STATUS=x") is False


def test_the_daemon_tells_systemd_once_every_part_is_up(tmp_path: Path) -> None:
    settings = Settings(
        ari=AriSettings(password_env="TEST_ARI"),
        flows=FlowsSettings(dir=str(REPO / "dialplans")),
        daemon=DaemonSettings(state_dir=str(tmp_path)),
        http=HttpSettings(enabled=False),
        base_dir=tmp_path,
    )
    env = {"TEST_ARI": "x", "CALLFLOW_AMI_SECRET": "y", "NOTIFY_SOCKET": "/run/x"}
    daemon = Daemon(settings, env)
    parts = daemon.parts()
    assert parts[-1].name == "systemd notify" and parts[-1].context is daemon.notifier
    assert daemon.notifier.address == "/run/x"
