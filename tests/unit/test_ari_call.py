"""The ARI Call against a scripted fake of Asterisk's REST side (events are injected)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from callflow.ari.call import AriCall, leg_status
from callflow.ari.channels import ChannelRegistry
from callflow.errors import CallerHangup, CallLost
from callflow.telephony import DialStatus


class FakeAri:
    """Answers REST calls like Asterisk and sends the matching events back."""

    def __init__(self, registry: ChannelRegistry, legs: dict[str, str] | None = None) -> None:
        self.registry = registry
        self.legs = legs or {}  # endpoint -> "answer" | "busy" | "ringout" | "answer-press:X"
        self.log: list[str] = []
        self.play_time = 0.01
        self.bridges: dict[str, list[str]] = {}

    def emit(self, event: dict[str, Any], channel: str) -> None:
        owner = self.registry.owner(channel)
        if owner is not None:
            owner.on_event(event)

    def later(self, delay: float, event: dict[str, Any], channel: str) -> None:
        asyncio.get_running_loop().call_later(delay, self.emit, event, channel)

    async def answer(self, channel_id: str) -> None:
        self.log.append(f"answer {channel_id}")

    async def play(
        self, channel_id: str, media: str, playback_id: str | None = None
    ) -> dict[str, Any]:
        self.log.append(f"play {playback_id} {media}")
        pb = {"id": playback_id, "target_uri": f"channel:{channel_id}", "state": "done"}
        self.later(self.play_time, {"type": "PlaybackFinished", "playback": pb}, channel_id)
        return pb

    async def stop_playback(self, playback_id: str) -> None:
        self.log.append(f"stop {playback_id}")

    async def originate(self, endpoint: str, **kw: Any) -> dict[str, Any]:
        leg = kw["channel_id"]
        self.log.append(f"originate {endpoint}")
        how = self.legs.get(endpoint, "ringout")
        if how.startswith("answer"):
            self.later(0.01, {"type": "StasisStart", "channel": {"id": leg}, "args": ["leg"]}, leg)
            if ":" in how:
                for i, key in enumerate(how.split(":", 1)[1]):
                    dtmf = {"type": "ChannelDtmfReceived", "digit": key, "channel": {"id": leg}}
                    self.later(0.03 + 0.01 * i, dtmf, leg)
        elif how == "ringout":
            ringing = {"type": "ChannelStateChange", "channel": {"id": leg, "state": "Ringing"}}
            self.later(0.01, ringing, leg)
        elif how == "busy":
            self.later(0.01, {"type": "ChannelDestroyed", "cause": 17, "channel": {"id": leg}}, leg)
        elif how == "503":
            self.later(0.01, {"type": "ChannelDestroyed", "cause": 34, "channel": {"id": leg}}, leg)
        return {"id": leg}

    async def hangup(self, channel_id: str, reason: str = "normal") -> None:
        self.log.append(f"hangup {channel_id}")
        self.emit(
            {"type": "ChannelDestroyed", "cause": 16, "channel": {"id": channel_id}}, channel_id
        )

    async def create_bridge(self, type: str = "mixing") -> dict[str, Any]:
        self.bridges["b1"] = []
        return {"id": "b1"}

    async def add_channel(self, bridge_id: str, ids: list[str]) -> None:
        self.log.append(f"bridge {','.join(ids)}")
        self.bridges[bridge_id] = list(ids)

    async def destroy_bridge(self, bridge_id: str) -> None:
        self.log.append("destroy bridge")

    async def start_moh(self, channel_id: str) -> None:
        self.log.append("moh on")

    async def stop_moh(self, channel_id: str) -> None:
        self.log.append("moh off")

    async def ring(self, channel_id: str) -> None:
        self.log.append("ring")

    async def set_variable(self, channel_id: str, name: str, value: str) -> None:
        self.log.append(f"set {name}={value}")

    async def continue_in_dialplan(
        self, channel_id: str, context: str, ext: str, prio: int
    ) -> None:
        self.log.append(f"continue {context},{ext},{prio}")


def make(legs: dict[str, str] | None = None) -> tuple[AriCall, FakeAri]:
    registry = ChannelRegistry()
    fake = FakeAri(registry, legs)
    channel = {"id": "caller-1", "caller": {"number": "0612345678"}, "state": "Ring"}
    call = AriCall(fake, registry, channel, dialed="100")  # type: ignore[arg-type]
    return call, fake


def press(fake: FakeAri, key: str, delay: float) -> None:
    fake.later(
        delay,
        {"type": "ChannelDtmfReceived", "digit": key, "channel": {"id": "caller-1"}},
        "caller-1",
    )


def hang(fake: FakeAri, delay: float) -> None:
    fake.later(delay, {"type": "StasisEnd", "channel": {"id": "caller-1"}}, "caller-1")


async def test_identity_and_answer_once() -> None:
    call, fake = make()
    assert (call.id, call.caller, call.dialed) == ("caller-1", "0612345678", "100")
    await call.answer()
    await call.answer()
    assert fake.log == ["answer caller-1"]


async def test_play_waits_for_each_sound() -> None:
    call, fake = make()
    assert await call.play(["a", "b"]) == ""
    assert fake.log == ["play caller-1:pb:1 sound:a", "play caller-1:pb:2 sound:b"]


async def test_barge_in_stops_the_prompt_and_returns_the_key() -> None:
    call, fake = make()
    fake.play_time = 5
    press(fake, "2", 0.02)
    assert await asyncio.wait_for(call.play(["long"], barge_in=True), 1) == "2"
    assert "stop caller-1:pb:1" in fake.log


async def test_collect_one_key_after_the_prompt() -> None:
    call, fake = make()
    press(fake, "1", 0.05)
    assert await call.collect("menu", max_digits=1, first_timeout=1, inter_timeout=1) == "1"


async def test_collect_times_out_with_nothing() -> None:
    call, _ = make()
    assert await call.collect(None, max_digits=1, first_timeout=0.05, inter_timeout=0.05) == ""


async def test_keys_pressed_before_the_question_are_ignored() -> None:
    call, fake = make()
    press(fake, "9", 0.0)
    await asyncio.sleep(0.01)
    assert await call.collect(None, max_digits=1, first_timeout=0.05, inter_timeout=0.05) == ""


async def test_several_digits_and_hash_terminator() -> None:
    call, fake = make()
    for i, k in enumerate("12#"):
        press(fake, k, 0.02 + 0.01 * i)
    got = await call.collect(None, max_digits=4, first_timeout=1, inter_timeout=0.5)
    assert got == "12"


async def test_hangup_during_prompt_raises_caller_hangup() -> None:
    call, fake = make()
    fake.play_time = 5
    hang(fake, 0.02)
    with pytest.raises(CallerHangup):
        await asyncio.wait_for(call.play(["long"]), 1)


async def test_dial_answered_bridges_and_ends_when_callee_hangs_up() -> None:
    call, fake = make({"PJSIP/accueil": "answer"})

    async def callee_hangs_up() -> None:
        await asyncio.sleep(0.1)
        leg = next(i for i in fake.bridges["b1"] if i != "caller-1")
        fake.emit({"type": "ChannelDestroyed", "channel": {"id": leg}}, leg)

    task = asyncio.create_task(callee_hangs_up())
    result = await asyncio.wait_for(call.dial("PJSIP/accueil", timeout=2), 2)
    await task
    assert result.status is DialStatus.ANSWER
    assert "destroy bridge" in fake.log
    assert "answer caller-1" in fake.log  # the caller is answered before bridging


@pytest.mark.parametrize(
    ("how", "status"),
    [("busy", DialStatus.BUSY), ("503", DialStatus.CONGESTION), ("ringout", DialStatus.NOANSWER)],
)
async def test_dial_not_answered(how: str, status: DialStatus) -> None:
    call, _ = make({"PJSIP/x": how})
    result = await asyncio.wait_for(call.dial("PJSIP/x", timeout=0.1), 2)
    assert result.status is status
    assert len(call.registry) == 1  # the leg is forgotten, only the caller remains


async def test_caller_hangs_up_while_ringing_ends_the_leg() -> None:
    call, fake = make({"PJSIP/x": "ringout"})
    hang(fake, 0.05)
    with pytest.raises(CallerHangup):
        await asyncio.wait_for(call.dial("PJSIP/x", timeout=5), 2)
    assert any(x.startswith("hangup leg-") for x in fake.log)


async def test_confirm_accepts_only_the_confirm_key() -> None:
    call, _ = make({"PJSIP/ok": "answer-press:1", "PJSIP/no": "answer-press:2"})
    declined = await asyncio.wait_for(
        call.dial_confirm("PJSIP/no", timeout=1, confirm="1", announce=[], confirm_timeout=0.3), 2
    )
    assert declined.status is DialStatus.DECLINED


async def test_confirm_silence_is_declined() -> None:
    call, _ = make({"PJSIP/vm": "answer"})
    result = await asyncio.wait_for(
        call.dial_confirm(
            "PJSIP/vm", timeout=1, confirm="1", announce=["oncall"], confirm_timeout=0.1
        ),
        2,
    )
    assert result.status is DialStatus.DECLINED


async def test_voicemail_hands_the_call_to_the_dialplan() -> None:
    call, fake = make()
    assert await call.voicemail("practice")
    assert "set CALLFLOW_VOICEMAIL_BOX=practice" in fake.log
    assert "continue callflow-voicemail,s,1" in fake.log
    await call.hangup()
    assert "hangup caller-1" not in fake.log  # no longer ours to hang up


def test_leg_status_mapping() -> None:
    assert leg_status("BUSY", None) is DialStatus.BUSY
    assert leg_status(None, 17) is DialStatus.BUSY
    assert leg_status("", 34) is DialStatus.CONGESTION
    assert leg_status(None, 19) is DialStatus.NOANSWER
    assert leg_status("CHANUNAVAIL", 16) is DialStatus.CHANUNAVAIL
    assert leg_status(None, 999) is DialStatus.FAILED


async def test_playback_ids_cycle_so_a_restarted_daemon_can_stop_them() -> None:
    call, fake = make()
    await call.play(["a"] * 10)
    ids = [x.split()[1] for x in fake.log if x.startswith("play")]
    assert len(ids) == 10
    await call.stop_stray_playbacks()
    stopped = {x.split()[1] for x in fake.log if x.startswith("stop")}
    assert stopped == {f"caller-1:pb:{n}" for n in range(8)}


async def test_last_resort_hands_the_caller_to_the_dialplan_fallback() -> None:
    call, fake = make()
    await call.last_resort()
    assert "continue callflow-fallback,s,1" in fake.log
    await call.hangup()
    assert "hangup caller-1" not in fake.log


async def test_a_trunk_that_shows_no_sign_of_life_is_given_up_after_the_setup_timeout() -> None:
    call, fake = make({"PJSIP/0180@trunk-a": "silent"})
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    result = await call.dial("PJSIP/0180@trunk-a", timeout=5, setup_timeout=0.1)
    assert result.status is DialStatus.CHANUNAVAIL
    assert loop.time() - t0 < 1
    assert any(x.startswith("hangup leg-") for x in fake.log)


async def test_a_ringing_callee_is_not_cut_by_the_setup_timeout() -> None:
    call, _ = make({"PJSIP/0180@trunk-a": "ringout"})
    result = await call.dial("PJSIP/0180@trunk-a", timeout=0.3, setup_timeout=0.1)
    assert result.status is DialStatus.NOANSWER


async def test_reconcile_ends_a_wait_on_a_channel_that_vanished() -> None:
    call, fake = make()
    fake.play_time = 60  # the PlaybackFinished will never come: Asterisk restarted
    task = asyncio.create_task(call.play(["long"]))
    await asyncio.sleep(0.02)
    call.reconcile({"some-other-channel"})
    with pytest.raises(CallLost):
        await asyncio.wait_for(task, 1)


async def test_reconcile_keeps_a_channel_that_is_still_there() -> None:
    call, fake = make()
    fake.play_time = 0.1
    task = asyncio.create_task(call.play(["short"]))
    await asyncio.sleep(0.02)
    call.reconcile({"caller-1"})
    assert await asyncio.wait_for(task, 1) == ""
