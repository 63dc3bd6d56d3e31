"""AmiClient and AmiTrunkMonitor against an in-process fake AMI server (asyncio TCP)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from callflow.ami import (
    AmiActionError,
    AmiClient,
    AmiConfig,
    AmiError,
    AmiLoginError,
    AmiMessage,
    AmiNotConnected,
    AmiTimeout,
    AmiTrunkMonitor,
)
from callflow.ami.qualify import list_contacts
from callflow.errors import TelephonyError
from callflow.trunks import TrunkHealth, TrunkState

TRACES = Path(__file__).resolve().parent / "ami_traces"
USER = "callflow"
SECRET = "Am1-s3cret-XYZ"
R, U, X = TrunkState.REACHABLE, TrunkState.UNKNOWN, TrunkState.UNREACHABLE


def trace(name: str) -> str:
    return (TRACES / name).read_text(encoding="utf-8").replace("\n", "\r\n")


def block(*lines: str) -> str:
    return "\r\n".join(lines) + "\r\n\r\n"


def contact_status(uri: str, status: str, aor: str, rtt: str = "0") -> str:
    return block(
        "Event: ContactStatus",
        "Privilege: system,all",
        f"URI: {uri}",
        f"ContactStatus: {status}",
        f"AOR: {aor}",
        f"EndpointName: {aor}",
        f"RoundtripUsec: {rtt}",
    )


TRUNK_A_URI = "sip:sip.operateur-a.example:5060"


class FakeAmi:
    """Speaks enough AMI: banner, Login, Ping, Logoff, PJSIPShow* from the traces."""

    def __init__(self) -> None:
        self.secret = SECRET
        self.port = 0
        self.version = "9.0.0"
        self.silent: set[str] = set()  # actions (lower case) never answered
        self.contacts = trace("pjsip_show_contacts.ami")
        self.endpoints = trace("pjsip_show_endpoints.ami")
        self.endpoint_details: dict[str, str] = {}  # endpoint -> PJSIPShowEndpoint answer
        self.before_listing = ""  # events written just before a contact listing
        self.after_listing = ""  # and just after it, in the same write
        self.close_after_listing = False  # then the connection drops (a crash)
        self.logins: list[tuple[str, str]] = []
        self.actions: list[dict[str, str]] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.connections = 0
        self._server: asyncio.Server | None = None

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self.drop()
            await self._server.wait_closed()
            self._server = None

    def count(self, action: str) -> int:
        return sum(1 for a in self.actions if a.get("Action", "").lower() == action.lower())

    async def push(self, text: str) -> None:
        for w in list(self.writers):
            w.write(text.encode())
            await w.drain()

    async def drop(self) -> None:
        """Close every session (Asterisk restarting, or crashing)."""
        for w in list(self.writers):
            w.close()
        self.writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.write(f"Asterisk Call Manager/{self.version}\r\n".encode())
        authed = False
        try:
            while True:
                raw = await reader.readuntil(b"\r\n\r\n")
                fields = dict(
                    line.split(": ", 1) for line in raw.decode().split("\r\n") if ": " in line
                )
                self.actions.append(fields)
                name = fields.get("Action", "").lower()
                aid = fields.get("ActionID", "")
                if name in self.silent:
                    continue
                if name == "login":
                    self.logins.append((fields.get("Username", ""), fields.get("Secret", "")))
                    if (fields.get("Username"), fields.get("Secret")) != (USER, self.secret):
                        writer.write(
                            block(
                                "Response: Error",
                                f"ActionID: {aid}",
                                "Message: Authentication failed",
                            ).encode()
                        )
                        await writer.drain()
                        break
                    authed = True
                    self.writers.append(writer)
                    writer.write(
                        block(
                            "Response: Success",
                            f"ActionID: {aid}",
                            "Message: Authentication accepted",
                        ).encode()
                    )
                    writer.write(
                        block(
                            "Event: FullyBooted",
                            "Privilege: system,all",
                            "Uptime: 157",
                            "LastReload: 157",
                            "Status: Fully Booted",
                        ).encode()
                    )
                elif not authed:
                    writer.write(
                        block(
                            "Response: Error", f"ActionID: {aid}", "Message: Permission denied"
                        ).encode()
                    )
                elif name == "ping":
                    writer.write(
                        block(
                            "Response: Success",
                            f"ActionID: {aid}",
                            "Ping: Pong",
                            "Timestamp: 1767254400.000000",
                        ).encode()
                    )
                elif name == "pjsipshowcontacts":
                    listing = self.contacts.replace("ActionID: trace", f"ActionID: {aid}")
                    text = self.before_listing + listing + self.after_listing
                    writer.write(text.encode())
                    if self.close_after_listing:
                        await writer.drain()
                        break
                elif name == "pjsipshowendpoint":
                    detail = self.endpoint_details.get(fields.get("Endpoint", ""))
                    if detail is None:
                        detail = block(
                            "Response: Error",
                            "ActionID: trace",
                            "Message: Unable to retrieve endpoint " + fields.get("Endpoint", ""),
                        )
                    writer.write(detail.replace("ActionID: trace", f"ActionID: {aid}").encode())
                elif name == "pjsipshowendpoints":
                    listing = self.endpoints.replace("ActionID: trace", f"ActionID: {aid}")
                    writer.write(listing.encode())
                elif name == "logoff":
                    writer.write(
                        block(
                            "Response: Goodbye",
                            f"ActionID: {aid}",
                            "Message: Thanks for all the fish.",
                        ).encode()
                    )
                    await writer.drain()
                    break
                else:
                    writer.write(
                        block(
                            "Response: Error",
                            f"ActionID: {aid}",
                            f"Message: Invalid/unknown command: {name}.",
                        ).encode()
                    )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            if writer in self.writers:
                self.writers.remove(writer)
            writer.close()


@pytest.fixture
async def fake() -> AsyncIterator[FakeAmi]:
    server = FakeAmi()
    await server.start()
    yield server
    await server.stop()


class Sleeps:
    """Records the delays asked for and waits only a moment."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0.005)


def config(port: int, **kw: Any) -> AmiConfig:
    base: dict[str, Any] = {
        "port": port,
        "username": USER,
        "secret": SECRET,
        "action_timeout": 0.5,
        "ping_interval": None,
        "backoff_initial": 0.01,
        "backoff_max": 0.05,
        "login_retry": 0.01,
    }
    base.update(kw)
    return AmiConfig(**base)


def client(port: int, sleeps: Sleeps | None = None, **kw: Any) -> AmiClient:
    return AmiClient(
        config(port, **kw), rng=random.Random(7), sleep=sleeps or Sleeps(), clock=lambda: 0.0
    )


async def until(cond: Callable[[], bool], timeout: float = 2.0) -> None:
    """Poll ``cond`` (state changes come from the network, not from one event)."""
    async with asyncio.timeout(timeout):
        while not cond():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# -- config ------------------------------------------------------------------------------


def test_config_hides_the_secret_and_refuses_line_breaks() -> None:
    cfg = config(5038)
    assert SECRET not in repr(cfg) and cfg.address == "127.0.0.1:5038"
    with pytest.raises(ValueError, match="line break"):
        config(5038, secret="a\r\nAction: Originate")
    with pytest.raises(ValueError, match="port"):
        config(0)
    with pytest.raises(ValueError, match="action_timeout"):
        config(5038, action_timeout=0)


def test_panoramisk_log_lines_never_show_the_secret(caplog: pytest.LogCaptureFixture) -> None:
    from callflow.ami.manager import _RedactingLog

    wire = _RedactingLog(logging.getLogger("callflow.ami.wire"), SECRET)
    with caplog.at_level(logging.DEBUG, "callflow.ami.wire"):
        try:
            raise OSError("socket gone")
        except OSError:
            # What panoramisk's AMIProtocol.send logs when a write fails.
            wire.exception("Fail to send {!r}".format({"Action": "Login", "Secret": SECRET}))
        wire.debug("message interpreted: %r", {"Secret": SECRET})
    assert SECRET not in caplog.text and caplog.text.count("********") == 2


def test_errors_are_telephony_errors() -> None:
    for cls in (AmiNotConnected, AmiTimeout, AmiLoginError, AmiActionError):
        assert issubclass(cls, AmiError) and issubclass(cls, TelephonyError)


# -- login and actions -------------------------------------------------------------------


async def test_login_then_actions_then_close(fake: FakeAmi) -> None:
    ami = client(fake.port)
    assert not ami.connected
    await ami.connect()
    assert ami.connected and ami.reconnects == 0
    assert fake.logins == [(USER, SECRET)]
    assert fake.actions[0]["Events"] == "system"
    pong = await ami.action("Ping")
    assert pong.get("Ping") == "Pong" and pong.ok
    with pytest.raises(AmiActionError, match="Invalid/unknown command") as err:
        await ami.action("NoSuchThing", {"Key": "v"})
    assert err.value.message.startswith("Invalid/unknown command")
    assert SECRET not in repr(ami)
    await ami.close()
    assert not ami.connected and ami.closed
    assert fake.count("Logoff") == 1
    with pytest.raises(AmiNotConnected):
        await ami.action("Ping")


async def test_login_refused_is_a_clear_error_without_the_secret(
    fake: FakeAmi, caplog: pytest.LogCaptureFixture
) -> None:
    fake.secret = "something-else"
    ami = client(fake.port)
    with caplog.at_level(logging.DEBUG), pytest.raises(AmiLoginError) as err:
        await ami.connect()
    text = str(err.value)
    assert "login refused for user 'callflow'" in text and "Authentication failed" in text
    assert err.value.message == "Authentication failed"
    assert not ami.connected
    assert fake.logins == [(USER, SECRET)]  # it was sent, to Asterisk only
    assert SECRET not in caplog.text and SECRET not in text
    await ami.close()


async def test_run_retries_a_refused_login_slowly_then_gets_in(
    fake: FakeAmi, caplog: pytest.LogCaptureFixture
) -> None:
    fake.secret = "rotated"
    sleeps = Sleeps()
    ami = client(fake.port, sleeps, login_retry=0.04)
    with caplog.at_level(logging.DEBUG):
        task = asyncio.create_task(ami.run())
        await until(lambda: len(fake.logins) >= 2)
        assert not ami.connected and ami.last_error and "refused" in ami.last_error
        assert all(d >= 0.04 for d in sleeps.delays)  # never faster than login_retry
        fake.secret = SECRET  # the admin fixes manager.conf
        await until(lambda: ami.connected)
    assert ami.last_error is None
    assert "check [ami] username and secret" in caplog.text
    assert any(r.levelno == logging.ERROR for r in caplog.records)
    assert SECRET not in caplog.text
    await ami.close()
    await asyncio.wait_for(task, 1)


async def test_cannot_connect_is_not_connected(fake: FakeAmi) -> None:
    ami = client(free_port())
    with pytest.raises(AmiNotConnected, match="cannot connect"):
        await ami.connect()
    await ami.close()


async def test_an_unanswered_action_times_out(fake: FakeAmi) -> None:
    fake.silent = {"ping"}
    ami = client(fake.port)
    await ami.connect()
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(AmiTimeout, match=r"no answer .* within 0\.05 s"):
        await ami.action("Ping", timeout=0.05)
    # Far below the 10 s default timeout, with room for a loaded machine.
    assert loop.time() - start < 5.0
    with pytest.raises(AmiTimeout):
        await ami.action_list("Ping", timeout=0.05)
    assert ami.connected  # a slow answer is not a dead connection
    fake.silent = set()
    assert (await ami.action("Ping")).ok
    await ami.close()


async def test_a_listing_is_bounded_too(fake: FakeAmi) -> None:
    # The listing starts but its ContactListComplete never comes.
    fake.contacts = fake.contacts.split("Event: ContactListComplete")[0]
    ami = client(fake.port, action_timeout=0.1)
    await ami.connect()
    with pytest.raises(AmiTimeout):
        await ami.action_list("PJSIPShowContacts")
    await ami.close()


async def test_an_action_in_flight_fails_at_once_when_the_connection_drops(
    fake: FakeAmi,
) -> None:
    fake.silent = {"pjsipshowcontacts"}
    ami = client(fake.port, action_timeout=5.0)
    await ami.connect()
    pending = asyncio.create_task(ami.action_list("PJSIPShowContacts"))
    await until(lambda: fake.count("PJSIPShowContacts") == 1)
    await fake.drop()
    with pytest.raises(AmiNotConnected, match="connection lost"):
        await asyncio.wait_for(pending, 1.0)  # not after the 5 s timeout
    assert not ami.connected
    with pytest.raises(AmiNotConnected, match="not connected"):
        await ami.action("Ping")
    await ami.close()


async def test_events_reach_their_callbacks_in_order(
    fake: FakeAmi, caplog: pytest.LogCaptureFixture
) -> None:
    ami = client(fake.port)
    seen: list[str] = []
    every: list[str] = []

    def broken(event: AmiMessage) -> None:
        raise RuntimeError("boom")

    ami.on_event("contactstatus", broken)
    ami.on_event("ContactStatus", lambda e: seen.append(e.get("ContactStatus")))
    ami.on_event("*", lambda e: every.append(e.name))
    await ami.connect()
    await fake.push(trace("contact_status.ami"))
    await until(lambda: len(seen) == 6)
    assert seen == [
        "Reachable",
        "Unreachable",
        "Removed",
        "Reachable",
        "Unreachable",
        "Unreachable",
    ]
    assert every[0] == "FullyBooted" and "PeerStatus" in every
    assert "handler of ContactStatus events failed" in caplog.text
    await ami.close()


# -- reconnection ------------------------------------------------------------------------


async def test_run_reconnects_when_asterisk_closes_the_connection(fake: FakeAmi) -> None:
    sleeps = Sleeps()
    ami = client(fake.port, sleeps)
    task = asyncio.create_task(ami.run())
    await until(lambda: ami.connected)
    assert ami.reconnects == 0
    await fake.drop()
    await until(lambda: not ami.connected)
    await until(lambda: ami.connected)
    assert ami.reconnects == 1 and fake.connections == 2
    assert sleeps.delays and all(0 < d <= 0.05 for d in sleeps.delays)
    await ami.close()
    await asyncio.wait_for(task, 1)
    assert not ami.connected


async def test_run_survives_an_asterisk_restart(fake: FakeAmi) -> None:
    ami = client(fake.port)
    task = asyncio.create_task(ami.run())
    await until(lambda: ami.connected)
    port = fake.port
    await fake.push(trace("shutdown.ami"))  # Asterisk says it restarts, then goes away
    await until(lambda: not ami.connected)
    await fake.stop()
    await asyncio.sleep(0.05)  # connection refused meanwhile: the client keeps trying
    assert not ami.connected and ami.last_error and "cannot connect" in ami.last_error
    await fake.start(port)
    await until(lambda: ami.connected)
    assert ami.reconnects == 1
    await ami.close()
    await asyncio.wait_for(task, 1)


async def test_an_unanswered_ping_drops_the_session_and_reconnects(fake: FakeAmi) -> None:
    ami = client(fake.port, ping_interval=0.01, action_timeout=0.05)
    task = asyncio.create_task(ami.run())
    await until(lambda: ami.connected)
    await until(lambda: fake.count("Ping") >= 2)  # answered pings keep the session
    assert ami.reconnects == 0
    fake.silent = {"ping"}  # a dead peer: the TCP connection stays, nothing answers
    await until(lambda: ami.reconnects >= 1)
    await ami.close()
    await asyncio.wait_for(task, 1)


async def test_close_stops_run_while_it_waits_to_reconnect() -> None:
    sleeps = Sleeps()
    ami = client(free_port(), sleeps)
    task = asyncio.create_task(ami.run())
    await until(lambda: len(sleeps.delays) >= 2)
    await ami.close()
    await asyncio.wait_for(task, 1)
    with pytest.raises(AmiNotConnected, match="closed"):
        await ami.connect()


# -- trunk health over AMI ---------------------------------------------------------------


@pytest.fixture
def health() -> TrunkHealth:
    return TrunkHealth(["trunk-a", "trunk-b", "trunk-c"])


async def test_monitor_lists_contacts_on_login_then_follows_events(
    fake: FakeAmi, health: TrunkHealth
) -> None:
    ami = client(fake.port)
    monitor = AmiTrunkMonitor(ami, health)
    task = asyncio.create_task(ami.run())
    await until(lambda: monitor.resyncs == 1)
    assert health.live
    assert [health.state(t) for t in health.trunks] == [R, R, U]
    assert health.aors("trunk-c") == {"trunk-c-sbc"}  # from PJSIPShowEndpoints
    await fake.push(contact_status(TRUNK_A_URI, "Unreachable", "trunk-a"))
    await until(lambda: health.state("trunk-a") is X)
    await ami.close()
    await asyncio.wait_for(task, 1)


async def test_reconnection_resyncs_and_the_feed_goes_stale_meanwhile(
    fake: FakeAmi, health: TrunkHealth
) -> None:
    ami = client(fake.port)
    monitor = AmiTrunkMonitor(ami, health)
    task = asyncio.create_task(ami.run())
    await until(lambda: monitor.resyncs == 1)
    # While the session is down, trunk-a dies: the event is lost with the session.
    fake.contacts = fake.contacts.replace(
        "Status: Reachable\r\nRoundtripUsec: 23817", "Status: Unreachable\r\nRoundtripUsec: N/A"
    )
    await fake.drop()
    await until(lambda: not ami.connected)
    assert not health.live and health.state("trunk-a") is R  # last known, flagged stale
    await until(lambda: monitor.resyncs == 2)
    assert ami.connected and ami.reconnects == 1 and health.live
    assert fake.count("PJSIPShowContacts") == 2
    assert health.state("trunk-a") is X
    await ami.close()
    await asyncio.wait_for(task, 1)


async def test_events_around_a_listing_are_ordered_against_it(
    fake: FakeAmi, health: TrunkHealth
) -> None:
    # Asterisk wrote an older event before the listing (the listing supersedes it) and a
    # newer one right after it, in the same TCP segment as its end.
    fake.before_listing = contact_status(TRUNK_A_URI, "Unreachable", "trunk-a")
    fake.after_listing = contact_status(
        "sip:sbc1.operateur-b.example:5060", "Reachable", "trunk-b", "38121"
    )
    ami = client(fake.port)
    monitor = AmiTrunkMonitor(ami, health)
    await ami.connect()
    await until(lambda: monitor.resyncs == 1)
    assert health.state("trunk-a") is R  # the listing's state, not the older event's
    assert health.rtt_ms("trunk-b") == 38.121  # the newer event applied after the listing
    await ami.close()


async def test_a_listing_followed_by_a_drop_is_kept_but_not_live(
    fake: FakeAmi, health: TrunkHealth
) -> None:
    fake.close_after_listing = True
    ami = client(fake.port)
    monitor = AmiTrunkMonitor(ami, health)
    await ami.connect()
    await until(lambda: monitor.resyncs == 1)
    assert not ami.connected
    assert health.state("trunk-a") is R and not health.live
    await ami.close()


async def test_no_contact_at_all_is_an_empty_listing(fake: FakeAmi, health: TrunkHealth) -> None:
    fake.contacts = trace("no_contacts.ami")
    ami = client(fake.port)
    await ami.connect()
    contacts, seq = await list_contacts(ami)
    assert contacts == [] and seq > 0
    await ami.close()


async def test_a_failed_listing_is_retried_at_fully_booted(
    fake: FakeAmi, health: TrunkHealth, caplog: pytest.LogCaptureFixture
) -> None:
    fake.silent = {"pjsipshowendpoints"}  # e.g. res_pjsip not loaded yet: no answer
    ami = client(fake.port, action_timeout=0.2)  # the silent listing's wait
    monitor = AmiTrunkMonitor(ami, health)
    await ami.connect()
    await until(lambda: "cannot list contacts" in caplog.text)
    assert monitor.resyncs == 0 and not health.live
    # The answered listing gets the usual time: 50 ms once expired on a loaded machine.
    ami.config = dataclasses.replace(ami.config, action_timeout=5.0)
    fake.silent = set()
    await fake.push(block("Event: FullyBooted", "Privilege: system,all", "Status: Fully Booted"))
    await until(lambda: monitor.resyncs == 1)
    assert health.live
    await ami.close()


async def test_a_trunk_unknown_to_asterisk_is_reported(
    fake: FakeAmi, caplog: pytest.LogCaptureFixture
) -> None:
    health = TrunkHealth(["trunk-a", "trunk-typo"])
    ami = client(fake.port)
    monitor = AmiTrunkMonitor(ami, health)
    await ami.connect()
    await until(lambda: monitor.resyncs == 1)
    assert "trunk trunk-typo: no such PJSIP endpoint" in caplog.text
    monitor.watch(["trunk-a", "trunk-b"])
    await until(lambda: monitor.resyncs == 2)
    assert health.trunks == ("trunk-a", "trunk-b") and health.state("trunk-b") is R
    await ami.close()


# -- callflow trunks --live, against the fake server in a thread --------------------------


@pytest.fixture
def threaded_fake() -> Iterator[FakeAmi]:
    server = FakeAmi()
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(2)
    yield server
    asyncio.run_coroutine_threadsafe(server.stop(), loop).result(2)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(2)
    loop.close()


def test_cli_live_shows_what_asterisk_says(
    threaded_fake: FakeAmi,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from callflow.cli import main

    monkeypatch.setenv("CALLFLOW_AMI_SECRET", SECRET)
    monkeypatch.setenv("CALLFLOW_AMI_PORT", str(threaded_fake.port))
    code = main(["trunks", "--live", "--state-dir", str(tmp_path), "trunk-a", "trunk-b", "trunk-c"])
    out = capsys.readouterr().out
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].split() == ["TRUNK", "STATE", "RTT", "LAST", "CHANGE", "FAILURES", "BREAKER"]
    assert lines[1].split() == ["trunk-a", "reachable", "23.8", "ms", "unknown", "-", "-"]
    assert lines[2].split()[:2] == ["trunk-b", "reachable"]
    assert lines[3].split()[:3] == ["trunk-c", "unknown", "-"]
    assert "live from Asterisk at 127.0.0.1:" in out
    assert threaded_fake.count("Logoff") == 1

    code = main(["trunks", "--live", "--json", "trunk-a"])
    import json

    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["source"] == "live"
    assert doc["trunks"] == [
        {
            "name": "trunk-a",
            "state": "reachable",
            "rtt_ms": 23.817,
            "last_change": None,
            "consecutive_failures": None,
            "breaker_open": None,
        }
    ]


def test_cli_without_snapshot_falls_back_to_ami(
    threaded_fake: FakeAmi,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from callflow.cli import main

    monkeypatch.setenv("CALLFLOW_AMI_SECRET", SECRET)
    monkeypatch.setenv("CALLFLOW_AMI_PORT", str(threaded_fake.port))
    code = main(["trunks", "--state-dir", str(tmp_path), "trunk-b"])
    captured = capsys.readouterr()
    assert code == 0
    assert "no trunk snapshot at" in captured.err and "what Asterisk says over AMI" in captured.err
    assert captured.out.splitlines()[1].split()[:2] == ["trunk-b", "reachable"]


def test_cli_login_refused_says_so(
    threaded_fake: FakeAmi,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from callflow.cli import main

    monkeypatch.setenv("CALLFLOW_AMI_SECRET", "wrong-secret")
    monkeypatch.setenv("CALLFLOW_AMI_PORT", str(threaded_fake.port))
    code = main(["trunks", "--live", "trunk-a"])
    err = capsys.readouterr().err
    assert code == 1
    assert "login refused for user 'callflow'" in err and "wrong-secret" not in err


async def test_a_trunk_fixed_contact_is_read_from_its_endpoint_details(
    fake: FakeAmi, health: TrunkHealth
) -> None:
    # Asterisk 22 answers "No Contacts found" to PJSIPShowContacts for contacts written in
    # an AOR (recorded from a real one): their qualify state is in PJSIPShowEndpoint.
    fake.contacts = trace("no_contacts.ami")
    fake.endpoint_details = {"trunk-a": trace("pjsip_show_endpoint_trunk_a.ami")}
    ami = client(fake.port)
    monitor = AmiTrunkMonitor(ami, health)
    await ami.connect()
    await until(lambda: monitor.resyncs == 1)
    assert health.state("trunk-a") is R
    assert health.rtt_ms("trunk-a") == 0.327
    assert fake.count("PJSIPShowEndpoint") >= 1
    await ami.close()
