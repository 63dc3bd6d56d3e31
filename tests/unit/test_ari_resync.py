"""Events lost while the ARI events websocket reconnects: after the reconnection every call
asks Asterisk about what it waits for, and a prompt's end is never waited for forever.
The call service, the engine and a real AriCall over the fake Asterisk, on a virtual clock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from callflow.ari.call import PLAYBACK_LIMIT, AriCall
from callflow.ari.channels import ChannelRegistry
from callflow.ari.service import CallService
from callflow.flow.engine import Engine
from callflow.flow.events import Outcome, OutcomeKind, StepKind, StepResult
from callflow.flow.live import LiveFlows
from callflow.flow.services import Services
from callflow.telephony import DialStatus
from tests.support.fake_asterisk import ANSWER, BUSY, FakeAsterisk, client_for, route_to
from tests.support.flows import write_flow
from tests.support.observer import RecordingObserver
from tests.support.polling import wait_until

pytestmark = pytest.mark.looptime

CALLER = "caller-1"
TUESDAY_10H = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
LIMIT = 3600.0  # virtual seconds: a call waiting forever fails the test instead of hanging it

FLOW = """
version: 1
flow: t
numbers: ["100"]
timezone: Europe/Paris
fallback: desk
destinations:
  desk: {endpoint: PJSIP/desk}
  doctor: {endpoint: PJSIP/doctor}
start: welcome
steps:
  welcome:
    play: [custom/welcome]
    next: talk
  talk:
    dial: doctor
    failed: bye
  bye:
    hangup: {announce: custom/goodbye}
"""


class Practice:
    """The call service over a fake Asterisk whose events it routes, as in the daemon."""

    def __init__(self, tmp_path: Path, pbx: FakeAsterisk) -> None:
        write_flow(tmp_path, FLOW, "t.yaml")
        self.pbx = pbx
        self.log = RecordingObserver()
        services = Services(clock=lambda: TUESDAY_10H, observer=self.log)
        self.service = CallService(client_for(pbx), Engine(services), LiveFlows(tmp_path, None))
        pbx.sink = self.service.dispatch

    def call(self) -> asyncio.Task[Outcome]:
        channel = self.pbx.add_caller(CALLER)
        self.pbx.sink({"type": "StasisStart", "args": ["100"], "channel": channel})
        return self.service.calls[CALLER][1]

    async def outcome(self, task: asyncio.Task[Outcome]) -> Outcome:
        async with asyncio.timeout(LIMIT):
            outcome = await task
        await self.service.stop(0)
        return outcome


def missed(pbx: FakeAsterisk, kind: str) -> bool:
    return any(e.get("type") == kind for e in pbx.missed)


def media(pbx: FakeAsterisk) -> list[str]:
    return [r.params["media"] for r in pbx.sent("POST", f"/channels/{CALLER}/play")]


async def test_a_prompts_end_lost_in_a_drop_is_found_at_the_reconnection(tmp_path: Path) -> None:
    pbx = FakeAsterisk({"PJSIP/doctor": BUSY}, play_time=5)
    practice = Practice(tmp_path, pbx)
    task = practice.call()
    await wait_until(lambda: bool(pbx.playbacks), 60)  # the welcome plays
    pbx.disconnect()
    await wait_until(lambda: missed(pbx, "PlaybackFinished"), 60)  # over, unheard
    pbx.reconnect()
    outcome = await practice.outcome(task)

    # The welcome ended and the flow went on: the doctor rung (busy), then the goodbye.
    assert [(s.step, s.kind, s.result) for s in practice.log.steps] == [
        ("welcome", StepKind.PLAY, StepResult.PLAYED),
        ("talk", StepKind.ATTEMPT, StepResult.BUSY),
        ("talk", StepKind.DIAL, StepResult.BUSY),
        ("bye", StepKind.HANGUP, StepResult.DONE),
    ]
    assert media(pbx) == ["sound:custom/welcome", "sound:custom/goodbye"]
    assert outcome.kind is OutcomeKind.HANGUP
    assert [r.path for r in pbx.sent("GET", f"/playbacks/{CALLER}:pb:1")]  # it asked


async def test_a_leg_answered_during_a_drop_is_bridged_after_the_reconnection(
    tmp_path: Path,
) -> None:
    pbx = FakeAsterisk({"PJSIP/doctor": ANSWER}, play_time=1, ring_time=1)
    practice = Practice(tmp_path, pbx)
    task = practice.call()
    await wait_until(lambda: bool(pbx.sent("POST", "/channels")), 60)  # the doctor rings
    pbx.disconnect()
    await wait_until(lambda: missed(pbx, "StasisStart"), 60)  # picked up, unheard
    pbx.reconnect()
    [leg] = [c for c in pbx.channels if c.startswith("leg-")]
    await wait_until(lambda: any(sorted(m) == sorted([CALLER, leg]) for m in pbx.bridges.values()))
    assert leg not in pbx.hung_up()  # not cut at the end of the ring time
    pbx.hang_up(leg, after=30)  # the doctor ends the conversation
    outcome = await practice.outcome(task)
    assert outcome.kind is OutcomeKind.ANSWERED
    assert [(s.step, s.kind, s.result) for s in practice.log.steps][1:] == [
        ("talk", StepKind.ATTEMPT, StepResult.ANSWER),
        ("talk", StepKind.DIAL, StepResult.ANSWERED),
    ]


async def test_a_prompt_that_never_ends_fails_the_call_after_the_bound(tmp_path: Path) -> None:
    pbx = FakeAsterisk({"PJSIP/doctor": ANSWER}, play_time=10 * PLAYBACK_LIMIT)
    practice = Practice(tmp_path, pbx)
    task = practice.call()
    outcome = await practice.outcome(task)

    assert outcome.kind is OutcomeKind.FAILED and outcome.step == "welcome"
    assert "playback" in outcome.detail and f"{PLAYBACK_LIMIT:.0f} s" in outcome.detail
    [welcome] = practice.log.steps
    assert (welcome.step, welcome.result) == ("welcome", StepResult.PBX_TIMEOUT)
    assert practice.log.ended == [(practice.log.started[0], outcome)]  # one outcome
    # Nobody rung over a PBX that lost track; the caller goes to the dialplan fallback,
    # the stuck prompt stopped first.
    assert pbx.sent("POST", "/channels") == []
    assert pbx.sent("DELETE", f"/playbacks/{CALLER}:pb:1")
    assert pbx.sent("POST", f"/channels/{CALLER}/continue")[0].params["context"] == (
        "callflow-fallback"
    )


async def test_a_leg_gone_during_a_drop_ends_the_ringing_at_the_resync() -> None:
    registry = ChannelRegistry()
    pbx = FakeAsterisk({"PJSIP/doctor": BUSY}, sink=route_to(registry), ring_time=5)
    call = AriCall(client_for(pbx), registry, pbx.add_caller(CALLER), dialed="100")
    dial = asyncio.create_task(call.dial("PJSIP/doctor", timeout=300))
    await wait_until(lambda: bool(pbx.sent("POST", "/channels")), 60)
    pbx.disconnect()
    await wait_until(lambda: missed(pbx, "ChannelDestroyed"), 60)  # rejected, unheard
    pbx.connected = True
    await call.resync(set(pbx.channels))
    async with asyncio.timeout(60):  # far under the 300 s ring time
        result = await dial
    assert result.status is DialStatus.FAILED  # its cause was lost with its events
