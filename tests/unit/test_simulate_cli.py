"""`callflow simulate` on the example dialplan: the real engine, a scripted caller and PBX."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

DIALPLAN = Path(__file__).resolve().parents[2] / "dialplans" / "cabinet-du-parc.yaml"

RunCli = Callable[..., Any]  # the fixture of conftest.py

WELCOME = ["welcome", "hours"]
AFTER_HOURS = [*WELCOME, "after-hours"]


def simulate(run_cli: RunCli, at: str, *args: str, flow: Path = DIALPLAN) -> dict[str, Any]:
    result = run_cli("simulate", flow, "--at", at, "--json", *args)
    assert (result.code, result.err) == (0, ""), result.err
    data: dict[str, Any] = json.loads(result.out)
    return data


def summary(data: dict[str, Any]) -> tuple[Any, ...]:
    return (data["path"], data["outcome"], data["destination"], data["trunk"])


def hours_detail(data: dict[str, Any]) -> tuple[str, str]:
    (rec,) = [s for s in data["steps"] if s["step"] == "hours"]
    return rec["result"], rec["detail"]


FORWARDED = (AFTER_HOURS, "forwarded", "telesecretariat", "trunk-a")


@pytest.mark.parametrize(
    ("at", "expected", "why"),
    [
        ("2026-12-05 15:00", FORWARDED, ("closed", "weekly: outside opening hours")),  # Saturday
        ("2026-12-06 10:00", FORWARDED, ("closed", "weekly: outside opening hours")),  # Sunday
        ("2026-12-01 20:00", FORWARDED, ("closed", "weekly: outside opening hours")),
        ("2026-12-01 13:00", FORWARDED, ("closed", "weekly: outside opening hours")),  # lunch
        ("2026-12-25 10:00", FORWARDED, ("closed", "holiday: Christmas Day")),
        ("2026-12-26 10:00", FORWARDED, ("closed", "holiday: Saint Stephen's Day")),  # Moselle
        ("2026-04-03 10:00", FORWARDED, ("closed", "holiday: Good Friday")),  # Moselle
        ("2026-08-10 10:00", FORWARDED, ("closed", "closure: congés d'été")),
        ("2026-08-21 18:00", FORWARDED, ("closed", "closure: congés d'été")),  # its last day
        ("2026-12-24 17:30", FORWARDED, ("closed", "closure: veille de Noël")),
    ],
)
def test_closed_calls_are_forwarded_to_the_telesecretariat(
    run_cli: RunCli, at: str, expected: tuple[Any, ...], why: tuple[str, str]
) -> None:
    data = simulate(run_cli, at)
    assert summary(data) == expected
    assert hours_detail(data) == why
    assert data["step"] == "after-hours"


@pytest.mark.parametrize(
    ("at", "why"),
    [
        ("2026-12-05 10:00", "weekly: sat 09:00-12:00"),  # Saturday morning is open
        ("2026-12-01 10:00", "weekly: tue 08:00-12:30"),
        ("2026-08-24 10:00", "weekly: mon 08:00-12:30"),  # back from the summer closure
        ("2026-12-24 16:00", "weekly: thu 14:00-19:00"),  # before the Christmas Eve closure
        ("2026-12-28 10:00", "opening: permanence"),  # the exceptional opening
    ],
)
def test_open_calls_reach_the_desk_when_nothing_is_pressed(
    run_cli: RunCli, at: str, why: str
) -> None:
    data = simulate(run_cli, at)
    path = [*WELCOME, "menu", "desk", "satisfaction"]  # the secretary hangs up: the survey
    assert summary(data) == (path, "answered", "secretariat", None)
    assert hours_detail(data) == ("open", why)
    (menu,) = [s for s in data["steps"] if s["step"] == "menu"]
    assert menu["detail"] == "attempt 3: no input, no input, no input"


def test_the_caller_rates_the_secretariats_call(run_cli: RunCli) -> None:
    data = simulate(run_cli, "2026-12-01 10:00", "--digits", "2,4")
    assert summary(data) == (
        [*WELCOME, "menu", "desk", "satisfaction"],
        "answered",
        "secretariat",
        None,
    )
    survey = data["steps"][-1]
    assert (survey["kind"], survey["result"], survey["score"]) == ("survey", "rated", 4)
    assert survey["outcome"] is None  # the dial decided the call's outcome
    text = run_cli("simulate", DIALPLAN, "--at", "2026-12-01 10:00", "--digits", "2,4").out
    assert "  satisfaction: rated 4 (scale 1-5)\n" in text


def test_a_key_outside_the_scale_twice_is_no_rating(run_cli: RunCli) -> None:
    data = simulate(run_cli, "2026-12-01 10:00", "--digits", "2,0,7")
    survey = data["steps"][-1]
    assert (survey["result"], survey["score"], survey["attempt"]) == ("no rating", None, 2)
    assert data["outcome"] == "answered"


def test_no_survey_after_an_emergency_tier(run_cli: RunCli) -> None:
    # SAMU unreachable: the secretariat takes the call, and nobody asks for a rating.
    data = simulate(run_cli, "2026-12-01 10:00", "--digits", "1,1,4", "--no-answer", "samu")
    path = [*WELCOME, "menu", "triage", "tier-1", "desk-after-emergency"]
    assert summary(data) == (path, "answered", "secretariat", None)
    assert not [s for s in data["steps"] if s["kind"] == "survey"]


def test_good_friday_is_a_holiday_only_in_moselle(run_cli: RunCli, tmp_path: Path) -> None:
    national = tmp_path / "national.yaml"
    national.write_text(
        DIALPLAN.read_text(encoding="utf-8").replace(
            'holidays: {country: FR, subdivision: "57"}', "holidays: {country: FR}"
        ),
        encoding="utf-8",
    )
    data = simulate(run_cli, "2026-04-03 10:00", flow=national)
    assert hours_detail(data) == ("open", "weekly: fri 08:00-12:30")
    assert hours_detail(simulate(run_cli, "2026-12-25 10:00", flow=national))[1] == (
        "holiday: Christmas Day"
    )


def test_tier2_on_call_doctor_accepts(run_cli: RunCli) -> None:
    data = simulate(run_cli, "2026-12-01 10:00", "--digits", "1,2")
    path = [*WELCOME, "menu", "triage", "tier-2"]
    assert summary(data) == (path, "answered", "dr-a-mobile", "trunk-a")
    assert data["tier"] == 2


def test_tier2_first_doctor_does_not_answer(run_cli: RunCli) -> None:
    data = simulate(run_cli, "2026-12-01 10:00", "--digits", "1,2", "--no-answer", "dr-a-mobile")
    assert summary(data)[1:] == ("answered", "dr-b-mobile", "trunk-a")
    attempts = [
        (s["destination"], s["trunk"], s["dial_status"], s["attempt"])
        for s in data["steps"]
        if s["kind"] == "attempt"
    ]
    assert attempts == [
        ("dr-a-mobile", "trunk-a", "NOANSWER", 1),
        ("dr-b-mobile", "trunk-a", "ANSWER", 2),
    ]
    assert [a["destination"] for a in data["answered"]] == ["dr-b-mobile"]


def test_tier2_nobody_accepts_queues_a_callback(run_cli: RunCli) -> None:
    data = simulate(
        run_cli,
        "2026-12-01 10:00",
        "--digits",
        "1,2",
        "--no-answer",
        "dr-a-mobile",
        "--decline",
        "dr-b-mobile",
    )
    path = [*WELCOME, "menu", "triage", "tier-2", "callback"]
    assert summary(data) == (path, "callback", None, None)
    assert (data["tier"], data["detail"]) == (2, "same-day")


def test_tier2_anonymous_caller_goes_to_voicemail(run_cli: RunCli) -> None:
    data = simulate(
        run_cli,
        "2026-12-01 10:00",
        "--digits",
        "1,2",
        "--busy",
        "dr-a-mobile",
        "--busy",
        "dr-b-mobile",
        "--caller",
        "anonymous",
    )
    path = [*WELCOME, "menu", "triage", "tier-2", "callback", "voicemail"]
    assert summary(data) == (path, "voicemail", None, None)


def test_tier1_goes_to_the_samu_over_the_emergency_route(run_cli: RunCli) -> None:
    data = simulate(run_cli, "2026-12-01 10:00", "--digits", "1,1", "--down", "trunk-b")
    assert summary(data) == (
        [*WELCOME, "menu", "triage", "tier-1"],
        "emergency",
        "samu",
        "trunk-a",  # the emergency route tries trunk-b first
    )
    assert data["tier"] == 1


def test_trunk_a_down_forwards_via_trunk_b(run_cli: RunCli) -> None:
    data = simulate(run_cli, "2026-12-25 10:00", "--down", "trunk-a")
    assert summary(data) == (AFTER_HOURS, "forwarded", "telesecretariat", "trunk-b")
    results = [(s["kind"], s["result"]) for s in data["steps"] if s["step"] == "after-hours"]
    assert results == [("attempt", "chanunavail"), ("attempt", "answer"), ("forward", "answered")]


def test_both_trunks_down_goes_to_voicemail(run_cli: RunCli) -> None:
    data = simulate(run_cli, "2026-12-25 10:00", "--down", "trunk-a", "--down", "trunk-b")
    assert summary(data) == ([*AFTER_HOURS, "voicemail"], "voicemail", None, None)


def test_desk_busy_then_callback(run_cli: RunCli) -> None:
    data = simulate(run_cli, "2026-12-01 10:00", "--digits", "2", "--busy", "secretariat")
    assert summary(data) == ([*WELCOME, "menu", "desk", "callback"], "callback", None, None)


def test_caller_hangs_up(run_cli: RunCli) -> None:
    data = simulate(run_cli, "2026-12-01 10:00", "--hangup-after", "1")
    assert summary(data) == ([*WELCOME, "menu"], "abandoned", None, None)
    assert data["step"] == "menu"


def test_the_second_number_enters_the_same_flow(run_cli: RunCli) -> None:
    data = simulate(run_cli, "2026-12-25 10:00", "--number", "100")
    assert summary(data) == FORWARDED


def test_text_output(run_cli: RunCli) -> None:
    result = run_cli("simulate", DIALPLAN, "--at", "2026-12-25 10:00")
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[0].startswith(
        "call 0612345678 → 0388000000, Fri 2026-12-25 10:00 (Europe/Paris), flow cabinet-du-parc"
    )
    assert "  hours: closed (holiday: Christmas Day) → after-hours" in lines
    assert lines[-1] == "outcome: forwarded to telesecretariat via trunk-a at step 'after-hours'"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--no-answer", "dr-who"],
            "callflow: unknown destination 'dr-who' in flow 'cabinet-du-parc': secretariat, "
            "telesecretariat, samu, dr-a-mobile, dr-b-mobile\n",
        ),
        (["--busy", "desk"], "callflow: unknown destination 'desk' in flow 'cabinet-du-parc'"),
        (["--down", "trunk-c"], "callflow: unknown trunk 'trunk-c' in flow 'cabinet-du-parc'"),
    ],
)
def test_unknown_names_are_refused(run_cli: RunCli, args: list[str], message: str) -> None:
    result = run_cli("simulate", DIALPLAN, "--at", "2026-12-25 10:00", *args)
    assert result.code == 1
    assert result.out == ""
    assert result.err.startswith(message)


@pytest.mark.parametrize(
    ("at", "message"),
    [
        ("tomorrow", "callflow: invalid time 'tomorrow': expected 'YYYY-MM-DD HH:MM'\n"),
        ("2026-02-30 10:00", "callflow: invalid time '2026-02-30 10:00'"),
        ("0001-01-01 00:00", "callflow: invalid time '0001-01-01 00:00': the year must be "),
        ("9999-12-31 23:59", "callflow: invalid time '9999-12-31 23:59': the year must be "),
    ],
)
def test_bad_time_is_refused(run_cli: RunCli, at: str, message: str) -> None:
    result = run_cli("simulate", DIALPLAN, "--at", at)
    assert result.code == 1
    assert result.err.startswith(message)


def test_calendar_far_future_is_refused(run_cli: RunCli) -> None:
    result = run_cli("calendar", DIALPLAN, "--from", "9999-12-30")
    assert result.code == 1
    assert result.err.startswith("callflow: invalid date '9999-12-30': the year must be ")


def test_several_flows_need_a_number(run_cli: RunCli, tmp_path: Path) -> None:
    text = DIALPLAN.read_text(encoding="utf-8")
    (tmp_path / "a.yaml").write_text(text, encoding="utf-8")
    (tmp_path / "b.yaml").write_text(
        text.replace("flow: cabinet-du-parc", "flow: other").replace(
            'numbers: ["0388000000", "100"]', 'numbers: ["0388000001"]'
        ),
        encoding="utf-8",
    )
    result = run_cli("simulate", tmp_path, "--at", "2026-12-25 10:00")
    assert (result.code, result.err) == (1, "callflow: several flows: say which with --number\n")
    data = simulate(run_cli, "2026-12-25 10:00", "--number", "0388000001", flow=tmp_path)
    assert data["outcome"] == "forwarded"
    missing = run_cli("simulate", tmp_path, "--at", "2026-12-25 10:00", "--number", "999")
    assert (missing.code, missing.err) == (1, "callflow: no flow claims number '999'\n")


def test_simulating_a_broken_flow_reports_its_errors(run_cli: RunCli, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(DIALPLAN.read_text(encoding="utf-8").replace("next: hours", "next: hour"))
    result = run_cli("simulate", broken, "--at", "2026-12-25 10:00")
    assert result.code == 1
    assert f"{broken}:" in result.err
    assert "unknown step 'hour' (did you mean 'hours'?)" in result.err
    assert result.err_lines[-1].endswith(("1 error", "errors"))
