"""The ARI Call on a real AriClient over a fake Asterisk, on a virtual clock."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

import pytest

from callflow.ari.call import SHED_LABEL, AriCall, leg_status
from callflow.ari.channels import ChannelRegistry
from callflow.ari.faults import AriServerError
from callflow.errors import CallerHangup, CallLost
from callflow.telephony import DialStatus, Handoff
from tests.support.fake_asterisk import (
    ANSWER,
    BUSY,
    CONGESTION,
    RINGOUT,
    SILENT,
    FakeAsterisk,
    Leg,
    client_for,
    presses,
    route_to,
)
from tests.support.polling import wait_until

# Ring, play and digit times are seconds of virtual time: they cost nothing.
pytestmark = pytest.mark.looptime

CALLER = "caller-1"
LIMIT = 600.0  # virtual seconds; far beyond any wait below

T = TypeVar("T")


async def bounded(aw: Awaitable[T]) -> T:
    """Await ``aw``, failing after ``LIMIT`` virtual seconds: a bug that waits forever must
    fail the test, not hang it (the virtual clock jumps to this timer when nothing else is
    due)."""
    async with asyncio.timeout(LIMIT):
        return await aw


def make(endpoints: dict[str, Leg] | None = None) -> tuple[AriCall, FakeAsterisk]:
    registry = ChannelRegistry()
    pbx = FakeAsterisk(endpoints, sink=route_to(registry))
    channel = pbx.add_caller(CALLER, "0612345678")
    return AriCall(client_for(pbx), registry, channel, dialed="100"), pbx


def now() -> float:
    return asyncio.get_running_loop().time()


def plays(pbx: FakeAsterisk, channel: str = CALLER) -> list[tuple[str, str]]:
    """(playback id, media) of each sound started on ``channel``."""
    return [
        (r.params["playbackId"], r.params["media"])
        for r in pbx.sent("POST", f"/channels/{channel}/play")
    ]


def the_bridge(pbx: FakeAsterisk) -> tuple[str, list[str]] | None:
    """The bridge holding two channels, if there is one."""
    return next(((b, m) for b, m in pbx.bridges.items() if len(m) == 2), None)


async def test_identity_and_answer_once() -> None:
    call, pbx = make()
    assert (call.id, call.caller, call.dialed) == (CALLER, "0612345678", "100")
    await call.answer()
    await call.answer()
    assert pbx.lines() == [f"POST /channels/{CALLER}/answer"]


async def test_play_waits_for_each_sound() -> None:
    call, pbx = make()
    pbx.play_time = 3
    t0 = now()
    assert await bounded(call.play(["a", "b"])) == ""
    assert plays(pbx) == [(f"{CALLER}:pb:1", "sound:a"), (f"{CALLER}:pb:2", "sound:b")]
    assert now() - t0 == pytest.approx(6)


async def test_barge_in_stops_the_prompt_and_returns_the_key() -> None:
    call, pbx = make()
    pbx.play_time = 60
    pbx.press(CALLER, "2", after=2)
    assert await bounded(call.play(["long"], barge_in=True)) == "2"
    assert now() < 60
    # The prompt is stopped by the next request Asterisk would queue behind it...
    assert pbx.sent("DELETE", f"/playbacks/{CALLER}:pb:1") == []
    await bounded(call.play(["next"]))
    assert pbx.lines()[-2:] == [
        f"DELETE /playbacks/{CALLER}:pb:1",
        f"POST /channels/{CALLER}/play",
    ]


async def test_a_prompt_a_key_interrupted_is_not_stopped_before_a_hangup() -> None:
    call, pbx = make()
    pbx.play_time = 60
    pbx.press(CALLER, "2", after=2)
    await bounded(call.play(["long"], barge_in=True))
    await bounded(call.hangup())  # ...but a hangup ends it anyway: no stop request
    assert pbx.lines() == [f"POST /channels/{CALLER}/play", f"DELETE /channels/{CALLER}"]


async def test_a_prompt_over_by_itself_is_not_stopped() -> None:
    call, pbx = make()
    pbx.play_time = 3
    pbx.press(CALLER, "2", after=1)
    await bounded(call.play(["short"], barge_in=True))
    # The prompt ends on its own meanwhile.
    await wait_until(lambda: any(e["type"] == "PlaybackFinished" for e in pbx.events), LIMIT)
    await bounded(call.continue_to("callflow-fallback"))
    assert pbx.sent("DELETE", f"/playbacks/{CALLER}:pb:1") == []


async def test_collect_one_key_after_the_prompt() -> None:
    call, pbx = make()
    pbx.press(CALLER, "1", after=pbx.play_time + 1)
    assert (
        await bounded(call.collect("menu", max_digits=1, first_timeout=5, inter_timeout=5)) == "1"
    )
    assert not pbx.sent("DELETE", f"/playbacks/{CALLER}:pb:1")  # the prompt had ended


async def test_collect_times_out_with_nothing() -> None:
    call, _ = make()
    t0 = now()
    assert await bounded(call.collect(None, max_digits=1, first_timeout=5, inter_timeout=5)) == ""
    assert now() - t0 == pytest.approx(5)


async def test_keys_pressed_before_the_question_are_ignored() -> None:
    call, pbx = make()
    pbx.press(CALLER, "9")
    await wait_until(lambda: any(e["type"] == "ChannelDtmfReceived" for e in pbx.events))
    assert await bounded(call.collect(None, max_digits=1, first_timeout=5, inter_timeout=5)) == ""


async def test_several_digits_and_hash_terminator() -> None:
    call, pbx = make()
    pbx.press(CALLER, "12#", after=1, gap=1)
    got = await bounded(call.collect(None, max_digits=4, first_timeout=5, inter_timeout=2))
    assert got == "12"


async def test_hangup_during_prompt_raises_caller_hangup() -> None:
    call, pbx = make()
    pbx.play_time = 60
    pbx.hang_up(CALLER, after=2)
    with pytest.raises(CallerHangup):
        await bounded(call.play(["long"]))
    assert now() < 60


async def test_dial_answered_bridges_and_ends_when_callee_hangs_up() -> None:
    call, pbx = make({"PJSIP/accueil": ANSWER})
    task = asyncio.create_task(call.dial("PJSIP/accueil", timeout=20))
    await wait_until(lambda: the_bridge(pbx) is not None, timeout=30)
    bridge = the_bridge(pbx)
    assert bridge is not None
    bridge_id, members = bridge
    leg = next(m for m in members if m != CALLER)
    assert CALLER in members
    pbx.hang_up(leg, after=30)
    result = await bounded(task)
    assert result.status is DialStatus.ANSWER
    assert pbx.sent("DELETE", f"/bridges/{bridge_id}")
    lines = pbx.lines()
    # the caller is answered before bridging
    assert lines.index(f"POST /channels/{CALLER}/answer") < lines.index("POST /bridges")


@pytest.mark.parametrize(
    ("leg", "status"),
    [(BUSY, DialStatus.BUSY), (CONGESTION, DialStatus.CONGESTION), (RINGOUT, DialStatus.NOANSWER)],
)
async def test_dial_not_answered(leg: Leg, status: DialStatus) -> None:
    call, _ = make({"PJSIP/x": leg})
    result = await bounded(call.dial("PJSIP/x", timeout=10))
    assert result.status is status
    assert len(call.registry) == 1  # the leg is forgotten, only the caller remains


async def test_caller_hangs_up_while_ringing_ends_the_leg() -> None:
    call, pbx = make({"PJSIP/x": RINGOUT})
    pbx.hang_up(CALLER, after=5)
    with pytest.raises(CallerHangup):
        await bounded(call.dial("PJSIP/x", timeout=30))
    assert any(c.startswith("leg-") for c in pbx.hung_up())


async def test_confirm_accepts_only_the_confirm_key() -> None:
    call, pbx = make({"PJSIP/ok": presses("1"), "PJSIP/no": presses("2")})
    t0 = now()
    declined = await bounded(
        call.dial_confirm("PJSIP/no", timeout=30, confirm="1", announce=[], confirm_timeout=60)
    )
    assert declined.status is DialStatus.DECLINED
    assert now() - t0 < 60  # declined by the wrong key, not by the confirm timeout
    assert not pbx.sent("POST", "/bridges")
    assert len(pbx.hung_up()) == 1  # the declining leg

    accepting = asyncio.create_task(
        call.dial_confirm("PJSIP/ok", timeout=30, confirm="1", announce=[], confirm_timeout=60)
    )
    await wait_until(lambda: the_bridge(pbx) is not None, timeout=30)
    bridge = the_bridge(pbx)
    assert bridge is not None
    leg = next(m for m in bridge[1] if m != CALLER)
    pbx.hang_up(leg, after=10)
    accepted = await bounded(accepting)
    assert accepted.status is DialStatus.ANSWER


async def test_confirm_silence_is_declined() -> None:
    call, pbx = make({"PJSIP/vm": ANSWER})
    t0 = now()
    result = await bounded(
        call.dial_confirm(
            "PJSIP/vm", timeout=30, confirm="1", announce=["oncall"], confirm_timeout=5
        )
    )
    assert result.status is DialStatus.DECLINED
    (leg,) = pbx.hung_up()
    assert [media for _, media in plays(pbx, leg)] == ["sound:oncall"]
    assert now() - t0 >= 5
    assert not pbx.sent("POST", "/bridges")


async def test_voicemail_hands_the_call_to_the_dialplan() -> None:
    call, pbx = make()
    assert await call.voicemail("practice")
    (probe,) = pbx.sent("GET", f"/channels/{CALLER}/variable")
    assert probe.params == {"variable": "VM_INFO(practice,exists)"}  # asked first
    setbox, push = pbx.sent("POST", f"/channels/{CALLER}/variable")
    assert setbox.params == {"variable": "CALLFLOW_VOICEMAIL_BOX", "value": "practice"}
    # The status handler, pushed before the hand-over: a hangup on the way is recorded.
    assert push.params == {
        "variable": "CHANNEL(hangup_handler_push)",
        "value": "callflow-voicemail-status,s,1",
    }
    (cont,) = pbx.sent("POST", f"/channels/{CALLER}/continue")
    assert cont.params == {"context": "callflow-voicemail", "extension": "s", "priority": "1"}
    await call.hangup()
    assert CALLER not in pbx.hung_up()  # no longer ours to hang up


@pytest.mark.parametrize("fault", ["no such mailbox", "no voicemail module"])
async def test_voicemail_that_would_hang_up_on_the_caller_is_not_handed_over(
    fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A mailbox voicemail.conf lacks, or no voicemail module (VM_INFO() fails): the
    # dialplan would hang up on the caller, who stays.  (A VoiceMail() unregistered by a
    # declined variant is the engine's to see: test_engine.py.)
    call, pbx = make()
    if fault == "no such mailbox":
        pbx.missing_mailboxes.add("201")
    else:
        pbx.voicemail_module = False
    assert not await call.voicemail("201")
    assert not pbx.sent("POST", f"/channels/{CALLER}/continue")
    assert not pbx.sent("POST", f"/channels/{CALLER}/variable")
    assert "'failed' branch" in caplog.text
    await call.hangup()
    assert CALLER in pbx.hung_up()  # still the daemon's call


async def test_asterisk_failing_the_mailbox_question_is_a_link_fault() -> None:
    # Any other 5xx is Asterisk failing, as for every request: not a missing voicemail.
    call, pbx = make()
    pbx.reply("GET", f"/channels/{CALLER}/variable", 503, {"message": "overloaded"})
    with pytest.raises(AriServerError):
        await call.voicemail("200")
    assert not pbx.sent("POST", f"/channels/{CALLER}/continue")


def test_leg_status_mapping() -> None:
    assert leg_status("BUSY", None) is DialStatus.BUSY
    assert leg_status(None, 17) is DialStatus.BUSY
    assert leg_status("", 34) is DialStatus.CONGESTION
    assert leg_status(None, 19) is DialStatus.NOANSWER
    assert leg_status("CHANUNAVAIL", 16) is DialStatus.CHANUNAVAIL
    assert leg_status(None, 999) is DialStatus.FAILED


async def test_playback_ids_cycle_so_a_restarted_daemon_can_stop_them() -> None:
    call, pbx = make()
    await bounded(call.play(["a"] * 10))
    assert len(plays(pbx)) == 10
    await call.stop_stray_playbacks()
    stopped = {line for line in pbx.lines() if line.startswith("DELETE ")}
    assert stopped == {f"DELETE /playbacks/{CALLER}:pb:{n}" for n in range(8)}


async def test_last_resort_hands_the_caller_to_the_dialplan_fallback() -> None:
    call, pbx = make()
    assert await call.last_resort() is Handoff.HANDED
    (cont,) = pbx.sent("POST", f"/channels/{CALLER}/continue")
    assert cont.params == {"context": "callflow-fallback", "extension": "s", "priority": "1"}
    await call.hangup()
    assert CALLER not in pbx.hung_up()


async def test_last_resort_with_the_pbx_gone_fails_without_raising() -> None:
    # A node's Asterisk died: neither the fallback nor the hangup can reach it.
    call, pbx = make()
    pbx.drop("POST", f"/channels/{CALLER}/continue")
    pbx.drop("DELETE", f"/channels/{CALLER}")
    assert await call.last_resort() is Handoff.FAILED
    assert pbx.sent("DELETE", f"/channels/{CALLER}")  # it was tried


async def test_last_resort_for_a_caller_who_hung_up_first_says_so() -> None:
    call, pbx = make()
    pbx.reply("POST", f"/channels/{CALLER}/continue", 404, {"message": "Channel not found"})
    assert await call.last_resort() is Handoff.CALLER_GONE
    assert pbx.hung_up() == []


def make_shed() -> tuple[AriCall, FakeAsterisk]:
    """A call the daemon sheds: it enters the fallback at the label ``shed``."""
    registry = ChannelRegistry()
    pbx = FakeAsterisk(sink=route_to(registry))
    channel = pbx.add_caller(CALLER, "0612345678")
    call = AriCall(client_for(pbx), registry, channel, dialed="100", fallback_label=SHED_LABEL)
    return call, pbx


SHED_ENTRY = {"context": "callflow-fallback", "extension": "s", "label": "shed"}
START = {"context": "callflow-fallback", "extension": "s", "priority": "1"}


async def test_a_shed_call_enters_the_fallback_where_the_dialplan_answers_it() -> None:
    call, pbx = make_shed()
    asides: list[bool] = []
    handoff = call.client.continue_in_dialplan

    async def spy(*args: Any, aside: bool = False, **kwargs: Any) -> None:
        asides.append(aside)
        await handoff(*args, aside=aside, **kwargs)

    call.client.continue_in_dialplan = spy  # type: ignore[method-assign]
    assert await call.last_resort() is Handoff.HANDED
    assert [r.params for r in pbx.sent("POST", f"/channels/{CALLER}/continue")] == [SHED_ENTRY]
    assert asides == [True]  # over HTTP, not behind the websocket's queue


async def test_a_shed_call_in_a_dialplan_without_the_label_enters_at_the_start() -> None:
    call, pbx = make_shed()
    pbx.labels.clear()  # an extensions_callflow.conf older than the daemon
    assert await call.last_resort() is Handoff.HANDED
    assert [r.params for r in pbx.sent("POST", f"/channels/{CALLER}/continue")] == [
        SHED_ENTRY,
        START,
    ]
    assert call.fallback_label_missing  # the call service warns, and stops asking


async def test_a_shed_caller_who_hung_up_first_is_not_taken_for_a_missing_label() -> None:
    call, pbx = make_shed()
    pbx.vanish(CALLER)  # gone before the continue: Asterisk says 404 to both requests
    assert await call.last_resort() is Handoff.CALLER_GONE
    assert len(pbx.sent("POST", f"/channels/{CALLER}/continue")) == 2
    assert not call.fallback_label_missing
    assert pbx.hung_up() == []


async def test_a_trunk_that_shows_no_sign_of_life_is_given_up_after_the_setup_timeout() -> None:
    call, pbx = make({"PJSIP/0180@trunk-a": SILENT})
    t0 = now()
    result = await bounded(call.dial("PJSIP/0180@trunk-a", timeout=30, setup_timeout=3))
    assert result.status is DialStatus.CHANUNAVAIL
    assert now() - t0 == pytest.approx(3)
    assert any(c.startswith("leg-") for c in pbx.hung_up())


async def test_a_ringing_callee_is_not_cut_by_the_setup_timeout() -> None:
    call, _ = make({"PJSIP/0180@trunk-a": RINGOUT})
    t0 = now()
    result = await bounded(call.dial("PJSIP/0180@trunk-a", timeout=10, setup_timeout=3))
    assert result.status is DialStatus.NOANSWER
    assert now() - t0 == pytest.approx(10)


async def test_reconcile_ends_a_wait_on_a_channel_that_vanished() -> None:
    call, pbx = make()
    pbx.play_time = 60  # the PlaybackFinished will never come: Asterisk restarted
    task = asyncio.create_task(call.play(["long"]))
    await wait_until(lambda: bool(pbx.playbacks))
    pbx.vanish(CALLER)
    call.reconcile(set(pbx.channels))
    with pytest.raises(CallLost):
        await bounded(task)


async def test_reconcile_keeps_a_channel_that_is_still_there() -> None:
    call, pbx = make()
    pbx.play_time = 5
    task = asyncio.create_task(call.play(["short"]))
    await wait_until(lambda: bool(pbx.playbacks))
    call.reconcile(set(pbx.channels))
    assert await task == ""
    assert not call.gone


class CallerLeavesAsTheCalleeAnswers(FakeAsterisk):
    """The caller hangs up just as the callee answers: the channel is gone in Asterisk
    when the bridge is asked for (400 Channel not found), its events still on the way."""

    def _serve(self, method: str, seg: list[str], params: Mapping[str, str] | None) -> Any:
        data = super()._serve(method, seg, params)
        if (method, seg) == ("POST", ["bridges"]) and CALLER in self.channels:
            snapshot = self.channels[CALLER].json()
            self._forget(CALLER)
            self._soon(lambda: self._send({"type": "StasisEnd", "channel": snapshot}))
        return data


async def test_a_caller_gone_when_the_bridge_is_made_hung_up_not_a_failure() -> None:
    # Found by the fault matrix (kill -9 under load): calls recovered at the restart whose
    # caller left meanwhile were logged "failed ... addChannel ... HTTP 400", not abandoned.
    registry = ChannelRegistry()
    pbx = CallerLeavesAsTheCalleeAnswers({"PJSIP/accueil": ANSWER}, sink=route_to(registry))
    call = AriCall(client_for(pbx), registry, pbx.add_caller(CALLER), dialed="100")
    with pytest.raises(CallerHangup):
        await bounded(call.dial("PJSIP/accueil", timeout=20))
    assert [r for r in pbx.requests if r.path.endswith("/addChannel")]  # refused: 400
    assert any(c.startswith("leg-") for c in pbx.hung_up())  # the callee is let go
    assert not pbx.bridges  # and the bridge


@pytest.mark.parametrize(("soft", "error"), [(True, CallLost), (False, CallerHangup)])
async def test_asterisk_hanging_the_caller_up_itself_is_a_lost_call(
    soft: bool, error: type[CallerHangup]
) -> None:
    # Found by the fault matrix (Asterisk restarted under load): Asterisk shutting down
    # hangs every channel up itself (ChannelHangupRequest "soft": true) and those calls were
    # logged abandoned, "caller hung up".  A caller's own BYE is not soft.
    call, pbx = make()
    pbx.play_time = 60
    task = asyncio.create_task(call.play(["long"]))
    await wait_until(lambda: bool(pbx.playbacks))
    request = {"type": "ChannelHangupRequest", "cause": 16, "channel": {"id": CALLER}}
    pbx.sink(request | ({"soft": True} if soft else {}))
    pbx.hang_up(CALLER)
    with pytest.raises(error) as caught:
        await bounded(task)
    assert type(caught.value) is error


async def test_our_own_hangup_of_the_caller_is_not_a_lost_call() -> None:
    call, _ = make()
    await call.hangup()
    # Even if its event reached the call after the hangup (ARI's DELETE is a soft hangup).
    call.on_event({"type": "ChannelHangupRequest", "soft": True, "channel": {"id": CALLER}})
    assert not call.lost
