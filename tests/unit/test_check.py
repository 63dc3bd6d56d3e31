"""`callflow check`: every mistake in a flow file is reported at its ``file:line:col``."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, SupportsIndex

import pytest

REPO = Path(__file__).resolve().parents[2]
DIALPLAN = REPO / "dialplans" / "cabinet-du-parc.yaml"
FLOWS = Path(__file__).resolve().parent / "flows"

WriteFlow = Callable[..., Path]  # the fixtures of conftest.py
RunCli = Callable[..., Any]


class Yaml(str):
    """Flow text whose ``replace`` fails when there is nothing to replace: no vacuous test."""

    def replace(self, old: str, new: str, count: SupportsIndex = -1) -> Yaml:
        assert old in self, f"{old!r} is not in the flow text"
        return Yaml(super().replace(old, new, count))


# A valid flow; the tests below change one thing in it.  Line numbers, for reference:
#  1 version      6 destinations   11 start    14 play   17 dial
VALID = Yaml("""
version: 1
flow: t
numbers: ["100"]
timezone: Europe/Paris
fallback: desk
destinations:
  desk: {endpoint: PJSIP/desk, ring: 20s}
  out: {number: "0180000000", route: outbound}
routes:
  outbound: [trunk-a, trunk-b]
start: welcome
steps:
  welcome:
    play: custom/welcome
    next: desk
  desk:
    dial: desk
    no_answer: ext
  ext:
    forward: out
""")


def check(write_flow: WriteFlow, run_cli: RunCli, text: str) -> tuple[Path, Any]:
    path = write_flow(text)
    return path, run_cli("check", path)


def errors_of(path: Path, result: Any) -> list[str]:
    """The diagnostics of a failed check, without the file name and the count line."""
    assert result.code == 1
    assert result.out == ""
    *diags, count = result.err_lines
    n = len(diags)
    assert count == f"{n} error{'s' if n != 1 else ''}"
    prefix = f"{path}:"
    assert all(d.startswith(prefix) for d in diags), diags
    return [d[len(prefix) :] for d in diags]


def one_error(write_flow: WriteFlow, run_cli: RunCli, text: str) -> str:
    path, result = check(write_flow, run_cli, text)
    errors = errors_of(path, result)
    assert len(errors) == 1, errors
    return errors[0]


def test_the_valid_base_passes(write_flow: WriteFlow, run_cli: RunCli) -> None:
    _, result = check(write_flow, run_cli, VALID)
    assert (result.code, result.err) == (0, "")
    assert result.out == "1 file OK: t\n"


def test_the_example_dialplans_pass(run_cli: RunCli) -> None:
    result = run_cli("check", REPO / "dialplans")
    assert (result.code, result.err) == (0, "")
    assert result.out == "1 file OK: cabinet-du-parc\n"
    assert run_cli("check", DIALPLAN).code == 0


# -- schema errors --------------------------------------------------------------------------


def test_unknown_key_with_did_you_mean(write_flow: WriteFlow, run_cli: RunCli) -> None:
    text = VALID.replace("    next: desk\n", "    nxt: desk\n")
    assert errors_of(*check(write_flow, run_cli, text)) == [
        "14:5: missing required key 'next'",
        "15:5: unknown key 'nxt' (did you mean 'next'?)",
    ]


def test_a_key_of_another_step_kind(write_flow: WriteFlow, run_cli: RunCli) -> None:
    # 'busy' is a real key, of dial/forward steps: no "did you mean 'busy'?".
    text = VALID.replace("    next: desk\n", "    next: desk\n    busy: ext\n")
    assert one_error(write_flow, run_cli, text) == "16:5: key 'busy' is not allowed here"


def test_unknown_top_level_key(write_flow: WriteFlow, run_cli: RunCli) -> None:
    text = VALID.replace("fallback: desk", "fallbak: desk")
    assert one_error(write_flow, run_cli, text) == (
        "5:1: unknown key 'fallbak' (did you mean 'fallback'?)"
    )


def test_unknown_key_without_a_close_match(write_flow: WriteFlow, run_cli: RunCli) -> None:
    text = VALID.replace("    next: desk\n", "    next: desk\n    zzzzzz: 1\n")
    assert one_error(write_flow, run_cli, text) == "16:5: unknown key 'zzzzzz'"


def test_wrong_type(write_flow: WriteFlow, run_cli: RunCli) -> None:
    text = VALID.replace('numbers: ["100"]', "numbers: {a: 1}")
    assert one_error(write_flow, run_cli, text) == "3:10: expected a list, got a mapping"


def test_wrong_type_of_a_step(write_flow: WriteFlow, run_cli: RunCli) -> None:
    text = VALID.replace("  ext:\n    forward: out\n", "  ext: out\n")
    assert one_error(write_flow, run_cli, text) == (
        "19:8: a step needs exactly one kind key: play, menu, schedule, dial, forward, "
        "escalate, callback, voicemail, set, goto, hangup, survey (found: str)"
    )


def test_invalid_pattern(write_flow: WriteFlow, run_cli: RunCli) -> None:
    text = VALID.replace("route: outbound}", "route: outbound}\n  bad: {number: 01-80, route: x}")
    assert one_error(write_flow, run_cli, text) == (
        "9:17: invalid value '01-80': expected a phone number of digits, "
        "optionally with a leading '+'"
    )


def test_step_with_no_kind(write_flow: WriteFlow, run_cli: RunCli) -> None:
    text = VALID.replace("    forward: out\n", "    next: welcome\n")
    assert one_error(write_flow, run_cli, text) == (
        "20:5: a step needs exactly one kind key: play, menu, schedule, dial, forward, "
        "escalate, callback, voicemail, set, goto, hangup, survey (found: next)"
    )


def test_step_with_two_kinds(write_flow: WriteFlow, run_cli: RunCli) -> None:
    text = VALID.replace("    forward: out\n", "    forward: out\n    dial: desk\n")
    assert one_error(write_flow, run_cli, text) == (
        "20:5: a step needs exactly one kind key: play, menu, schedule, dial, forward, "
        "escalate, callback, voicemail, set, goto, hangup, survey (found: dial, forward)"
    )


def test_bad_duration(write_flow: WriteFlow, run_cli: RunCli) -> None:
    text = VALID.replace("ring: 20s", "ring: 20 seconds")
    assert one_error(write_flow, run_cli, text) == (
        "7:38: invalid duration '20 seconds', expected e.g. '20s', '1m30s', '500ms'"
    )


def test_a_duration_needs_a_unit(write_flow: WriteFlow, run_cli: RunCli) -> None:
    text = VALID.replace("ring: 20s", "ring: 20")
    assert one_error(write_flow, run_cli, text) == (
        "7:38: invalid duration '20', expected e.g. '20s', '1m30s', '500ms'"
    )


@pytest.mark.parametrize("version", ["2", "'2'", "1.0", "v1"])
def test_unsupported_version(write_flow: WriteFlow, run_cli: RunCli, version: str) -> None:
    text = VALID.replace("version: 1", f"version: {version}")
    message = one_error(write_flow, run_cli, text)
    assert message.startswith("1:10: unsupported version ")
    assert message.endswith(": this callflow reads version 1")


def test_version_1_may_be_quoted(write_flow: WriteFlow, run_cli: RunCli) -> None:
    _, result = check(write_flow, run_cli, VALID.replace("version: 1", 'version: "1"'))
    assert result.code == 0


def test_missing_required_keys(write_flow: WriteFlow, run_cli: RunCli) -> None:
    text = VALID.replace("timezone: Europe/Paris\n", "").replace("start: welcome\n", "")
    assert errors_of(*check(write_flow, run_cli, text)) == [
        "1:1: missing required key 'start'",
        "1:1: missing required key 'timezone'",
    ]


def test_invalid_timezone(write_flow: WriteFlow, run_cli: RunCli) -> None:
    text = VALID.replace("Europe/Paris", "Europe/Metz")
    assert one_error(write_flow, run_cli, text) == "4:11: unknown timezone 'Europe/Metz'"


def test_a_timezone_folder_is_an_error_not_a_crash(write_flow: WriteFlow, run_cli: RunCli) -> None:
    # 'Europe' is a folder of the tz database: ZoneInfo raises IsADirectoryError for it.
    text = VALID.replace("Europe/Paris", "Europe")
    assert one_error(write_flow, run_cli, text) == "4:11: unknown timezone 'Europe'"


CALENDAR = VALID.replace(
    "start: welcome\n",
    """\
calendars:
  office:
    weekly:
      mon-fri: ["08:00-12:00", "25:00-26:00"]
    holidays: {country: FR, subdivision: "57"}
start: welcome
""",
)


def test_invalid_time_range(write_flow: WriteFlow, run_cli: RunCli) -> None:
    assert one_error(write_flow, run_cli, CALENDAR) == (
        "14:32: invalid time range '25:00-26:00': hours must be 00-24, expected 'HH:MM-HH:MM'"
    )


def test_invalid_day_key(write_flow: WriteFlow, run_cli: RunCli) -> None:
    text = CALENDAR.replace("mon-fri", "mon-fry").replace(', "25:00-26:00"', "")
    message = one_error(write_flow, run_cli, text)
    assert message.startswith("14:7: unknown day 'fry' in 'mon-fry': expected mon, tue")


def test_invalid_day_key_is_reported_on_the_line_of_the_key(
    write_flow: WriteFlow, run_cli: RunCli
) -> None:
    text = CALENDAR.replace(
        '      mon-fri: ["08:00-12:00", "25:00-26:00"]\n',
        '      mon-fri: ["08:00-12:00"]\n      satx:\n        - "09:00-12:00"\n',
    )
    message = one_error(write_flow, run_cli, text)
    assert message.startswith("15:7: unknown day 'satx' in 'satx'")


def test_invalid_holiday_subdivision(write_flow: WriteFlow, run_cli: RunCli) -> None:
    text = CALENDAR.replace('"57"', '"99"').replace(', "25:00-26:00"', "")
    message = one_error(write_flow, run_cli, text)
    assert message.startswith("15:42: unknown subdivision '99' for FR; valid: 57, ")


def test_invalid_holiday_country(write_flow: WriteFlow, run_cli: RunCli) -> None:
    text = CALENDAR.replace("country: FR", "country: XX").replace(', "25:00-26:00"', "")
    message = one_error(write_flow, run_cli, text)
    assert message.startswith("15:25: unknown country 'XX' for holidays")


def test_closure_that_ends_before_it_starts(write_flow: WriteFlow, run_cli: RunCli) -> None:
    text = CALENDAR.replace(', "25:00-26:00"', "").replace(
        "    holidays:", "    closed: [{from: 2026-08-21, to: 2026-08-03}]\n    holidays:"
    )
    assert one_error(write_flow, run_cli, text) == (
        "15:37: 'to' (2026-08-03) is before 'from' (2026-08-21)"
    )


def test_a_closure_to_the_end_of_time_is_an_error_not_a_crash(
    write_flow: WriteFlow, run_cli: RunCli
) -> None:
    text = CALENDAR.replace(', "25:00-26:00"', "").replace(
        "    holidays:", "    closed: [{from: 2026-08-21, to: 9999-12-31}]\n    holidays:"
    )
    assert one_error(write_flow, run_cli, text).endswith(
        "invalid date '9999-12-31': the year must be between 1900 and 2999"
    )


# -- graph errors ---------------------------------------------------------------------------


def test_step_going_to_a_missing_step(write_flow: WriteFlow, run_cli: RunCli) -> None:
    text = VALID.replace("no_answer: ext", "no_answer: exit")
    assert errors_of(*check(write_flow, run_cli, text)) == [
        "18:16: unknown step 'exit' (did you mean 'ext'?); defined: desk, ext, welcome",
        "19:3: step 'ext' is unreachable from start 'welcome'",
    ]


def test_missing_step_is_not_also_reported_as_a_loop(
    write_flow: WriteFlow, run_cli: RunCli
) -> None:
    # 'welcome' only goes to a step that does not exist: one mistake, one error.
    text = VALID.replace("    next: desk\n", "    next: dsk\n")
    errors = errors_of(*check(write_flow, run_cli, text))
    assert errors[0] == (
        "15:11: unknown step 'dsk' (did you mean 'desk'?); defined: desk, ext, welcome"
    )
    assert not any("loop" in e for e in errors), errors


def test_start_names_a_missing_step(write_flow: WriteFlow, run_cli: RunCli) -> None:
    text = VALID.replace("start: welcome", "start: welcom")
    assert one_error(write_flow, run_cli, text) == (
        "11:8: unknown step 'welcom' (did you mean 'welcome'?); defined: desk, ext, welcome"
    )


def test_unreachable_step(write_flow: WriteFlow, run_cli: RunCli) -> None:
    text = VALID + "  orphan:\n    hangup:\n"
    assert one_error(write_flow, run_cli, text) == (
        "21:3: step 'orphan' is unreachable from start 'welcome'"
    )


MENU = VALID.replace(
    "    next: desk\n",
    """\
    next: menu
  menu:
    menu:
      prompt: custom/menu
      options: {"1": desk, "2": ext}
    failed: desk
""",
)


def test_a_menu_with_a_way_out_passes(write_flow: WriteFlow, run_cli: RunCli) -> None:
    assert check(write_flow, run_cli, MENU)[1].code == 0


def test_menu_without_a_way_out(write_flow: WriteFlow, run_cli: RunCli) -> None:
    text = MENU.replace("    failed: desk\n", "")
    assert one_error(write_flow, run_cli, text) == (
        "16:3: menu 'menu' has no way out when the caller presses nothing or only wrong "
        "keys: add 'failed: <step>'"
    )


def test_bad_menu_key(write_flow: WriteFlow, run_cli: RunCli) -> None:
    text = MENU.replace('"2": ext', '"12": ext')
    assert one_error(write_flow, run_cli, text) == (
        "19:28: invalid value '12': expected one phone key: 0-9, * or #"
    )


def test_goto_loop_with_no_exit(write_flow: WriteFlow, run_cli: RunCli) -> None:
    text = VALID.replace(
        "    next: desk\n", "    next: a\n  a:\n    goto: b\n  b:\n    goto: a\n"
    ).replace("  desk:\n    dial: desk\n    no_answer: ext\n  ext:\n    forward: out\n", "")
    assert errors_of(*check(write_flow, run_cli, text)) == [
        "13:3: step 'welcome' is in a loop with no exit (no path reaches a step that ends "
        "the call)",
        "16:3: step 'a' is in a loop with no exit: a → b → a (no path reaches a step that "
        "ends the call)",
        "18:3: step 'b' is in a loop with no exit: b → a → b (no path reaches a step that "
        "ends the call)",
    ]


def test_play_next_loop_with_no_exit(write_flow: WriteFlow, run_cli: RunCli) -> None:
    text = VALID.replace(
        "    next: desk\n", "    next: again\n  again:\n    play: x\n    next: welcome\n"
    )
    errors = errors_of(*check(write_flow, run_cli, text))
    assert errors[:2] == [
        "13:3: step 'welcome' is in a loop with no exit: welcome → again → welcome "
        "(no path reaches a step that ends the call)",
        "16:3: step 'again' is in a loop with no exit: again → welcome → again "
        "(no path reaches a step that ends the call)",
    ]
    # desk and ext are no longer reachable from start
    assert errors[2:] == [
        "19:3: step 'desk' is unreachable from start 'welcome'",
        "22:3: step 'ext' is unreachable from start 'welcome'",
    ]


def test_a_loop_with_an_exit_passes(write_flow: WriteFlow, run_cli: RunCli) -> None:
    # The menu loops back to welcome, but 'failed' reaches a human: not an endless loop.
    text = MENU.replace('"2": ext', '"2": ext, "9": welcome')
    assert check(write_flow, run_cli, text)[1].code == 0


def test_goto_itself(write_flow: WriteFlow, run_cli: RunCli) -> None:
    text = VALID.replace("    forward: out\n", "    goto: ext\n")
    errors = errors_of(*check(write_flow, run_cli, text))
    assert "20:11: step 'ext' goes to itself" in errors


def test_unknown_destination(write_flow: WriteFlow, run_cli: RunCli) -> None:
    text = VALID.replace("forward: out", "forward: outt")
    assert one_error(write_flow, run_cli, text) == (
        "20:14: unknown destination 'outt' (did you mean 'out'?); defined: desk, out"
    )


def test_unknown_fallback_destination(write_flow: WriteFlow, run_cli: RunCli) -> None:
    text = VALID.replace("fallback: desk", "fallback: secretariat")
    assert one_error(write_flow, run_cli, text) == (
        "5:11: unknown destination 'secretariat'; defined: desk, out"
    )


def test_unknown_route(write_flow: WriteFlow, run_cli: RunCli) -> None:
    text = VALID.replace("route: outbound}", "route: outbond}")
    assert one_error(write_flow, run_cli, text) == (
        "8:38: unknown route 'outbond' (did you mean 'outbound'?); defined: outbound"
    )


def test_unknown_calendar(write_flow: WriteFlow, run_cli: RunCli) -> None:
    text = CALENDAR.replace(', "25:00-26:00"', "").replace(
        "    next: desk\n",
        "    next: hours\n  hours:\n    schedule: ofice\n    open: desk\n    closed: ext\n",
    )
    assert one_error(write_flow, run_cli, text) == (
        "22:15: unknown calendar 'ofice' (did you mean 'office'?); defined: office"
    )


def test_unknown_person_in_ring_in_turn(write_flow: WriteFlow, run_cli: RunCli) -> None:
    text = VALID.replace(
        "    forward: out\n",
        "    escalate: {tier: 2, ring_in_turn: [desk, dr-who]}\n",
    )
    assert one_error(write_flow, run_cli, text) == (
        "20:46: unknown destination 'dr-who'; defined: desk, out"
    )


def test_escalation_needs_exactly_one_target(write_flow: WriteFlow, run_cli: RunCli) -> None:
    text = VALID.replace(
        "    forward: out\n", "    escalate: {tier: 2, to: desk, ring_in_turn: [out]}\n"
    )
    assert one_error(write_flow, run_cli, text) == (
        "20:15: an escalation needs exactly one of 'to', 'ring_in_turn' or 'oncall'"
    )


# -- several files --------------------------------------------------------------------------


def test_number_claimed_by_two_flows(write_flow: WriteFlow, run_cli: RunCli) -> None:
    a = write_flow(VALID, "flows/a.yaml")
    b = write_flow(
        VALID.replace("flow: t", "flow: u").replace('["100"]', '["200", "100"]'), "flows/b.yaml"
    )
    result = run_cli("check", a.parent)
    assert result.code == 1
    assert result.err_lines == [
        f"{b}:3:18: number '100' is already claimed by flow 't' ({a}:3)",
        "1 error",
    ]


def test_same_flow_name_twice(write_flow: WriteFlow, run_cli: RunCli) -> None:
    a = write_flow(VALID, "flows/a.yaml")
    b = write_flow(
        "# the same flow, copied\n" + VALID.lstrip().replace('"100"', '"200"'), "flows/b.yaml"
    )
    result = run_cli("check", a.parent)
    assert result.code == 1
    assert result.err_lines == [f"{b}:3:7: flow 't' is already defined in {a}:2", "1 error"]


def test_errors_of_several_files_are_all_reported(write_flow: WriteFlow, run_cli: RunCli) -> None:
    a = write_flow(VALID.replace("version: 1", "version: 2"), "flows/a.yaml")
    b = write_flow(
        VALID.replace("flow: t", "flow: u").replace("next: desk", "next: x"), "flows/b.yaml"
    )
    write_flow("not: a flow\n", "flows/notes.txt")  # not a flow file: ignored
    result = run_cli("check", a.parent)
    assert result.code == 1
    lines = result.err_lines
    assert lines[-1] == f"{len(lines) - 1} errors"
    assert lines[0] == f"{a}:1:10: unsupported version 2: this callflow reads version 1"
    assert lines[1].startswith(f"{b}:15:11: unknown step 'x'")


def test_two_valid_files(write_flow: WriteFlow, run_cli: RunCli) -> None:
    a = write_flow(VALID, "flows/a.yaml")
    write_flow(VALID.replace("flow: t", "flow: u").replace('"100"', '"200"'), "flows/b.yml")
    result = run_cli("check", a.parent)
    assert (result.code, result.out, result.err) == (0, "2 files OK: t, u\n", "")


# -- the command ----------------------------------------------------------------------------


def test_several_errors_in_one_file_are_all_reported_sorted(
    write_flow: WriteFlow, run_cli: RunCli
) -> None:
    text = (
        VALID.replace("ring: 20s", "ring: 20 seconds")
        .replace("fallback: desk", "fallbak: desk")
        .replace("forward: out\n", "forward: out\n    failed: 42\n")
        .replace('numbers: ["100"]', "numbers: [1-00]")
    )
    errors = errors_of(*check(write_flow, run_cli, text))
    assert errors == [
        "3:11: invalid value '1-00': expected a dialed number of digits, * or #",
        "5:1: unknown key 'fallbak' (did you mean 'fallback'?)",
        "7:38: invalid duration '20 seconds', expected e.g. '20s', '1m30s', '500ms'",
    ]
    lines = [int(e.split(":")[0]) for e in errors]
    assert lines == sorted(lines)


def test_graph_errors_are_sorted_by_line(write_flow: WriteFlow, run_cli: RunCli) -> None:
    text = (
        VALID.replace("fallback: desk", "fallback: nobody")
        .replace("no_answer: ext", "no_answer: gone")
        .replace("forward: out", "forward: elsewhere")
    )
    path, result = check(write_flow, run_cli, text)
    errors = errors_of(path, result)
    assert [e.split(": ")[0] for e in errors] == ["5:11", "18:16", "19:3", "20:14"]


def test_missing_path(run_cli: RunCli, tmp_path: Path) -> None:
    result = run_cli("check", tmp_path / "nope")
    assert result.code == 1
    assert result.err == f"callflow: {tmp_path / 'nope'}: no such file or folder\n"


def test_folder_without_flows(run_cli: RunCli, tmp_path: Path) -> None:
    result = run_cli("check", tmp_path)
    assert result.code == 1
    assert result.err == f"callflow: no flow files (*.yaml) in {tmp_path}\n"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "- a list\n",
        "just text\n",
        "version: [\n",
        "a: &x [*x]\n",
        "steps: " + "[" * 1100 + "]" * 1100 + "\n",
        VALID.replace("Europe/Paris", "America"),
        VALID.replace("steps:\n", "steps: ~\nx:\n"),
        "\x00\n",
    ],
)
def test_broken_files_never_give_a_traceback(
    write_flow: WriteFlow, run_cli: RunCli, text: str
) -> None:
    path, result = check(write_flow, run_cli, text)
    assert result.code == 1
    assert result.err_lines[0].startswith(f"{path}:")
    assert result.err_lines[-1].endswith(("1 error", " errors"))
    assert "Traceback" not in result.err


def test_check_as_a_subprocess_reports_without_traceback() -> None:
    broken = FLOWS / "broken.yaml"
    proc = subprocess.run(
        [sys.executable, "-m", "callflow.cli", "check", str(broken)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert lines[-1] == f"{len(lines) - 1} errors"
    assert f"{broken}:2:1: unknown key 'flw' (did you mean 'flow'?)" in lines
    assert f"{broken}:5:11: unknown timezone 'Europe'" in lines
