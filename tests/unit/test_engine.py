"""The flow engine, step by step, with a scripted fake call (no PBX, no clock)."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from callflow.errors import CallerHangup, CallLost, TelephonyError
from callflow.flow.engine import RESCUE_SEQ, Engine, mask
from callflow.flow.events import (
    CallAnswered,
    CallInfo,
    FanOut,
    Outcome,
    OutcomeKind,
    StepKind,
    StepRecord,
    StepResult,
)
from callflow.flow.loader import load_text
from callflow.flow.parse import parse_document
from callflow.flow.registry import LoadedFlow, compile_document
from callflow.flow.services import CallbackRequest, InOrder, MemoryCallbacks, Services
from callflow.schedule import Calendar, Override, OverrideStore
from callflow.telephony import DialResult, DialStatus, Driver, Handoff

# A Tuesday, 10:00 in Paris.
TUESDAY_10H = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)

HEADER = """
version: 1
flow: test
numbers: ["100"]
timezone: Europe/Paris
destinations:
  desk: {endpoint: PJSIP/desk, ring: 20s}
  backup: {endpoint: PJSIP/backup}
  ext: {number: "0180000000", route: outbound}
  samu: {number: "15", route: emergency}
  doc-a: {number: "0600000001", route: outbound}
  doc-b: {endpoint: PJSIP/doc-b}
  doc-c: {number: "0600000003", route: outbound}
routes:
  outbound: [trunk-a, trunk-b]
  emergency: [trunk-b, trunk-a]
calendars:
  office:
    weekly: {mon-fri: ["08:00-18:00"]}
    holidays: {country: FR}
queues:
  same-day: {overdue: 4h}
oncall:
  doctors:
    - {calendar: office, people: [doc-a, doc-b]}
    - {people: [doc-c]}
"""


def make_flow(steps: str, *, fallback: str | None = "backup", checked: bool = True) -> LoadedFlow:
    """A flow of HEADER and ``steps`` (starting at 'first'); ``checked=False`` skips the
    graph checks, so a test may leave unreachable steps behind."""
    text = textwrap.dedent(HEADER).lstrip()
    if fallback:
        text += f"fallback: {fallback}\n"
    text += "start: first\nsteps:\n" + textwrap.indent(textwrap.dedent(steps).strip(), "  ")
    doc = load_text(text + "\n", "test.yaml")
    if checked:
        return compile_document(doc)
    spec = parse_document(doc)
    tz = ZoneInfo(spec.timezone)
    calendars = {name: Calendar(name, cal, tz) for name, cal in spec.calendars.items()}
    return LoadedFlow(spec, doc.file, doc.digest, tz, calendars, doc)


class FakeCall:
    """Records every action; answers per a script; raises where told."""

    def __init__(
        self,
        *,
        keys: Sequence[str] = (),
        dial: dict[str, DialStatus] | None = None,
        voicemail: bool = True,
        caller: str = "06 12 34 56 78",
        raise_at: dict[str, BaseException] | None = None,
        call_id: str = "c1",
        delay: float = 0.0,
    ) -> None:
        self.keys = list(keys)
        self.messages_while_ringing: list[list[str]] = []
        self.dial_status = dict(dial or {})
        self.voicemail_ok = voicemail
        self._caller = caller
        self.raise_at = dict(raise_at or {})  # "method" or "method:target/prompt"
        self._id = call_id
        self.delay = delay
        self.went_first = False
        self.actions: list[tuple[Any, ...]] = []

    @property
    def id(self) -> str:
        return self._id

    @property
    def caller(self) -> str:
        return self._caller

    @property
    def dialed(self) -> str:
        return "100"

    @property
    def driver(self) -> Driver:
        return Driver.SIMULATOR

    async def _do(self, method: str, arg: str, *action: Any) -> None:
        await asyncio.sleep(self.delay)
        self.actions.append((method, *action))
        for key in (f"{method}:{arg}", method):
            if key in self.raise_at:
                raise self.raise_at[key]

    async def answer(self) -> None:
        await self._do("answer", "")

    async def play(self, prompts: Sequence[str], *, barge_in: bool = False) -> str:
        await self._do("play", prompts[0], list(prompts))
        return ""

    async def collect(
        self,
        prompt: str | None,
        *,
        max_digits: int,
        first_timeout: float,
        inter_timeout: float,
        barge_in: bool = True,
    ) -> str:
        await self._do("collect", prompt or "", prompt, first_timeout)
        return self.keys.pop(0) if self.keys else ""

    async def dial(
        self,
        target: str,
        *,
        timeout: float,
        caller_id: str | None = None,
        setup_timeout: float | None = None,
        while_ringing: Sequence[str] = (),
    ) -> DialResult:
        self.messages_while_ringing.append(list(while_ringing))
        await self._do("dial", target, target, timeout)
        return _dial_result(self.dial_status.get(target, DialStatus.ANSWER))

    async def dial_confirm(
        self,
        target: str,
        *,
        timeout: float,
        confirm: str,
        announce: Sequence[str],
        confirm_timeout: float,
        setup_timeout: float | None = None,
    ) -> DialResult:
        await self._do("dial_confirm", target, target, confirm, list(announce))
        return _dial_result(self.dial_status.get(target, DialStatus.ANSWER))

    async def voicemail(self, box: str) -> bool:
        await self._do("voicemail", box, box)
        return self.voicemail_ok

    async def set_variable(self, name: str, value: str) -> None:
        await self._do("set_variable", name, name, value)

    async def last_resort(self) -> Handoff:
        await self._do("last_resort", "")
        return Handoff.HANDED

    async def hangup(self) -> None:
        await self._do("hangup", "")

    def go_first(self) -> None:
        self.went_first = True  # not an action: it asks the PBX for nothing

    def did(self, method: str) -> list[tuple[Any, ...]]:
        return [a for a in self.actions if a[0] == method]

    @property
    def dialed_targets(self) -> list[str]:
        return [a[1] for a in self.actions if a[0] in ("dial", "dial_confirm")]


ANSWER_DELAY = 3.0  # seconds every fake callee takes to answer


def _dial_result(status: DialStatus) -> DialResult:
    return DialResult(status, ANSWER_DELAY if status is DialStatus.ANSWER else None)


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def call_started(self, info: CallInfo) -> None:
        self.events.append(("started", info))

    def step(self, record: StepRecord) -> None:
        self.events.append(("step", record))

    def call_answered(self, event: CallAnswered) -> None:
        self.events.append(("answered", event))

    def call_ended(self, info: CallInfo, outcome: Outcome, at: datetime) -> None:
        self.events.append(("ended", outcome))

    @property
    def answers(self) -> list[CallAnswered]:
        return [e[1] for e in self.events if e[0] == "answered"]

    @property
    def steps(self) -> list[StepRecord]:
        return [e[1] for e in self.events if e[0] == "step"]

    @property
    def path(self) -> list[str]:
        return [r.step for r in self.steps if r.kind not in ("attempt", "fallback")]

    def results(self) -> list[tuple[str, str, str]]:
        return [(r.step, r.kind, r.result) for r in self.steps]


class SpyTrunks(InOrder):
    def __init__(self) -> None:
        self.asked: list[tuple[list[str], bool]] = []
        self.reports: list[tuple[str, DialStatus]] = []

    def candidates(self, trunks: Sequence[str], *, emergency: bool) -> list[str]:
        self.asked.append((list(trunks), emergency))
        return list(trunks)

    def report(self, trunk: str, status: DialStatus) -> None:
        self.reports.append((trunk, status))


def services(
    *, at: datetime = TUESDAY_10H, max_steps: int = 200, **kw: Any
) -> tuple[Services, Recorder]:
    rec = Recorder()
    kw.setdefault("observer", rec)
    return Services(clock=lambda: at, max_steps=max_steps, **kw), rec


async def run(flow: LoadedFlow, call: FakeCall, **kw: Any) -> tuple[Outcome, Recorder, Services]:
    s, rec = services(**kw)
    outcome = await Engine(s).run(flow, call)
    return outcome, rec, s


# -- play, set, goto, hangup ----------------------------------------------------------------

BASIC = """
first:
  play: [custom/welcome, custom/notice]
  next: vars
vars:
  set: {PRACTICE: parc, LANG: fr}
  next: jump
jump:
  goto: bye
bye:
  hangup: {announce: custom/goodbye}
"""


async def test_play_set_goto_hangup() -> None:
    call = FakeCall()
    outcome, rec, _ = await run(make_flow(BASIC), call)
    assert outcome == Outcome(OutcomeKind.HANGUP, "bye")
    assert call.actions == [
        ("answer",),
        ("play", ["custom/welcome", "custom/notice"]),
        ("set_variable", "PRACTICE", "parc"),
        ("set_variable", "LANG", "fr"),
        ("play", ["custom/goodbye"]),
        ("hangup",),
    ]
    assert rec.results() == [
        ("first", "play", "played"),
        ("vars", "set", "set"),
        ("jump", "goto", "goto"),
        ("bye", "hangup", "done"),
    ]
    assert [r.next for r in rec.steps] == ["vars", "jump", "bye", None]


async def test_hangup_without_announce_does_not_answer() -> None:
    call = FakeCall()
    outcome, _, _ = await run(make_flow("first:\n  hangup:\n"), call)
    assert outcome.kind is OutcomeKind.HANGUP
    assert call.actions == [("hangup",)]


# -- menu -----------------------------------------------------------------------------------

MENU = """
first:
  menu:
    prompt: custom/menu
    options: {"1": one, "2": two}
    timeout: 6s
    attempts: 3
    invalid: custom/invalid
    no_input: custom/no-input
  failed: gave-up
one:
  hangup:
two:
  hangup:
gave-up:
  voicemail: {box: practice}
"""


async def test_menu_valid_key() -> None:
    call = FakeCall(keys=["2"])
    outcome, rec, _ = await run(make_flow(MENU), call)
    assert outcome == Outcome(OutcomeKind.HANGUP, "two")
    assert call.did("collect") == [("collect", "custom/menu", 6.0)]
    first = rec.steps[0]
    assert (first.kind, first.result, first.key, first.attempt, first.next) == (
        StepKind.MENU,
        StepResult.PRESSED,
        "2",
        1,
        "two",
    )
    assert first.detail == "attempt 1: pressed 2"


async def test_at_info_a_call_logs_its_start_and_end_but_not_the_branch_it_took(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level("INFO", logger="callflow.call"):
        await run(make_flow(MENU), FakeCall(keys=["2"]))
    lines = [r.getMessage() for r in caplog.records if r.levelname == "INFO"]
    assert [line.split("event=")[1].split()[0] for line in lines] == ["start", "end"]
    assert not any("next=" in line for line in lines)  # the triage branch: DEBUG only
    caplog.clear()
    with caplog.at_level("DEBUG", logger="callflow.call"):
        await run(make_flow(MENU), FakeCall(keys=["2"]))
    assert any(
        "step=first kind=menu result=pressed next=two" in r.getMessage() for r in caplog.records
    )


async def test_menu_invalid_then_valid() -> None:
    call = FakeCall(keys=["7", "1"])
    outcome, rec, _ = await run(make_flow(MENU), call)
    assert outcome.step == "one"
    assert call.did("play") == [("play", ["custom/invalid"])]
    assert (rec.steps[0].key, rec.steps[0].attempt) == ("1", 2)
    assert rec.steps[0].detail == "attempt 2: invalid key '7', pressed 1"


async def test_menu_timeout_plays_no_input_then_valid() -> None:
    call = FakeCall(keys=["", "1"])
    outcome, rec, _ = await run(make_flow(MENU), call)
    assert outcome.step == "one"
    assert call.did("play") == [("play", ["custom/no-input"])]
    assert rec.steps[0].detail == "attempt 2: no input, pressed 1"


async def test_menu_attempts_exhausted_goes_to_failed() -> None:
    call = FakeCall(keys=["", "9", ""])
    outcome, rec, _ = await run(make_flow(MENU), call)
    assert outcome == Outcome(OutcomeKind.VOICEMAIL, "gave-up")
    assert len(call.did("collect")) == 3
    assert rec.steps[0].result == "failed"
    assert rec.steps[0].detail == "attempt 3: no input, invalid key '9', no input"
    assert rec.steps[0].next == "gave-up"


@pytest.mark.parametrize("garbage", ["*#9", "#", "*", "\x00\x1b[2J", "１", "98765432109876543210"])
async def test_menu_garbage_digits_do_not_crash(garbage: str) -> None:
    call = FakeCall(keys=[garbage, garbage, garbage])
    outcome, rec, _ = await run(make_flow(MENU), call)
    assert outcome.kind is OutcomeKind.VOICEMAIL  # the failed branch, not a crash
    assert rec.steps[0].result == "failed"
    assert "internal error" not in rec.steps[0].detail
    assert all(c.isprintable() for c in rec.steps[0].detail)


async def test_menu_takes_only_the_first_key() -> None:
    call = FakeCall(keys=["1#"])
    outcome, _, _ = await run(make_flow(MENU), call)
    assert outcome.step == "one"


# -- schedule -------------------------------------------------------------------------------

SCHEDULE = """
first:
  schedule: office
  open: in
  closed: out
  holiday: feast
in:
  hangup:
out:
  hangup:
feast:
  hangup:
"""


@pytest.mark.parametrize(
    ("at", "step", "result"),
    [
        (TUESDAY_10H, "in", "open"),
        (datetime(2026, 12, 1, 19, 0, tzinfo=UTC), "out", "closed"),  # Tue 20:00 Paris
        (datetime(2026, 12, 5, 9, 0, tzinfo=UTC), "out", "closed"),  # Saturday
        (datetime(2026, 12, 25, 9, 0, tzinfo=UTC), "feast", "holiday"),  # Christmas, a Friday
    ],
)
async def test_schedule_branches(at: datetime, step: str, result: str) -> None:
    outcome, rec, _ = await run(make_flow(SCHEDULE), FakeCall(), at=at)
    assert outcome.step == step
    assert rec.steps[0].result == result


async def test_schedule_holiday_without_holiday_branch_is_closed() -> None:
    flow = make_flow(SCHEDULE.replace("  holiday: feast\n", ""), checked=False)
    at = datetime(2026, 12, 25, 9, 0, tzinfo=UTC)
    outcome, rec, _ = await run(flow, FakeCall(), at=at)
    assert outcome.step == "out"
    assert rec.steps[0].result == "closed"
    assert "Christmas" in rec.steps[0].detail


@pytest.mark.parametrize(
    ("at", "opened", "step"),
    [(TUESDAY_10H, False, "out"), (datetime(2026, 12, 25, 9, 0, tzinfo=UTC), True, "in")],
)
async def test_schedule_override_wins(at: datetime, opened: bool, step: str) -> None:
    overrides = OverrideStore()
    overrides.set("test/office", Override(opened, at + timedelta(hours=1), label="grève"))
    overrides.set("other/office", Override(not opened, at + timedelta(hours=1)))
    outcome, rec, _ = await run(make_flow(SCHEDULE), FakeCall(), at=at, overrides=overrides)
    assert outcome.step == step
    assert rec.steps[0].detail.startswith("override: ")


async def test_schedule_expired_override_is_ignored() -> None:
    overrides = OverrideStore()
    overrides.set("test/office", Override(False, TUESDAY_10H - timedelta(minutes=1)))
    outcome, _, _ = await run(make_flow(SCHEDULE), FakeCall(), overrides=overrides)
    assert outcome.step == "in"


# -- dial -----------------------------------------------------------------------------------

DIAL = """
first:
  dial: desk
  busy: on-busy
  no_answer: on-no-answer
  failed: on-failed
on-busy:
  hangup:
on-no-answer:
  hangup:
on-failed:
  hangup:
"""


async def test_dial_answered() -> None:
    call = FakeCall()
    outcome, rec, _ = await run(make_flow(DIAL), call)
    assert outcome == Outcome(OutcomeKind.ANSWERED, "first", "desk", None, None)
    assert call.did("dial") == [("dial", "PJSIP/desk", 20.0)]
    assert call.did("answer") == []  # the callee answers, not the flow
    assert rec.results() == [("first", "attempt", "answer"), ("first", "dial", "answered")]
    # The answer is an event of its own, stamped when the callee answered.
    [answer] = rec.answers
    assert (answer.step, answer.destination, answer.trunk) == ("first", "desk", None)
    assert answer.at == TUESDAY_10H + timedelta(seconds=ANSWER_DELAY)
    assert [e[0] for e in rec.events] == ["started", "step", "answered", "step", "ended"]


@pytest.mark.parametrize(
    ("status", "branches", "expected"),
    [
        (DialStatus.BUSY, DIAL, "on-busy"),
        (DialStatus.BUSY, DIAL.replace("  busy: on-busy\n", ""), "on-no-answer"),
        (
            DialStatus.BUSY,
            DIAL.replace("  busy: on-busy\n", "").replace("  no_answer: on-no-answer\n", ""),
            "on-failed",
        ),
        (DialStatus.NOANSWER, DIAL, "on-no-answer"),
        (DialStatus.NOANSWER, DIAL.replace("  no_answer: on-no-answer\n", ""), "on-failed"),
        (DialStatus.CHANUNAVAIL, DIAL, "on-failed"),
        (DialStatus.CONGESTION, DIAL.replace("  failed: on-failed\n", ""), "on-no-answer"),
    ],
)
async def test_dial_not_reached_branches(status: DialStatus, branches: str, expected: str) -> None:
    flow = make_flow(branches, checked=False)  # leaves the unused branch steps behind
    call = FakeCall(dial={"PJSIP/desk": status})
    outcome, rec, _ = await run(flow, call)
    assert outcome.step == expected
    assert rec.steps[1].result == status.lower()


async def test_dial_not_reached_without_branches_goes_to_fallback() -> None:
    call = FakeCall(dial={"PJSIP/desk": DialStatus.NOANSWER})
    outcome, rec, _ = await run(make_flow("first:\n  dial: desk\n"), call)
    assert outcome.kind is OutcomeKind.ANSWERED
    assert outcome.destination == "backup"
    assert outcome.detail == "fallback: step 'first' ended with noanswer"
    assert call.dialed_targets == ["PJSIP/desk", "PJSIP/backup"]
    assert rec.results()[-1] == ("first", "fallback", "answer")


async def test_dial_not_reached_without_fallback_fails() -> None:
    call = FakeCall(dial={"PJSIP/desk": DialStatus.NOANSWER})
    outcome, _, _ = await run(make_flow("first:\n  dial: desk\n", fallback=None), call)
    assert outcome == Outcome(
        OutcomeKind.FAILED, "first", detail="step 'first' ended with noanswer"
    )
    # Nobody reached: the call goes to the PBX's last resort, it is not hung up.
    assert call.did("last_resort") == [("last_resort",)]
    assert call.did("hangup") == []


async def test_dial_with_next_goes_on_and_keeps_who_answered() -> None:
    flow = make_flow(
        """
        first:
          dial: desk
          next: survey
        survey:
          play: custom/survey
          next: bye
        bye:
          hangup:
        """
    )
    call = FakeCall()
    outcome, rec, _ = await run(flow, call)
    assert outcome == Outcome(OutcomeKind.ANSWERED, "first", "desk")
    assert rec.path == ["first", "survey", "bye"]


# -- forward and trunk failover -------------------------------------------------------------

FORWARD = """
first:
  forward: ext
  busy: on-busy
  failed: on-failed
on-busy:
  hangup:
on-failed:
  hangup:
"""
TRUNK_A = "PJSIP/0180000000@trunk-a"
TRUNK_B = "PJSIP/0180000000@trunk-b"


@pytest.mark.parametrize(
    "fault", [DialStatus.CHANUNAVAIL, DialStatus.CONGESTION, DialStatus.FAILED]
)
async def test_forward_fails_over_to_the_second_trunk(fault: DialStatus) -> None:
    trunks = SpyTrunks()
    call = FakeCall(dial={TRUNK_A: fault})
    outcome, rec, _ = await run(make_flow(FORWARD), call, trunks=trunks)
    assert outcome == Outcome(OutcomeKind.FORWARDED, "first", "ext", "trunk-b")
    assert call.dialed_targets == [TRUNK_A, TRUNK_B]
    assert trunks.asked == [(["trunk-a", "trunk-b"], False)]
    assert trunks.reports == [("trunk-a", fault), ("trunk-b", DialStatus.ANSWER)]
    assert [(r.kind, r.destination, r.trunk, r.dial_status, r.attempt) for r in rec.steps] == [
        (StepKind.ATTEMPT, "ext", "trunk-a", fault, 1),
        (StepKind.ATTEMPT, "ext", "trunk-b", DialStatus.ANSWER, 2),
        (StepKind.FORWARD, "ext", "trunk-b", DialStatus.ANSWER, None),
    ]
    assert rec.steps[-1].outcome is OutcomeKind.FORWARDED


@pytest.mark.parametrize(
    ("status", "step"), [(DialStatus.BUSY, "on-busy"), (DialStatus.NOANSWER, "on-failed")]
)
async def test_busy_or_no_answer_does_not_fail_over(status: DialStatus, step: str) -> None:
    call = FakeCall(dial={TRUNK_A: status})
    outcome, _, _ = await run(make_flow(FORWARD), call)
    assert call.dialed_targets == [TRUNK_A]  # the trunk did its job: trunk-b is not tried
    assert outcome.step == step


async def test_forward_all_trunks_down_goes_to_failed() -> None:
    call = FakeCall(dial={TRUNK_A: DialStatus.CHANUNAVAIL, TRUNK_B: DialStatus.CONGESTION})
    outcome, rec, _ = await run(make_flow(FORWARD), call)
    assert call.dialed_targets == [TRUNK_A, TRUNK_B]
    assert outcome.step == "on-failed"
    assert rec.steps[2].result == "congestion"


async def test_forward_with_no_trunk_available() -> None:
    class NoTrunks(InOrder):
        def candidates(self, trunks: Sequence[str], *, emergency: bool) -> list[str]:
            return []

    call = FakeCall()
    outcome, rec, _ = await run(make_flow(FORWARD), call, trunks=NoTrunks())
    assert call.dialed_targets == []
    assert outcome.step == "on-failed"
    assert rec.steps[0].result == "chanunavail"


# -- escalate -------------------------------------------------------------------------------

TIER1 = """
first:
  escalate: {tier: 1, announce: custom/call-15, to: samu}
  failed: desk
desk:
  dial: desk
"""
SAMU_B = "PJSIP/15@trunk-b"
SAMU_A = "PJSIP/15@trunk-a"


async def test_escalate_tier1_is_an_emergency() -> None:
    trunks = SpyTrunks()
    call = FakeCall()
    outcome, _, _ = await run(make_flow(TIER1), call, trunks=trunks)
    assert outcome == Outcome(OutcomeKind.EMERGENCY, "first", "samu", "trunk-b", 1)
    # Nothing before the emergency number: the message plays while it rings.
    assert call.actions[0] == ("dial", "PJSIP/15@trunk-b", 30.0)
    assert call.messages_while_ringing == [["custom/call-15"]]
    # The trunks to ring (even those down), and those usable before the ring (a ring-out
    # is a trunk fault only on a trunk lost while it rang).
    assert trunks.asked == [(["trunk-b", "trunk-a"], True), (["trunk-b", "trunk-a"], False)]


async def test_escalate_tier1_tries_every_trunk_then_failed_branch() -> None:
    call = FakeCall(dial={SAMU_B: DialStatus.CHANUNAVAIL, SAMU_A: DialStatus.CHANUNAVAIL})
    outcome, rec, _ = await run(make_flow(TIER1), call)
    assert call.dialed_targets == [SAMU_B, SAMU_A, "PJSIP/desk"]
    assert outcome == Outcome(OutcomeKind.ANSWERED, "desk", "desk", None, 1)
    escalate = rec.steps[2]
    assert (escalate.kind, escalate.tier, escalate.destination) == (StepKind.ESCALATE, 1, "samu")
    assert (escalate.result, escalate.dial_status) == (
        StepResult.CHANUNAVAIL,
        DialStatus.CHANUNAVAIL,
    )


async def test_escalate_tier1_second_trunk_answers() -> None:
    call = FakeCall(dial={SAMU_B: DialStatus.CONGESTION})
    outcome, _, _ = await run(make_flow(TIER1), call)
    assert outcome == Outcome(OutcomeKind.EMERGENCY, "first", "samu", "trunk-a", 1)


async def test_escalate_to_with_tier2_is_answered_not_emergency() -> None:
    flow = make_flow(TIER1.replace("tier: 1", "tier: 2"))
    call = FakeCall()
    outcome, _, _ = await run(flow, call)
    assert outcome.kind is OutcomeKind.ANSWERED
    assert outcome.tier == 2
    assert not call.went_first  # only an emergency skips the queue


RING_IN_TURN = """
first:
  escalate:
    tier: 2
    ring_in_turn: [doc-a, doc-b, doc-c]
    confirm: "5"
    callee_message: custom/oncall
  failed: nobody
nobody:
  callback: {queue: same-day, priority: high}
"""
DOC_A = "PJSIP/0600000001@trunk-a"
DOC_C = "PJSIP/0600000003@trunk-a"


async def test_ring_in_turn_third_accepts() -> None:
    call = FakeCall(dial={DOC_A: DialStatus.NOANSWER, "PJSIP/doc-b": DialStatus.DECLINED})
    outcome, rec, _ = await run(make_flow(RING_IN_TURN), call)
    assert outcome == Outcome(OutcomeKind.ANSWERED, "first", "doc-c", "trunk-a", 2)
    assert call.did("dial_confirm") == [
        ("dial_confirm", DOC_A, "5", ["custom/oncall"]),
        ("dial_confirm", "PJSIP/doc-b", "5", ["custom/oncall"]),
        ("dial_confirm", DOC_C, "5", ["custom/oncall"]),
    ]
    assert call.did("dial") == []
    last = rec.steps[-1]
    assert (last.result, last.tier, last.destination, last.attempt) == ("accepted", 2, "doc-c", 3)
    assert last.detail == "doc-a: noanswer; doc-b: declined; doc-c: answer"
    attempts = [(r.destination, r.dial_status) for r in rec.steps if r.kind == "attempt"]
    assert attempts == [
        ("doc-a", DialStatus.NOANSWER),
        ("doc-b", DialStatus.DECLINED),
        ("doc-c", DialStatus.ANSWER),
    ]


async def test_ring_in_turn_nobody_accepts_goes_to_failed_with_the_tier() -> None:
    call = FakeCall(
        dial={
            DOC_A: DialStatus.NOANSWER,
            "PJSIP/doc-b": DialStatus.DECLINED,
            DOC_C: DialStatus.BUSY,
        }
    )
    outcome, rec, s = await run(make_flow(RING_IN_TURN), call)
    assert outcome == Outcome(OutcomeKind.CALLBACK, "nobody", tier=2, detail="same-day")
    assert rec.steps[3].result == "nobody accepted"
    assert isinstance(s.callbacks, MemoryCallbacks)
    (request,) = s.callbacks.requests
    assert (request.queue, request.priority, request.tier) == ("same-day", "high", 2)


async def test_ring_in_turn_person_on_a_down_trunk_fails_over() -> None:
    call = FakeCall(dial={DOC_A: DialStatus.CHANUNAVAIL})
    outcome, _, _ = await run(make_flow(RING_IN_TURN), call)
    assert call.dialed_targets == [DOC_A, "PJSIP/0600000001@trunk-b"]
    assert (outcome.destination, outcome.trunk) == ("doc-a", "trunk-b")


# -- callback, voicemail --------------------------------------------------------------------

CALLBACK = """
first:
  callback: {queue: same-day, priority: urgent, announce: custom/we-call-back}
  failed: vm
vm:
  voicemail: {box: practice}
  failed: bye
bye:
  hangup:
"""


async def test_callback_request_is_submitted() -> None:
    call = FakeCall(caller="+33 6 12-34-56-78")
    outcome, rec, s = await run(make_flow(CALLBACK), call)
    assert outcome == Outcome(OutcomeKind.CALLBACK, "first", tier=None, detail="same-day")
    assert isinstance(s.callbacks, MemoryCallbacks)
    assert s.callbacks.requests == [
        CallbackRequest("c1", "test", "+33612345678", "same-day", "urgent", None, TUESDAY_10H)
    ]
    assert call.did("play") == [("play", ["custom/we-call-back"])]
    assert rec.steps[0].result == "queued"


@pytest.mark.parametrize("caller", ["anonymous", "", "Restricted", "12", "<sip:x@y>"])
async def test_callback_anonymous_caller_goes_to_failed(caller: str) -> None:
    call = FakeCall(caller=caller)
    outcome, rec, s = await run(make_flow(CALLBACK), call)
    assert isinstance(s.callbacks, MemoryCallbacks)
    assert s.callbacks.requests == []
    assert outcome == Outcome(OutcomeKind.VOICEMAIL, "vm")
    assert rec.steps[0].result == "no caller number"


async def test_voicemail_failure_goes_to_failed() -> None:
    call = FakeCall(caller="anonymous", voicemail=False)
    outcome, rec, _ = await run(make_flow(CALLBACK), call)
    assert outcome == Outcome(OutcomeKind.HANGUP, "bye")
    assert rec.results()[1] == ("vm", "voicemail", "failed")
    assert call.did("voicemail") == [("voicemail", "practice")]


async def test_a_voicemail_the_pbx_lacks_is_not_asked_of_the_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Asterisk's module list said VoiceMail() is gone (Debian's app_voicemail_odbc.so
    # declined beside app_voicemail.so; VM_INFO() would still answer 1): whichever driver
    # carries the call, the caller stays, and the step takes its failed branch.
    call = FakeCall(caller="anonymous")
    gone = "app_voicemail_odbc.so failed to load beside it"
    outcome, rec, _ = await run(make_flow(CALLBACK), call, voicemail_problem=lambda: gone)
    assert outcome == Outcome(OutcomeKind.HANGUP, "bye")
    assert rec.results()[1] == ("vm", "voicemail", "failed")
    assert call.did("voicemail") == []  # nothing handed over
    assert "'failed' branch" in caplog.text and gone in caplog.text


# -- hangups and errors ---------------------------------------------------------------------


async def test_caller_hangs_up_mid_menu() -> None:
    call = FakeCall(raise_at={"collect": CallerHangup("gone")})
    outcome, rec, _ = await run(make_flow(MENU), call)
    assert outcome == Outcome(OutcomeKind.ABANDONED, "first", detail="caller hung up")
    assert rec.results() == [("first", "menu", "abandoned")]
    assert rec.events[-1] == ("ended", outcome)
    assert call.did("hangup") == []  # nobody left to hang up on


async def test_a_call_lost_by_the_pbx_is_failed_not_abandoned() -> None:
    call = FakeCall(raise_at={"collect": CallLost("channel vanished")})
    outcome, rec, _ = await run(make_flow(MENU), call)
    assert outcome == Outcome(OutcomeKind.FAILED, "first", detail="call lost: channel vanished")
    assert rec.results() == [("first", "menu", "lost")]


async def test_caller_hangs_up_while_ringing() -> None:
    call = FakeCall(raise_at={"dial": CallerHangup("gone")})
    outcome, rec, _ = await run(make_flow(FORWARD), call)
    assert outcome.kind is OutcomeKind.ABANDONED
    assert outcome.step == "first"
    assert call.dialed_targets == [TRUNK_A]  # no failover, no fallback
    assert rec.results()[-1] == ("first", "forward", "abandoned")


async def test_caller_hangs_up_after_talking_keeps_who_answered() -> None:
    flow = make_flow("first:\n  dial: desk\n  next: survey\nsurvey:\n  hangup: {announce: x}\n")
    call = FakeCall(raise_at={"play": CallerHangup("gone")})
    outcome, _, _ = await run(flow, call)
    assert outcome == Outcome(OutcomeKind.ANSWERED, "first", "desk")


async def test_telephony_error_goes_to_the_failed_branch() -> None:
    call = FakeCall(raise_at={"dial": TelephonyError("channel gone")})
    outcome, rec, _ = await run(make_flow(DIAL), call)
    assert outcome.step == "on-failed"
    assert rec.steps[0].result == "error"
    assert rec.steps[0].detail == "TelephonyError: channel gone"


async def test_telephony_error_without_failed_branch_goes_to_fallback() -> None:
    call = FakeCall(raise_at={"play:custom/welcome": TelephonyError("no such sound")})
    outcome, rec, _ = await run(make_flow(BASIC), call)
    assert outcome == Outcome(
        OutcomeKind.ANSWERED,
        "first",
        "backup",
        None,
        None,
        detail="fallback: step 'first' ended with error",
    )
    assert rec.results() == [
        ("first", "play", "error"),
        ("first", "attempt", "answer"),
        ("first", "fallback", "answer"),
    ]


async def test_a_bug_in_a_step_goes_to_fallback() -> None:
    call = FakeCall(raise_at={"voicemail": KeyError("oops")}, caller="anonymous")
    outcome, rec, _ = await run(make_flow(CALLBACK), call)
    assert outcome.destination == "backup"
    assert rec.steps[1].detail == "internal error: KeyError"


async def test_fallback_failure_is_a_failed_outcome() -> None:
    call = FakeCall(
        raise_at={"play": TelephonyError("x"), "dial:PJSIP/backup": TelephonyError("y")}
    )
    outcome, _, _ = await run(make_flow(BASIC), call)
    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.detail == "step 'first' ended with error; fallback failed: y"


async def test_hangup_error_at_the_end_is_swallowed() -> None:
    call = FakeCall(raise_at={"hangup": TelephonyError("already gone")})
    outcome, _, _ = await run(make_flow(BASIC), call)
    assert outcome.kind is OutcomeKind.HANGUP


# -- observers ------------------------------------------------------------------------------


class Broken:
    def call_started(self, info: CallInfo) -> None:
        raise RuntimeError("db down")

    def step(self, record: StepRecord) -> None:
        raise RuntimeError("db down")

    def call_answered(self, event: CallAnswered) -> None:
        raise RuntimeError("db down")

    def call_ended(self, info: CallInfo, outcome: Outcome, at: datetime) -> None:
        raise RuntimeError("db down")


async def test_a_failing_observer_does_not_break_the_call() -> None:
    rec = Recorder()
    call = FakeCall(keys=["2"])
    s, _ = services(observer=FanOut(Broken(), rec, Broken()))
    outcome = await Engine(s).run(make_flow(MENU), call)
    assert outcome == Outcome(OutcomeKind.HANGUP, "two")
    assert rec.path == ["first", "two"]
    assert [e[0] for e in rec.events] == ["started", "step", "step", "ended"]
    assert call.did("hangup") == [("hangup",)]


async def test_observer_sees_start_each_step_in_order_and_one_end() -> None:
    call = FakeCall(
        keys=["1"],
        dial={"PJSIP/desk": DialStatus.BUSY},
        caller="0612345678",
    )
    flow = make_flow(
        """
        first:
          play: custom/welcome
          next: menu
        menu:
          menu: {prompt: custom/menu, options: {"1": ring}}
          failed: ring
        ring:
          dial: desk
          busy: ext
        ext:
          forward: ext
        """
    )
    outcome, rec, _ = await run(flow, call)
    kinds = [e[0] for e in rec.events]
    assert kinds[0] == "started" and kinds[-1] == "ended"
    assert kinds.count("started") == 1 and kinds.count("ended") == 1
    info = rec.events[0][1]
    assert (info.call_id, info.flow, info.caller, info.dialed) == (
        "c1",
        "test",
        "0612345678",
        "100",
    )
    assert info.version == flow.version
    steps = rec.steps
    assert [r.seq for r in steps] == list(range(1, len(steps) + 1))
    assert [(r.step, r.kind) for r in steps] == [
        ("first", "play"),
        ("menu", "menu"),
        ("ring", "attempt"),
        ("ring", "dial"),
        ("ext", "attempt"),
        ("ext", "forward"),
    ]
    assert all(r.call_id == "c1" and r.flow == "test" for r in steps)
    assert rec.events[-1] == ("ended", outcome)
    assert outcome == Outcome(OutcomeKind.FORWARDED, "ext", "ext", "trunk-a")


# -- guards ---------------------------------------------------------------------------------


async def test_flow_looping_on_the_callers_keys_hits_max_steps() -> None:
    flow = make_flow(
        """
        first:
          menu: {prompt: custom/menu, options: {"1": again}}
          failed: bye
        again:
          play: custom/again
          next: first
        bye:
          hangup:
        """
    )
    call = FakeCall(keys=["1"] * 100)
    outcome, rec, _ = await run(flow, call, max_steps=10)
    assert rec.path == ["first", "again"] * 5
    assert outcome.destination == "backup"
    assert outcome.detail == "fallback: more than 10 steps"
    assert rec.results()[-1] == ("again", "fallback", "answer")


async def test_two_concurrent_calls_do_not_touch_each_other() -> None:
    flow = make_flow(MENU)
    s, rec = services()
    engine = Engine(s)
    good = FakeCall(keys=["1"], call_id="good", delay=0.001)
    bad = FakeCall(keys=["2"], call_id="bad", raise_at={"collect": CallerHangup()}, delay=0.001)
    buggy = FakeCall(call_id="buggy", raise_at={"answer": ZeroDivisionError()}, delay=0.001)
    outcomes = await asyncio.gather(
        engine.run(flow, good), engine.run(flow, bad), engine.run(flow, buggy)
    )
    assert outcomes[0] == Outcome(OutcomeKind.HANGUP, "one")
    assert outcomes[1].kind is OutcomeKind.ABANDONED
    assert outcomes[2].destination == "backup"
    by_call: dict[str, list[int]] = {}
    for r in rec.steps:
        by_call.setdefault(r.call_id, []).append(r.seq)
    assert by_call == {"good": [1, 2], "bad": [1], "buggy": [1, 2, 3]}
    ended = [e[1] for e in rec.events if e[0] == "ended"]
    assert sorted(o.kind for o in ended) == sorted(o.kind for o in outcomes)
    assert good.keys == [] and bad.keys == ["2"]


async def test_cancelled_call_reports_its_end_once() -> None:
    class Slow(FakeCall):
        async def dial(
            self,
            target: str,
            *,
            timeout: float,
            caller_id: str | None = None,
            setup_timeout: float | None = None,
            while_ringing: Sequence[str] = (),
        ) -> DialResult:
            await asyncio.sleep(10)
            return DialResult(DialStatus.ANSWER)

    s, rec = services()
    task = asyncio.create_task(Engine(s).run(make_flow(DIAL), Slow()))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    ended = [e[1] for e in rec.events if e[0] == "ended"]
    assert [o.kind for o in ended] == [OutcomeKind.FAILED]
    assert ended[0].detail == "daemon stopped during the call"


def test_mask_hides_the_callers_number() -> None:
    assert mask("0612345678") == "********78"
    assert mask("15") == "15"


async def test_a_call_rescued_after_a_crash_ends_recovered_not_answered() -> None:
    """A call a crash left stranded, sent to the fallback at the restart, is ``recovered``
    (the report counts it apart); its fallback step says the same."""
    s, rec = services()
    flow = make_flow("first:\n  dial: desk\n")
    call = FakeCall()
    outcome = await Engine(s).rescue(flow, call, "recovered after a restart")
    assert (outcome.kind, outcome.destination) == (OutcomeKind.RECOVERED, "backup")
    assert call.dialed_targets == ["PJSIP/backup"]
    assert rec.results()[-1] == ("first", "fallback", "answer")
    seqs = [e[1].seq for e in rec.events if e[0] == "step"]
    assert seqs[0] == RESCUE_SEQ + 1  # after the steps of the run a crash interrupted
    unreached = FakeCall(dial={"PJSIP/backup": DialStatus.NOANSWER})
    failed = await Engine(s).rescue(flow, unreached, "recovered after a restart")
    assert failed.kind is OutcomeKind.FAILED  # nobody reached: not hidden as recovered
