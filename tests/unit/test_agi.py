"""FastAGI: the bounded protocol, the AGI Call and the listener, over a fake Asterisk peer."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from callflow.agi import AgiCall, AgiConfig, AgiServer
from callflow.agi.protocol import (
    MAX_LINE,
    AgiClosed,
    AgiDead,
    AgiError,
    AgiProtocolError,
    AgiSession,
    AgiTimeout,
    parse_reply,
    quote,
    read_request,
)
from callflow.flow.engine import Engine
from callflow.flow.live import LiveFlows
from callflow.flow.services import Services
from callflow.telephony import Driver
from tests.support.fake_agi import Dialed, FakeAgiAsterisk
from tests.support.flows import write_flow
from tests.support.observer import RecordingObserver
from tests.support.polling import wait_until

TUESDAY_10H = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)

FLOW = """
version: 1
flow: agi
numbers: ["100"]
timezone: Europe/Paris
fallback: desk
calendars:
  always:
    weekly: {mon-sun: ["00:00-24:00"]}
destinations:
  desk: {endpoint: PJSIP/accueil, ring: 6s}
  outside: {number: "0180000000", route: outbound, ring: 6s}
  dr-a: {endpoint: PJSIP/dr-a, ring: 4s}
  dr-b: {endpoint: PJSIP/dr-b, ring: 4s}
routes:
  outbound: [trunk-a, trunk-b]
start: welcome
steps:
  welcome:
    play: [beep]
    barge_in: true
    next: menu
  menu:
    menu:
      prompt: vm-intro
      options: {"1": desk-call, "2": out, "3": oncall}
      timeout: 3s
      attempts: 2
    failed: desk-call
  desk-call:
    dial: desk
  out:
    forward: outside
  oncall:
    escalate:
      tier: 2
      ring_in_turn: [dr-a, dr-b]
      confirm: "1"
      callee_message: beep
      confirm_timeout: 4s
    failed: bye
  bye:
    hangup: {}
"""

OTHER = FLOW.replace("flow: agi", "flow: other").replace('numbers: ["100"]', 'numbers: ["200"]')


@pytest.fixture
def log() -> RecordingObserver:
    return RecordingObserver()


@pytest.fixture
async def server(tmp_path: Path, log: RecordingObserver) -> AsyncIterator[AgiServer]:
    write_flow(tmp_path / "flows", FLOW, "agi.yaml")
    write_flow(tmp_path / "flows", OTHER, "other.yaml")
    flows = LiveFlows(tmp_path / "flows", "agi")
    engine = Engine(Services(clock=lambda: TUESDAY_10H, observer=log))
    config = AgiConfig(port=0, request_timeout=2.0, command_timeout=2.0, stop_grace=1.0)
    async with AgiServer(engine, flows, config) as srv:
        yield srv


def peer(server: AgiServer, **kw: object) -> FakeAgiAsterisk:
    assert server.port is not None
    return FakeAgiAsterisk(server.port, **kw)  # type: ignore[arg-type]


async def call(server: AgiServer, **kw: object) -> FakeAgiAsterisk:
    p = peer(server, **kw)
    await asyncio.wait_for(p.run(), 20)
    return p


# -- the protocol ------------------------------------------------------------------------


def test_replies_are_parsed_with_their_data() -> None:
    r = parse_reply("200 result=1 (PJSIP/accueil (desk)) endpos=12")
    assert (r.code, r.result, r.data, r.extra) == (200, 1, "PJSIP/accueil (desk)", "endpos=12")
    assert parse_reply("200 result=49 endpos=8000").digit == "1"
    assert parse_reply("200 result=0").digit == ""
    assert parse_reply("510 Invalid or unknown command").code == 510
    with pytest.raises(AgiProtocolError):
        parse_reply("hello there")
    with pytest.raises(AgiProtocolError):
        parse_reply("200 nothing")


def test_an_argument_cannot_smuggle_a_second_command() -> None:
    assert quote("custom/welcome") == '"custom/welcome"'
    for bad in ('x"\nHANGUP', "a\nb", 'say "hi"', "back\\slash", "nul\x00"):
        with pytest.raises(AgiError):
            quote(bad)


def reader_of(data: bytes, limit: int = MAX_LINE) -> asyncio.StreamReader:
    r = asyncio.StreamReader(limit=limit)
    r.feed_data(data)
    r.feed_eof()
    return r


async def test_request_headers_are_read_and_garbage_is_refused() -> None:
    req = await read_request(
        reader_of(b"agi_network_script: bench\nagi_extension: 100\nagi_callerid: unknown\n\n"), 1
    )
    assert (req.script, req.extension, req.caller) == ("bench", "100", "")
    for garbage in (
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\n",
        b"agi_network: yes\n",  # ends before the empty line
        b"agi_x: " + b"a" * (MAX_LINE + 10) + b"\n\n",
        b"agi_x: \xff\xfe\n\n",
        b"".join(b"agi_h%d: v\n" % i for i in range(100)) + b"\n",
    ):
        with pytest.raises(AgiError):
            await read_request(reader_of(garbage), 1)


class _Sink:
    """A StreamWriter stand-in: what the session sends."""

    def __init__(self) -> None:
        self.sent = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        self.sent += data

    async def drain(self) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    async def wait_closed(self) -> None:
        pass


def session_of(data: bytes, timeout: float = 1.0) -> tuple[AgiSession, _Sink]:
    sink = _Sink()
    return AgiSession(reader_of(data), sink, command_timeout=timeout), sink  # type: ignore[arg-type]


async def test_a_hangup_line_before_the_reply_is_noted() -> None:
    s, sink = session_of(b"HANGUP\n200 result=-1 endpos=0\n")
    reply = await s.command('STREAM FILE "beep" ""')
    assert reply.result == -1 and s.hung_up
    assert sink.sent == b'STREAM FILE "beep" ""\n'


async def test_usage_blocks_and_dead_channels_are_errors_not_garbage() -> None:
    s, _ = session_of(
        b"520-Invalid command syntax.  Proper usage follows:\nUsage: x\n520 End\n"
        b"200 result=0\n511 Command Not Permitted on a dead channel\n"
    )
    with pytest.raises(AgiError, match="invalid command syntax"):
        await s.command("ANSWER 1")
    assert (await s.command("ANSWER")).result == 0  # still in step after the block
    with pytest.raises(AgiDead):
        await s.command("ANSWER")
    assert s.hung_up


async def test_a_peer_that_never_replies_ends_the_session() -> None:
    r = asyncio.StreamReader(limit=MAX_LINE)  # no data, no EOF: Asterisk stalled
    s = AgiSession(r, _Sink(), command_timeout=0.05)  # type: ignore[arg-type]
    with pytest.raises(AgiTimeout):
        await s.command("ANSWER")
    assert s.closed
    with pytest.raises(AgiClosed):
        await s.command("ANSWER")


async def test_a_connection_closed_mid_reply_is_closed() -> None:
    s, _ = session_of(b"200 res")
    with pytest.raises(AgiClosed):
        await s.command("ANSWER")


async def test_a_command_with_a_newline_is_never_sent() -> None:
    s, sink = session_of(b"")
    with pytest.raises(AgiError):
        await s.command("SET VARIABLE X 1\nHANGUP")
    assert sink.sent == b""


# -- the AGI call through the engine -----------------------------------------------------


async def test_menu_choice_reaches_the_desk(server: AgiServer, log: RecordingObserver) -> None:
    p = await call(server, keys=["", "1"], dials=[Dialed("ANSWER", ring_ms=2500)])
    assert log.path() == [
        ("welcome", "play", "played"),
        ("menu", "menu", "pressed"),
        ("desk-call", "attempt", "answer"),
        ("desk-call", "dial", "answered"),
    ]
    info, outcome = log.ended[0]
    assert info.driver is Driver.AGI and info.call_id == "1733200000.1"
    assert (info.flow, info.dialed, info.caller) == ("agi", "100", "0612345678")
    assert (outcome.kind, outcome.destination) == ("answered", "desk")
    assert p.dials_made == ['EXEC Dial "PJSIP/accueil,6,gm"']
    assert p.commands[0] == "ANSWER"
    assert p.commands[1] == 'STREAM FILE "beep" "0123456789*#"'
    assert p.commands[2] == 'GET OPTION "vm-intro" "0123456789*#" 3000'
    assert p.commands[-1] == "HANGUP" and p.closed_by_daemon


async def test_silence_twice_then_the_failed_branch(
    server: AgiServer, log: RecordingObserver
) -> None:
    p = await call(server, dials=[Dialed("NOANSWER")])
    menu = [r for r in log.steps if r.step == "menu"]
    assert [(r.result.value, r.attempt) for r in menu] == [("failed", 2)]
    assert sum(c.startswith("GET OPTION") for c in p.commands) == 2
    assert sum(c.startswith("WAIT FOR DIGIT") for c in p.commands) == 0
    # The desk did not answer and the flow has no branch: the fallback rings it again.
    assert [r.kind.value for r in log.steps][-1] == "fallback"
    assert log.ended[0][1].kind == "failed"
    assert p.context == ("callflow-fallback", "s")  # the dialplan fallback takes the caller


async def test_trunk_failover_over_dial(server: AgiServer, log: RecordingObserver) -> None:
    p = await call(server, keys=["", "2"], dials=[Dialed("CONGESTION"), Dialed("ANSWER")])
    attempts = [(r.trunk, r.result.value) for r in log.steps if r.kind == "attempt"]
    assert attempts == [("trunk-a", "congestion"), ("trunk-b", "answer")]
    assert p.dials_made == [
        'EXEC Dial "PJSIP/0180000000@trunk-a,6,gm"',
        'EXEC Dial "PJSIP/0180000000@trunk-b,6,gm"',
    ]
    assert (log.ended[0][1].kind, log.ended[0][1].trunk) == ("forwarded", "trunk-b")


async def test_a_busy_callee_is_not_a_trunk_fault(
    server: AgiServer, log: RecordingObserver
) -> None:
    p = await call(server, keys=["", "2"], dials=[Dialed("BUSY"), Dialed("ANSWER")])
    assert len([d for d in p.dials_made if "@trunk" in d]) == 1
    out = [(r.kind.value, r.result.value) for r in log.steps if r.step == "out"]
    assert out[:2] == [("attempt", "busy"), ("forward", "busy")]


async def test_on_call_confirmation_declined_then_accepted(
    server: AgiServer, log: RecordingObserver
) -> None:
    p = await call(
        server, keys=["", "3"], dials=[Dialed("ANSWER", accepted=False), Dialed("ANSWER")]
    )
    attempts = [(r.destination, r.result.value) for r in log.steps if r.kind == "attempt"]
    assert attempts == [("dr-a", "declined"), ("dr-b", "answer")]
    assert p.dials_made[0] == 'EXEC Dial "PJSIP/dr-a,4,gmU(callflow-confirm^1^beep^4)"'
    escalate = next(r for r in log.steps if r.kind == "escalate")
    assert (escalate.result.value, escalate.destination) == ("accepted", "dr-b")


async def test_caller_hanging_up_mid_prompt_is_abandoned(
    server: AgiServer, log: RecordingObserver
) -> None:
    p = await call(server, hangup_on="GET OPTION")
    assert log.path()[-1] == ("menu", "menu", "abandoned")
    assert log.ended[0][1].kind == "abandoned"
    # Only a check that the channel is dead follows, then the session is ended.
    assert p.commands[-2].startswith("GET OPTION") and p.commands[-1] == "CHANNEL STATUS"
    assert p.closed_by_daemon and not p.context[0]


async def test_a_conversation_the_caller_ends_is_answered_not_abandoned(
    server: AgiServer, log: RecordingObserver
) -> None:
    p = await call(server, keys=["", "1"], dials=[Dialed("ANSWER", caller_hangs_up=True)])
    assert log.path()[-2:] == [
        ("desk-call", "attempt", "answer"),
        ("desk-call", "dial", "answered"),
    ]
    assert log.ended[0][1].kind == "answered"
    assert "HANGUP" not in p.commands  # nothing asked of the dead channel but its variables


async def test_asterisk_gone_mid_command_is_a_lost_call(
    server: AgiServer, log: RecordingObserver
) -> None:
    await call(server, keys=["", "1"], drop_on="EXEC Dial")
    await wait_until(lambda: bool(log.ended), 10)
    assert log.ended[0][1].kind == "failed"
    assert "lost" in log.ended[0][1].detail
    # The listener survives: the next call is served.
    await call(server, uniqueid="1733200000.2", keys=["", "1"], dials=[Dialed("ANSWER")])
    await wait_until(lambda: len(log.ended) == 2, 10)
    assert log.ended[1][1].kind == "answered"


async def test_the_request_names_the_flow_or_the_number_chooses(
    server: AgiServer, log: RecordingObserver
) -> None:
    await call(server, script="other", extension="100", keys=["", "1"], dials=[Dialed()])
    await call(server, script="", extension="s", arg="200", keys=["", "1"], dials=[Dialed()])
    await call(server, script="nosuch", extension="100", keys=["", "1"], dials=[Dialed()])
    assert [(i.flow, i.dialed) for i, _ in log.ended] == [
        ("other", "100"),
        ("other", "200"),
        ("agi", "100"),
    ]


async def test_voicemail_and_variables_go_through_the_dialplan() -> None:
    s, sink = session_of(b"200 result=1 (1)\n" + b"200 result=1\n" * 6)
    c = AgiCall(
        s, await read_request(reader_of(b"agi_uniqueid: 1.1\n\n"), 1), dialed="100", call_id="1.1"
    )
    assert await c.voicemail("200@default")
    assert sink.sent.decode().splitlines() == [
        'GET VARIABLE "VM_INFO(200@default,exists)"',  # the mailbox is there
        'SET VARIABLE "CALLFLOW_VOICEMAIL_BOX" "200@default"',
        'SET VARIABLE "CHANNEL(hangup_handler_push)" "callflow-voicemail-status,s,1"',
        'SET CONTEXT "callflow-voicemail"',
        'SET EXTENSION "s"',
        "SET PRIORITY 1",
    ]
    await c.hangup()  # handed to the dialplan: not ours to hang up
    assert len(sink.sent.decode().splitlines()) == 6


@pytest.mark.parametrize("answer", [b"200 result=1 (0)\n", b"200 result=0\n"])
async def test_voicemail_without_the_mailbox_or_voicemail_keeps_the_caller(
    answer: bytes,
) -> None:
    # VM_INFO() says no such mailbox (0), or fails (result=0: no voicemail module runs).
    s, sink = session_of(answer)
    c = AgiCall(
        s, await read_request(reader_of(b"agi_uniqueid: 1.1\n\n"), 1), dialed="100", call_id="1.1"
    )
    assert not await c.voicemail("201")
    assert sink.sent.decode().splitlines() == ['GET VARIABLE "VM_INFO(201,exists)"']


# -- the listener ------------------------------------------------------------------------


async def test_an_address_not_allowed_is_refused_before_a_byte(
    tmp_path: Path, log: RecordingObserver
) -> None:
    write_flow(tmp_path / "flows", FLOW, "agi.yaml")
    engine = Engine(Services(clock=lambda: TUESDAY_10H, observer=log))
    only = (ipaddress.ip_network("192.0.2.0/24"),)
    config = AgiConfig(port=0, allow=only, request_timeout=2.0, command_timeout=2.0)
    async with AgiServer(engine, LiveFlows(tmp_path / "flows", None), config) as srv:
        p = peer(srv, keys=["", "1"])
        await asyncio.wait_for(p.run(), 10)
        assert p.commands == [] and p.closed_by_daemon
        assert srv.refused == 1
    assert log.started == []


async def test_garbage_and_silent_peers_cost_their_own_session(
    server: AgiServer, log: RecordingObserver
) -> None:
    assert server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET / HTTP/1.1\r\n\r\n")
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed on us
    writer.close()
    silent_r, silent_w = await asyncio.open_connection("127.0.0.1", server.port)
    _half_r, half_w = await asyncio.open_connection("127.0.0.1", server.port)
    half_w.write(b"agi_network: yes\n")
    half_w.close()  # disconnects in the middle of its request
    # Meanwhile a real call is served.
    await call(server, keys=["", "1"], dials=[Dialed()])
    assert log.ended[0][1].kind == "answered"
    assert await asyncio.wait_for(silent_r.read(), 10) == b""  # the request timeout
    silent_w.close()
    await wait_until(lambda: server.rejected == 3, 10)
    assert len(log.started) == 1


async def test_stopping_stops_listening_and_returns_calls_to_the_dialplan(
    tmp_path: Path, log: RecordingObserver
) -> None:
    write_flow(tmp_path / "flows", FLOW, "agi.yaml")
    engine = Engine(Services(clock=lambda: TUESDAY_10H, observer=log))
    config = AgiConfig(port=0, request_timeout=2.0, command_timeout=30.0, stop_grace=0.1)
    srv = AgiServer(engine, LiveFlows(tmp_path / "flows", None), config)
    await srv.__aenter__()
    assert srv.port is not None
    port = srv.port
    # A caller who waits in the menu (Asterisk never answers GET OPTION) when we stop.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(FakeAgiAsterisk(port).headers())
    await wait_until(lambda: bool(log.started), 10)
    await srv.stop(0.1)
    rest = await asyncio.wait_for(reader.read(), 10)
    assert rest.startswith(b"ANSWER\n")  # then the session was closed: AGI() returns
    assert log.ended[0][1].kind == "failed" and "stopped" in log.ended[0][1].detail
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
    writer.close()


async def test_an_overloaded_daemon_sheds_a_new_agi_call_to_the_dialplan(
    tmp_path: Path, log: RecordingObserver
) -> None:
    write_flow(tmp_path / "flows", FLOW, "agi.yaml")
    write_flow(
        tmp_path / "flows",
        OTHER.replace("version: 1", "version: 1\nnever_shed: true"),
        "other.yaml",
    )
    engine = Engine(Services(clock=lambda: TUESDAY_10H, observer=log))
    asked: list[bool] = []

    def admit(never_shed: bool) -> str | None:
        asked.append(never_shed)
        return None if never_shed else "overload (loop_lag): event-loop lag 0.5 s, budget 0.25 s"

    config = AgiConfig(port=0, request_timeout=2.0, command_timeout=2.0)
    async with AgiServer(engine, LiveFlows(tmp_path / "flows", "agi"), config, admit=admit) as srv:
        shed = await call(srv, keys=["", "1"], dials=[Dialed()])
        served = await call(srv, uniqueid="2.2", script="other", keys=["", "1"], dials=[Dialed()])
    assert asked == [False, True]
    assert [(i.flow, o.kind.value) for i, o in log.ended] == [
        ("agi", "shed"),
        ("other", "answered"),
    ]
    assert "loop_lag" in log.ended[0][1].detail and log.steps[0].call_id == "2.2"
    assert shed.commands == [
        'SET CONTEXT "callflow-fallback"',
        'SET EXTENSION "s"',
        "SET PRIORITY 1",
    ]
    assert served.dials_made


async def test_a_command_asterisk_never_answers_is_a_pbx_link_failure(
    server: AgiServer, log: RecordingObserver
) -> None:
    assert server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(FakeAgiAsterisk(server.port).headers())
    assert await asyncio.wait_for(reader.readline(), 10) == b"ANSWER\n"  # never answered
    # command_timeout (2 s here) later the session ends: AGI() returns to the dialplan.
    assert await asyncio.wait_for(reader.read(), 20) == b""
    await wait_until(lambda: bool(log.ended), 10)
    outcome = log.ended[0][1]
    assert outcome.kind == "failed" and "PBX link failed (timeout)" in outcome.detail
    assert log.path() == [("welcome", "play", "pbx timeout")]
    writer.close()
