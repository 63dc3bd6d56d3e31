"""The survey step: the caller rates the conversation once the callee hung up.

The engine on the scripted fake call of ``test_engine``, then over the fake Asterisk (ARI,
virtual clock) and the fake FastAGI peer: the same semantics behind each driver.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from callflow.agi import AgiConfig, AgiServer
from callflow.ari.call import AriCall
from callflow.ari.channels import ChannelRegistry
from callflow.errors import CallerHangup, TelephonyError
from callflow.flow.engine import Engine
from callflow.flow.events import (
    FanOut,
    Outcome,
    OutcomeKind,
    StepKind,
    StepRecord,
    StepResult,
)
from callflow.flow.live import LiveFlows
from callflow.flow.services import Services
from callflow.metrics import Metrics
from callflow.simulate import Scenario, SimulatedCall
from callflow.telephony import DialResult, DialStatus
from tests.support.fake_agi import Dialed, FakeAgiAsterisk
from tests.support.fake_asterisk import ANSWER, FakeAsterisk, client_for, route_to
from tests.support.flows import compile_flow, write_flow
from tests.support.observer import RecordingObserver
from tests.support.polling import wait_until
from tests.unit.test_engine import FakeCall, make_flow, run

RATE = "{prompt: custom/rate, timeout: 4s, invalid: custom/invalid, thanks: custom/thanks}"
SURVEY = f"""
first:
  dial: desk
  next: rate
  no_answer: cb
rate:
  survey: {RATE}
cb:
  callback: {{queue: same-day}}
"""

ANSWERED = Outcome(OutcomeKind.ANSWERED, "first", "desk")


def survey_of(steps: list[StepRecord]) -> StepRecord:
    (rec,) = [r for r in steps if r.kind is StepKind.SURVEY]
    return rec


# -- the engine --------------------------------------------------------------------------------


async def test_the_caller_rates_the_call_once_the_callee_hung_up() -> None:
    call = FakeCall(keys=["4"])
    outcome, rec, _ = await run(make_flow(SURVEY), call)
    assert outcome == ANSWERED
    survey = survey_of(rec.steps)
    assert (survey.result, survey.score, survey.attempt, survey.next) == (
        StepResult.RATED,
        4,
        1,
        None,
    )
    assert survey.outcome is None  # the dial decided the outcome; the survey only rates it
    assert survey.key is None  # the score is the fact, in its own field
    assert call.actions[-3:] == [
        ("collect", "custom/rate", 4.0),
        ("play", ["custom/thanks"]),
        ("hangup",),  # no next: the survey ends the call
    ]


async def test_a_key_outside_the_scale_is_asked_again_once() -> None:
    call = FakeCall(keys=["0", "5"])
    _, rec, _ = await run(make_flow(SURVEY), call)
    survey = survey_of(rec.steps)
    assert (survey.result, survey.score, survey.attempt) == (StepResult.RATED, 5, 2)
    assert call.did("play") == [("play", ["custom/invalid"]), ("play", ["custom/thanks"])]


@pytest.mark.parametrize(
    ("keys", "detail", "attempt"),
    [
        (["7", "#"], "no answer to survey: key outside the scale, key outside the scale", 2),
        ([], "no answer to survey: no key", 1),  # silence is not asked again
        (["9", ""], "no answer to survey: key outside the scale, no key", 2),
    ],
)
async def test_no_rating_is_an_answer_not_an_error(
    keys: list[str], detail: str, attempt: int
) -> None:
    call = FakeCall(keys=keys)
    outcome, rec, _ = await run(make_flow(SURVEY), call)
    assert outcome == ANSWERED
    survey = survey_of(rec.steps)
    assert (survey.result, survey.score, survey.detail, survey.attempt) == (
        StepResult.NO_RATING,
        None,
        detail,
        attempt,
    )
    assert ("play", ["custom/thanks"]) not in call.actions
    assert call.did("hangup") == [("hangup",)]


async def test_a_caller_hanging_up_at_the_survey_gives_no_rating_and_keeps_the_outcome() -> None:
    call = FakeCall(raise_at={"collect": CallerHangup("gone")})
    outcome, rec, _ = await run(make_flow(SURVEY), call)
    assert outcome == ANSWERED  # not abandoned: the caller spoke to the desk
    survey = survey_of(rec.steps)
    assert (survey.result, survey.detail) == (
        StepResult.NO_RATING,
        "no answer to survey: caller hung up",
    )
    assert [r.result for r in rec.steps].count(StepResult.ABANDONED) == 0


async def test_a_hangup_during_the_thanks_keeps_the_rating() -> None:
    call = FakeCall(keys=["3"], raise_at={"play:custom/thanks": CallerHangup("gone")})
    outcome, rec, _ = await run(make_flow(SURVEY), call)
    assert outcome == ANSWERED
    survey = survey_of(rec.steps)
    assert (survey.result, survey.score) == (StepResult.RATED, 3)


class CallerEndsTheTalk(FakeCall):
    """The callee answers; the caller is the one who hangs up the conversation."""

    async def dial(self, target: str, **kw: Any) -> DialResult:
        await super().dial(target, **kw)
        return DialResult(DialStatus.ANSWER, 3.0, caller_hung_up=True)


async def test_no_survey_when_the_caller_hangs_up_first() -> None:
    call = CallerEndsTheTalk()
    outcome, rec, _ = await run(make_flow(SURVEY), call)
    assert outcome == ANSWERED
    assert rec.path == ["first"]
    dial = rec.steps[-1]
    assert (dial.kind, dial.result, dial.next) == (StepKind.DIAL, StepResult.ANSWERED, None)
    assert dial.detail == "the caller ended the conversation"
    assert call.did("collect") == []


async def test_a_survey_goes_on_to_its_next_step() -> None:
    steps = SURVEY.replace(f"survey: {RATE}", f"survey: {RATE}\n  next: bye") + (
        "bye:\n  hangup: {announce: custom/goodbye}\n"
    )
    call = FakeCall(keys=["2"])
    outcome, rec, _ = await run(make_flow(steps), call)
    assert outcome == ANSWERED  # the flow's goodbye keeps who was reached
    assert rec.path == ["first", "rate", "bye"]
    assert survey_of(rec.steps).next == "bye"


async def test_a_pbx_failure_at_the_survey_ends_the_call_without_the_fallback() -> None:
    call = FakeCall(raise_at={"collect": TelephonyError("no such sound")})
    outcome, rec, _ = await run(make_flow(SURVEY), call)
    assert outcome == ANSWERED
    survey = survey_of(rec.steps)
    assert survey.result is StepResult.ERROR
    assert call.dialed_targets == ["PJSIP/desk"]  # the fallback destination is not rung
    assert call.did("last_resort") == []


async def test_an_unchecked_flow_never_asks_after_an_emergency_tier() -> None:
    # The checker refuses this flow; the engine does not ask either.
    steps = """
    first:
      escalate: {tier: 1, to: samu}
      failed: desk2
    desk2:
      dial: desk
      next: rate
    rate:
      survey: {prompt: custom/rate}
    """
    call = FakeCall(keys=["5"], dial={"PJSIP/15@trunk-b": DialStatus.NOANSWER})
    outcome, rec, _ = await run(make_flow(steps, checked=False), call)
    assert (outcome.kind, outcome.destination, outcome.tier) == (OutcomeKind.ANSWERED, "desk", 1)
    survey = survey_of(rec.steps)
    assert (survey.result, survey.detail) == (StepResult.NOT_ASKED, "after an emergency tier")
    assert call.did("collect") == []


# -- the checker ---------------------------------------------------------------------------------

CHECKED = """
version: 1
flow: t
numbers: ["100"]
timezone: Europe/Paris
destinations:
  desk: {endpoint: PJSIP/desk}
  samu: {number: "15", route: emergency}
routes:
  emergency: [trunk-a]
start: menu
steps:
  menu:
    menu: {prompt: custom/menu, options: {"1": urgent, "2": desk}}
    failed: desk
  urgent:
    escalate: {tier: 1, to: samu}
    failed: desk
  desk:
    dial: desk
    next: rate
  rate:
    survey: {prompt: custom/rate, scale: 5}
"""


def check(write_flow: Callable[..., Path], run_cli: Callable[..., Any], text: str) -> list[str]:
    path = write_flow(text)
    result = run_cli("check", path)
    assert result.code == 1
    return [
        line.removeprefix(f"{path}:") for line in result.err_lines if line.startswith(str(path))
    ]


def test_a_survey_after_an_emergency_tier_is_refused_at_its_line(
    write_flow: Callable[..., Path], run_cli: Callable[..., Any]
) -> None:
    assert check(write_flow, run_cli, CHECKED) == [
        "21:3: survey 'rate' can follow the emergency tier 1 of step 'urgent' (urgent → desk "
        "→ rate): a caller who went through an emergency tier is never asked to rate the call"
    ]


def test_the_same_flow_with_its_own_dial_after_the_emergency_is_valid(
    write_flow: Callable[..., Path], run_cli: Callable[..., Any]
) -> None:
    text = CHECKED.replace("    failed: desk\n  desk:", "    failed: desk2\n  desk:") + (
        "  desk2:\n    dial: desk\n"
    )
    result = run_cli("check", write_flow(text))
    assert (result.code, result.err) == (0, "")


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (
            ('options: {"1": urgent, "2": desk}', 'options: {"1": urgent, "2": rate}'),
            "13:61: 'menu.options.2' of step 'menu' leads to survey 'rate': a survey rates a "
            "conversation, so only the 'next' of a dial or forward step (taken when the callee "
            "hangs up) may name it",
        ),
        (
            ("    dial: desk\n    next: rate", "    dial: desk\n    no_answer: rate"),
            "20:16: 'no_answer' of step 'desk' leads to survey 'rate': a survey rates a "
            "conversation, so only the 'next' of a dial or forward step (taken when the callee "
            "hangs up) may name it",
        ),
        (
            ("start: menu", "start: rate"),
            "10:8: the flow cannot start with survey 'rate': a survey rates a conversation, so "
            "only the 'next' of a dial or forward step may name it",
        ),
        (("scale: 5", "scale: 10"), "22:42: Input should be less than or equal to 9 (got '10')"),
        (("scale: 5", "scale: 1"), "22:42: Input should be greater than or equal to 2 (got '1')"),
        (("scale: 5", "scale: 5, key: 1"), "22:45: unknown key 'key'"),
    ],
)
def test_a_survey_out_of_place_or_malformed_is_refused_with_file_line(
    write_flow: Callable[..., Path],
    run_cli: Callable[..., Any],
    change: tuple[str, str],
    error: str,
) -> None:
    text = CHECKED.replace("    failed: desk\n  desk:", "    failed: desk2\n  desk:") + (
        "  desk2:\n    dial: desk\n"
    )
    assert change[0] in text
    errors = check(write_flow, run_cli, text.replace(*change))
    assert error in errors, errors


# -- over ARI (the fake Asterisk, virtual clock) -------------------------------------------------

CALLER = "caller-1"
TUESDAY_10H = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
ARI_FLOW = """
version: 1
flow: t
numbers: ["100"]
timezone: Europe/Paris
destinations:
  desk: {endpoint: PJSIP/desk}
start: talk
steps:
  talk:
    dial: desk
    next: rate
  rate:
    survey: {prompt: custom/rate, scale: 5, thanks: custom/thanks}
"""


async def ari_call(hang_up_first: str, key: str = "") -> tuple[FakeAsterisk, RecordingObserver]:
    """A call that reaches the desk; after 30 s ``hang_up_first`` ("callee" or "caller")
    hangs up; then the caller presses ``key``."""
    registry = ChannelRegistry()
    pbx = FakeAsterisk({"PJSIP/desk": ANSWER}, sink=route_to(registry))
    call = AriCall(client_for(pbx), registry, pbx.add_caller(CALLER), dialed="100")
    log = RecordingObserver()
    engine = Engine(Services(clock=lambda: TUESDAY_10H, observer=log))

    async def talk_then_hang_up() -> None:
        await wait_until(lambda: any(len(m) == 2 for m in pbx.bridges.values()), 600)
        (leg,) = [c for c in pbx.channels if c.startswith("leg-")]
        pbx.hang_up(leg if hang_up_first == "callee" else CALLER, after=30)
        if key:
            pbx.press(CALLER, key, after=31.5)

    async with asyncio.timeout(3600):  # virtual seconds
        await asyncio.gather(engine.run(compile_flow(ARI_FLOW), call), talk_then_hang_up())
    return pbx, log


@pytest.mark.looptime
async def test_over_ari_the_caller_stays_after_the_callee_hangs_up_and_rates() -> None:
    pbx, log = await ari_call("callee", key="4")
    assert log.outcomes == [Outcome(OutcomeKind.ANSWERED, "talk", "desk")]
    survey = survey_of(log.steps)
    assert (survey.result, survey.score) == (StepResult.RATED, 4)
    lines = pbx.lines()
    # The bridge went with the callee; the caller was asked, thanked, then hung up.
    after = lines[lines.index("DELETE /bridges/bridge-1") :]
    assert after.count(f"POST /channels/{CALLER}/play") == 2
    assert after[-1] == f"DELETE /channels/{CALLER}"


@pytest.mark.looptime
async def test_over_ari_no_survey_when_the_caller_hangs_up_first() -> None:
    pbx, log = await ari_call("caller")
    assert log.outcomes == [Outcome(OutcomeKind.ANSWERED, "talk", "desk")]
    assert [r.kind for r in log.steps] == [StepKind.ATTEMPT, StepKind.DIAL]
    assert log.steps[-1].next is None
    assert f"POST /channels/{CALLER}/play" not in pbx.lines()


# -- over FastAGI (the fake peer) --------------------------------------------------------------

AGI_FLOW = """
version: 1
flow: agi
numbers: ["100"]
timezone: Europe/Paris
destinations:
  desk: {endpoint: PJSIP/accueil, ring: 6s}
start: talk
steps:
  talk:
    dial: desk
    next: rate
  rate:
    survey: {prompt: custom/rate, scale: 5, thanks: custom/thanks}
"""


@pytest.fixture
async def agi(tmp_path: Path) -> AsyncIterator[tuple[AgiServer, RecordingObserver]]:
    write_flow(tmp_path / "flows", AGI_FLOW, "agi.yaml")
    log = RecordingObserver()
    engine = Engine(Services(clock=lambda: TUESDAY_10H, observer=log))
    config = AgiConfig(port=0, request_timeout=2.0, command_timeout=2.0, stop_grace=1.0)
    async with AgiServer(engine, LiveFlows(tmp_path / "flows", "agi"), config) as srv:
        yield srv, log


async def agi_call(server: AgiServer, **kw: Any) -> FakeAgiAsterisk:
    assert server.port is not None
    peer = FakeAgiAsterisk(server.port, **kw)
    await asyncio.wait_for(peer.run(), 20)
    return peer


async def test_over_agi_dial_comes_back_when_the_callee_hangs_up_and_the_caller_rates(
    agi: tuple[AgiServer, RecordingObserver],
) -> None:
    server, log = agi
    peer = await agi_call(server, keys=["2"], dials=[Dialed("ANSWER")])
    await wait_until(lambda: bool(log.outcomes), 10)
    assert log.outcomes == [Outcome(OutcomeKind.ANSWERED, "talk", "desk")]
    survey = survey_of(log.steps)
    assert (survey.result, survey.score) == (StepResult.RATED, 2)
    dial = peer.commands.index('EXEC Dial "PJSIP/accueil,6,g"')  # g: back to us after
    after = peer.commands[dial:]
    assert any(c.startswith('GET OPTION "custom/rate"') for c in after)
    assert 'STREAM FILE "custom/thanks" ""' in after
    assert after[-1] == "HANGUP"


async def test_over_agi_no_survey_when_the_caller_hangs_up_first(
    agi: tuple[AgiServer, RecordingObserver],
) -> None:
    server, log = agi
    peer = await agi_call(server, keys=["2"], dials=[Dialed("ANSWER", caller_hangs_up=True)])
    await wait_until(lambda: bool(log.outcomes), 10)
    assert log.outcomes == [Outcome(OutcomeKind.ANSWERED, "talk", "desk")]
    assert not [r for r in log.steps if r.kind is StepKind.SURVEY]
    assert not [c for c in peer.commands if c.startswith("GET OPTION")]


# -- metrics -------------------------------------------------------------------------------------


async def test_metrics_count_ratings_by_score_and_answered_or_declined() -> None:
    m = Metrics()
    flow = compile_flow(ARI_FLOW)
    for digits in (["4"], ["4"], ["5"], [], ["0", "#"]):
        services = Services(clock=lambda: TUESDAY_10H, observer=FanOut(m))
        call = SimulatedCall(flow, Scenario(digits=digits), caller="0612345678", dialed="100")
        await Engine(services).run(flow, call)

    def value(name: str, **labels: str) -> float | None:
        return m.registry.get_sample_value(name, labels)

    assert value("callflow_survey_ratings_total", flow="t", score="4") == 2
    assert value("callflow_survey_ratings_total", flow="t", score="5") == 1
    assert value("callflow_survey_ratings_total", flow="t", score="1") is None
    assert value("callflow_surveys_total", flow="t", answer="answered") == 3
    assert value("callflow_surveys_total", flow="t", answer="declined") == 2
    assert value("callflow_steps_total", flow="t", step="rate", kind="survey") == 5
    assert value("callflow_calls_total", flow="t", outcome="answered", driver="simulator") == 5


async def test_the_rating_is_never_written_to_the_log(caplog: pytest.LogCaptureFixture) -> None:
    steps = SURVEY.replace("prompt: custom/rate,", "prompt: custom/rate, scale: 9,")
    with caplog.at_level("DEBUG"):
        _, rec, _ = await run(make_flow(steps), FakeCall(keys=["7"]))
    assert survey_of(rec.steps).score == 7  # the call log has it ...
    lines = [r.getMessage() for r in caplog.records]
    assert any("kind=survey result=rated" in line for line in lines)
    assert not any(re.search(r"\b7\b", line) for line in lines), lines  # ... the log does not
