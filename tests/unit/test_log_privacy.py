"""Logs carry no caller number and no key a caller pressed (issue 13): a simulated day of
calls through the example practice, every log line captured, none holds either; nor does
a step's prose (kept in the call log and shown on the page), even when an error from the
PBX quotes the number."""

from __future__ import annotations

import logging
import re
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from callflow.errors import TelephonyError
from callflow.flow.events import StepRecord
from callflow.flow.registry import load_flows
from callflow.simulate import Scenario, SimulatedCall, simulate

REPO = Path(__file__).resolve().parents[2]
PARIS = ZoneInfo("Europe/Paris")
CALLER = "0612345678"
FORMS = (CALLER, "612345678", "+33612345678", "06 12 34 56 78")
PRESSED = re.compile(r"(key|digit|dtmf|press|choice|option)\w*\W{0,3}[0-9*#]\b", re.I)

DAY = [  # (time, keys pressed, scenario)
    ("2026-12-01 08:30", ["2"], Scenario(digits=["2"])),
    ("2026-12-01 09:10", ["1", "2"], Scenario(digits=["1", "2"], no_answer={"dr-a-mobile"})),
    ("2026-12-01 10:00", ["1", "3"], Scenario(digits=["1", "3"], busy={"secretariat"})),
    ("2026-12-01 11:45", ["1", "1"], Scenario(digits=["1", "1"], down={"trunk-a"})),
    ("2026-12-01 12:00", ["9", "9", "9"], Scenario(digits=["9", "9", "9"])),
    ("2026-12-01 13:00", [], Scenario()),
    ("2026-12-01 20:30", [], Scenario(no_answer={"telesecretariat"})),
    ("2026-12-25 10:00", ["2"], Scenario(digits=["2"], voicemail_fails=True)),
]


async def test_a_day_of_calls_logs_no_number_and_no_choice(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    [flow] = load_flows([REPO / "dialplans"]).flows.values()
    steps: list[StepRecord] = []
    real_play = SimulatedCall.play
    played = [0]

    async def play_failing_once(self: SimulatedCall, *args: object, **kw: object) -> object:
        played[0] += 1
        if played[0] == 3:  # the PBX's error quotes the caller's channel and number
            raise TelephonyError(f"playback failed on PJSIP/trunk-a caller {CALLER}")
        return await real_play(self, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(SimulatedCall, "play", play_failing_once)
    with caplog.at_level(logging.DEBUG):
        for when, _keys, scenario in DAY:
            at = datetime.strptime(when, "%Y-%m-%d %H:%M").replace(tzinfo=PARIS)
            for caller in (CALLER, "+33612345678"):
                transcript, _ = await simulate(
                    flow, scenario, at, caller=caller, dialed="0388000000"
                )
                steps += transcript.steps
    lines = [r.getMessage() for r in caplog.records]
    assert any("event=start" in line for line in lines)  # the calls were logged
    assert any(s.key for s in steps)  # and keys were pressed
    assert any(s.result == "error" for s in steps)  # the PBX error happened
    for line in lines:
        assert not any(f in line for f in FORMS), line
        assert not PRESSED.search(line), line
    for s in steps:
        assert not any(f in s.detail for f in FORMS), s
