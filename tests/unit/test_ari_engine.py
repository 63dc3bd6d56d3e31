"""The engine driving a real AriCall over the fake Asterisk, on a virtual clock: what an ARI
failure mid-call does to the call and its log, and how many REST requests each step kind
costs."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from callflow.ari.call import AriCall
from callflow.ari.channels import ChannelRegistry
from callflow.ari.service import CallService
from callflow.flow.engine import Engine
from callflow.flow.events import (
    Outcome,
    OutcomeKind,
    StepKind,
    StepResult,
)
from callflow.flow.services import Services
from tests.support.fake_asterisk import (
    ANSWER,
    RINGOUT,
    FakeAsterisk,
    Leg,
    client_for,
    route_to,
)
from tests.support.flows import compile_flow
from tests.support.observer import RecordingObserver
from tests.support.polling import wait_until

pytestmark = pytest.mark.looptime

CALLER = "caller-1"
TUESDAY_10H = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


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
    next: choose
  choose:
    menu: {prompt: custom/menu, options: {"1": talk, "2": bye, "3": done}, attempts: 2}
    failed: bye
  talk:
    dial: doctor
    failed: bye
  bye:
    hangup: {announce: custom/goodbye}
  done:
    hangup: {}
"""


async def call_through(
    pbx: FakeAsterisk, registry: ChannelRegistry, flow: str = FLOW
) -> tuple[Outcome, RecordingObserver]:
    channel = pbx.add_caller(CALLER)
    call = AriCall(client_for(pbx), registry, channel, dialed="100")
    log = RecordingObserver()
    services = Services(clock=lambda: TUESDAY_10H, observer=log)
    async with asyncio.timeout(3600):  # virtual seconds: a stuck call fails the test
        outcome = await Engine(services).run(compile_flow(flow), call)
    return outcome, log


def make(endpoints: dict[str, Leg] | None = None) -> tuple[FakeAsterisk, ChannelRegistry]:
    registry = ChannelRegistry()
    return FakeAsterisk(endpoints, sink=route_to(registry)), registry


# -- an ARI failure mid-call -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "result"),
    [
        ("stall", StepResult.PBX_TIMEOUT),
        ("500", StepResult.PBX_ERROR),
        ("drop", StepResult.PBX_DISCONNECTED),
    ],
)
async def test_an_ari_failure_mid_call_goes_to_the_dialplan_fallback_logged_failed(
    fault: str, result: StepResult
) -> None:
    # The welcome fails: the flow's fallback destination (rung over the failing link) must
    # not be tried, and no goodbye-and-hangup: the caller goes to the dialplan fallback.
    pbx, registry = make({"PJSIP/desk": ANSWER})
    path = f"/channels/{CALLER}/play"
    if fault == "stall":
        pbx.stall("POST", path)
    elif fault == "500":
        pbx.reply("POST", path, 500, {"message": "Internal Server Error"})
    else:
        pbx.drop("POST", path)
    outcome, log = await call_through(pbx, registry)

    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.step == "welcome"
    failed = log.steps[-1]
    assert (failed.step, failed.kind, failed.result) == ("welcome", StepKind.PLAY, result)
    assert failed.outcome is OutcomeKind.FAILED
    assert "PBX link failed" in failed.detail and "PBX link failed" in outcome.detail
    assert log.outcomes == [outcome]  # exactly one outcome, never hangup
    assert all(s.outcome is not OutcomeKind.HANGUP for s in log.steps)
    # Handed to the dialplan fallback, not hung up, no fallback destination rung.
    assert pbx.sent("POST", f"/channels/{CALLER}/continue")[0].params["context"] == (
        "callflow-fallback"
    )
    assert pbx.hung_up() == []
    assert pbx.sent("POST", "/channels") == []


@pytest.mark.parametrize("carried_out", [True, False])
async def test_a_continue_with_no_answer_is_checked_before_the_caller_is_hung_up(
    carried_out: bool,
) -> None:
    # Found in review: a continue to the fallback that Asterisk carried out but whose
    # answer was lost (the socket dropped) was taken for a failure, and the caller, now
    # ringing the secretariat in the dialplan, was hung up.
    pbx, registry = make()
    pbx.drop("POST", f"/channels/{CALLER}/play")  # the welcome fails: to the fallback
    if carried_out:
        pbx.lose_answer("POST", f"/channels/{CALLER}/continue")
    else:
        pbx.drop("POST", f"/channels/{CALLER}/continue")
    outcome, _ = await call_through(pbx, registry)
    assert outcome.kind is OutcomeKind.FAILED
    if carried_out:
        assert pbx.hung_up() == []  # in the fallback: not ours to hang up
        assert "could not reach the dialplan fallback" not in outcome.detail
    else:
        assert pbx.hung_up() == [CALLER]  # still in our app with nowhere to go


async def test_an_answer_timeout_is_not_logged_as_the_flows_hangup() -> None:
    # Issue #11 at 200 cps: the answer timed out, the menu's ``failed`` branch led to a
    # plain hangup step, and the call was logged ``hangup`` as if the caller was served.
    flow = FLOW.replace("    play: [custom/welcome]\n    next: choose", "    goto: choose")
    flow = flow.replace("failed: bye", "failed: done")
    pbx, registry = make()
    pbx.stall("POST", f"/channels/{CALLER}/answer")
    outcome, log = await call_through(pbx, registry, flow)
    assert outcome.kind is OutcomeKind.FAILED
    assert [(s.step, s.result, s.outcome) for s in log.steps] == [
        ("welcome", StepResult.GOTO, None),
        ("choose", StepResult.PBX_TIMEOUT, OutcomeKind.FAILED),
    ]
    assert pbx.lines() == [
        f"POST /channels/{CALLER}/answer",
        f"POST /channels/{CALLER}/continue",
    ]


async def test_an_ari_failure_after_someone_was_reached_keeps_the_answered_outcome() -> None:
    flow = FLOW.replace("    dial: doctor\n    failed: bye", "    dial: doctor\n    next: bye")
    pbx, registry = make({"PJSIP/doctor": ANSWER})
    pbx.press(CALLER, "1", after=1.5)  # the welcome, then "1" during the menu: the doctor

    async def the_doctor_hangs_up_then_the_goodbye_fails() -> None:
        await wait_until(lambda: any(len(m) == 2 for m in pbx.bridges.values()), 600)
        pbx.reply("POST", f"/channels/{CALLER}/play", 503, {"message": "overloaded"})
        (leg,) = [c for c in pbx.channels if c.startswith("leg-")]
        pbx.hang_up(leg, after=30)

    (outcome, log), _ = await asyncio.gather(
        call_through(pbx, registry, flow), the_doctor_hangs_up_then_the_goodbye_fails()
    )
    assert (outcome.kind, outcome.destination) == (OutcomeKind.ANSWERED, "doctor")
    bye = log.steps[-1]
    assert (bye.step, bye.result, bye.outcome) == ("bye", StepResult.PBX_ERROR, None)
    assert log.outcomes == [outcome]


# -- round trips per step kind ---------------------------------------------------------------

C = "/channels/C"
# Each case: the flow's steps (``h`` is a plain hangup), keys the caller presses from 0.5 s,
# and every REST request the call makes, in order.  A needless request added to a step kind
# (a stop before a hangup, a GET of what is known) fails this test.
ROUND_TRIPS: dict[str, tuple[str, str, list[str]]] = {
    "play": (
        "  s: {play: [a, b], next: h}\n",
        "",
        [f"POST {C}/answer", f"POST {C}/play", f"POST {C}/play", f"DELETE {C}"],
    ),
    "menu, key during the prompt, then hangup": (
        "  s: {menu: {prompt: p, options: {'1': h}, attempts: 1}, failed: h}\n",
        "1",
        [f"POST {C}/answer", f"POST {C}/play", f"DELETE {C}"],
    ),
    "menu, key during the prompt, then play": (
        "  s: {menu: {prompt: p, options: {'1': x}, attempts: 1}, failed: h}\n"
        "  x: {play: [a], next: h}\n",
        "1",
        [
            f"POST {C}/answer",
            f"POST {C}/play",
            "DELETE /playbacks/C:pb:1",  # the prompt would hold the next sound back
            f"POST {C}/play",
            f"DELETE {C}",
        ],
    ),
    "menu, no input then failed": (
        "  s: {menu: {prompt: p, options: {'1': h}, attempts: 2, no_input: n}, failed: h}\n",
        "",
        [f"POST {C}/answer"] + [f"POST {C}/play"] * 4 + [f"DELETE {C}"],
    ),
    "hangup with an announce": (
        "  s: {hangup: {announce: bye}}\n",
        "",
        [f"POST {C}/answer", f"POST {C}/play", f"DELETE {C}"],
    ),
    "set": (
        "  s: {set: {A: b, B: c}, next: h}\n",
        "",
        [f"POST {C}/variable"] * 2 + [f"DELETE {C}"],
    ),
    "voicemail": (
        "  s: {voicemail: {box: '1'}, failed: h}\n",
        "",
        # The mailbox asked for first: a voicemail that is not there would hang up.
        [f"POST {C}/answer", f"GET {C}/variable"]
        + [f"POST {C}/variable"] * 2  # the mailbox, the status handler
        + [f"POST {C}/continue"],
    ),
    "dial, answered": (
        "  s: {dial: desk, next: h}\n",
        "",
        [
            "POST /channels",  # originate the leg
            f"POST {C}/ring",  # ringback while it rings (the caller is not answered yet)
            f"POST {C}/answer",
            "POST /bridges",
            "POST /bridges/bridge-1/addChannel",
            "DELETE /bridges/bridge-1",  # the caller hung up: the bridge goes,
            "DELETE /channels/LEG",  # and the callee's leg with it
        ],
    ),
    "escalate tier 1, message over before the answer": (
        "  s: {escalate: {tier: 1, announce: [m], to: desk}, failed: h}\n",
        "",
        [
            "POST /channels",  # nothing stands before the emergency call
            f"POST {C}/answer",
            f"POST {C}/play",  # the message while it rings; over by itself: no stop
            "POST /bridges",
            "POST /bridges/bridge-1/addChannel",
            "DELETE /bridges/bridge-1",
            "DELETE /channels/LEG",
        ],
    ),
}


@pytest.mark.parametrize("case", list(ROUND_TRIPS))
async def test_rest_requests_per_step_kind(case: str) -> None:
    steps, keys, expected = ROUND_TRIPS[case]
    flow = (
        "version: 1\nflow: t\nnumbers: ['100']\ntimezone: Europe/Paris\n"
        "destinations:\n  desk: {endpoint: PJSIP/desk}\nstart: s\nsteps:\n"
        + steps
        + ("" if "hangup:" in steps else "  h: {hangup: {}}\n")
    )
    pbx, registry = make({"PJSIP/desk": ANSWER})
    if keys:
        pbx.press(CALLER, keys, after=0.5)
    if "dial" in case or "escalate" in case:
        pbx.hang_up(CALLER, after=60)  # a minute of conversation, then the caller leaves
    await call_through(pbx, registry, flow)
    legs = [c.params["channelId"] for c in pbx.sent("POST", "/channels")]
    lines = [line.replace(CALLER, "C") for line in pbx.lines()]
    for leg in legs:
        lines = [line.replace(leg, "LEG") for line in lines]
    assert lines == expected, lines
    # Nothing asked twice: the one question is whether the voicemail has the mailbox,
    # which only Asterisk knows.
    asked = [line for line in lines if line.startswith("GET ")]
    assert asked == ([f"GET {C}/variable"] if case == "voicemail" else []), asked


async def test_a_first_connection_with_nothing_stranded_costs_one_request() -> None:
    pbx, registry = make()
    service = CallService(client_for(pbx), engine=None, flows=None, registry=registry)  # type: ignore[arg-type]
    await service.recover()
    assert pbx.lines() == ["GET /applications/callflow"]  # no GET /channels: no call to check


# -- stopping the daemon during a conversation -------------------------------------------------


class _OneFlow:
    """The service's flows: every number enters ``FLOW``."""

    def __init__(self) -> None:
        self.flow = compile_flow(FLOW)

    def for_number(self, dialed: str) -> object:
        return self.flow


async def test_a_conversation_goes_on_when_the_daemon_stops_and_is_logged_answered() -> None:
    # Found in review: after the stop's grace, a bridged call's task was cancelled, which
    # destroyed the bridge and hung up the doctor: the patient was left alone in silence,
    # and the call logged failed though the doctor had answered.
    registry = ChannelRegistry()
    service: CallService | None = None

    def sink(event: dict[str, object]) -> None:
        assert service is not None
        service.dispatch(event)

    pbx = FakeAsterisk({"PJSIP/doctor": ANSWER}, sink=sink)
    log = RecordingObserver()
    engine = Engine(Services(clock=lambda: TUESDAY_10H, observer=log))
    service = CallService(client_for(pbx), engine, _OneFlow(), registry=registry)  # type: ignore[arg-type]
    service.dispatch({"type": "StasisStart", "channel": pbx.add_caller(CALLER), "args": ["100"]})
    pbx.press(CALLER, "1", after=1.5)  # the menu (after the 1 s welcome): 1, the doctor
    await wait_until(lambda: CALLER in service.calls and service.calls[CALLER][0].bridged, 60)
    await service.stop(grace=0.0)
    [(_, outcome)] = log.ended
    assert (outcome.kind, outcome.destination) == (OutcomeKind.ANSWERED, "doctor")
    dial = [r for r in log.steps if r.kind is StepKind.DIAL]
    assert dial[-1].detail == "the daemon stopped during the conversation: left to go on"
    # Nothing torn down: the bridge holds both, nobody hung up, no fallback.
    assert pbx.hung_up() == []
    assert not [line for line in pbx.lines() if line.startswith("DELETE /bridges")]
    assert not pbx.sent("POST", f"/channels/{CALLER}/continue")
    assert [sorted(members) for members in pbx.bridges.values()] == [
        sorted([CALLER, *[c for c in pbx.channels if c.startswith("leg-")]])
    ]


# A tier 1 as the first step: the caller is not answered yet when the line starts ringing.
# (A stand-in number: never an emergency number in tests.)
TIER1_FIRST = """
version: 1
flow: t
numbers: ["100"]
timezone: Europe/Paris
destinations:
  urgences: {number: "0299999999", route: out}
routes:
  out: [trunk-a]
start: urgent
steps:
  urgent:
    escalate: {tier: 1, announce: custom/call-15, to: urgences}
"""


async def test_a_caller_gone_as_the_ringing_message_starts_leaves_no_leg_ringing() -> None:
    # Found in review: the leg was originated before the try; the caller gone when the
    # message while ringing started (its answer refused), the emergency line rang on.
    pbx, registry = make({"PJSIP/0299999999@trunk-a": RINGOUT})
    pbx.reply("POST", f"/channels/{CALLER}/answer", 404, {"message": "Channel not found"})
    outcome, _ = await call_through(pbx, registry, TIER1_FIRST)
    [leg] = [r.params["channelId"] for r in pbx.sent("POST", "/channels")]
    assert leg in pbx.hung_up(), pbx.lines()
    assert outcome.kind is not OutcomeKind.EMERGENCY


async def test_a_shed_call_whose_caller_hung_up_first_is_abandoned_not_failed() -> None:
    # Found in review: under overload it was logged a failure of the daemon.
    pbx, registry = make()
    call = AriCall(client_for(pbx), registry, pbx.add_caller(CALLER), dialed="100")
    pbx.reply("POST", f"/channels/{CALLER}/continue", 404, {"message": "Channel not found"})
    log = RecordingObserver()
    engine = Engine(Services(clock=lambda: TUESDAY_10H, observer=log))
    outcome = await engine.shed(compile_flow(FLOW), call, "overload (in_flight)")
    assert outcome.kind is OutcomeKind.ABANDONED
    assert outcome.detail == "shed (overload (in_flight)); the caller hung up first"
    assert log.outcomes == [outcome]
