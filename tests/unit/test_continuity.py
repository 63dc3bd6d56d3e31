"""The continuity audit (``callflow check --horizon``): every path of every slot, played in
the simulator; a caller who would reach no one is reported with the period and the path."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from callflow.continuity import audit, caller_paths
from callflow.flow.events import OutcomeKind
from tests.support.flows import compile_flow

RunCli = Callable[..., Any]  # the fixture of conftest.py

PARIS = ZoneInfo("Europe/Paris")
MONDAY = datetime(2026, 12, 21, 0, 0, tzinfo=PARIS)  # the week of Christmas

# Open on weekdays; a Christmas closure that a careless edit sent to a bare message; the
# menu's "2" leads to a hangup after hours too.
FLOW = """
version: 1
flow: parc
numbers: ["100"]
timezone: Europe/Paris
fallback: desk
calendars:
  office:
    weekly: {mon-fri: ["08:00-19:00"]}
    closed: [{from: 2026-12-24, to: 2026-12-25, label: "Noël"}]
destinations:
  desk: {endpoint: PJSIP/accueil, ring: 20s}
  secretariat: {number: "0180000000", route: outbound, ring: 20s}
routes:
  outbound: [trunk-a]
start: hours
steps:
  hours: {schedule: office, open: menu, closed: after-hours}
  menu:
    menu: {prompt: custom/menu, options: {"1": desk-call, "2": info}, attempts: 2}
    failed: desk-call
  desk-call: {dial: desk}
  info: {play: [custom/info], next: bye}
  bye: {hangup: {}}
  after-hours: {forward: secretariat, failed: closed-msg}
  closed-msg: {hangup: {announce: [custom/closed]}}
"""


async def test_every_path_of_a_menu_is_played() -> None:
    flow = compile_flow(FLOW)
    paths, truncated = await caller_paths(flow, MONDAY.replace(hour=10))
    assert not truncated
    by_keys = {p.keys: (p.steps, p.outcome) for p in paths}
    assert by_keys == {
        (): (("hours", "menu", "desk-call"), OutcomeKind.ANSWERED),  # nothing pressed
        ("1",): (("hours", "menu", "desk-call"), OutcomeKind.ANSWERED),
        ("2",): (("hours", "menu", "info", "bye"), OutcomeKind.HANGUP),
    }


async def test_gaps_are_reported_with_their_period_and_path() -> None:
    flow = compile_flow(FLOW)
    report = await audit(flow, MONDAY, timedelta(days=7))
    assert report.slots == 7 * 96
    # Open, or closed (by the weekly hours or for Noël: the same for a caller): two
    # situations, each played once.
    assert report.situations == 2
    gaps = [(g.start, g.end, g.path.keys, g.path.end_step) for g in report.gaps]
    monday_open = MONDAY.replace(hour=8)
    # "2" ends on a bare hangup in every open period: Mon, Tue, Wed (Thu and Fri are Noël).
    info = [g for g in gaps if g[2] == ("2",)]
    assert [(g[0], g[1]) for g in info] == [
        (monday_open + timedelta(days=d), monday_open + timedelta(days=d, hours=11))
        for d in (0, 1, 2)
    ]
    assert {g[3] for g in info} == {"bye"}
    # None of the closed periods is a gap: after hours the call is forwarded.
    assert all(g[2] == ("2",) for g in gaps)


async def test_a_closure_ending_on_a_bare_message_is_a_gap() -> None:
    # The secretariat is unreachable after hours: its branch is the bare closed message.
    flow = compile_flow(
        FLOW.replace(
            "after-hours: {forward: secretariat, failed: closed-msg}",
            "after-hours: {goto: closed-msg}",
        )
    )
    report = await audit(flow, MONDAY, timedelta(days=7))
    closed = [g for g in report.gaps if g.path.keys == ()]
    assert closed, "the after-hours hangup must be reported"
    first = closed[0]
    assert (first.start, first.end) == (MONDAY, MONDAY.replace(hour=8))
    assert first.path.outcome is OutcomeKind.HANGUP and first.path.end_step == "closed-msg"
    christmas = datetime(2026, 12, 24, 0, 0, tzinfo=PARIS)
    assert any(g.start <= christmas < g.end for g in closed)


def test_check_horizon_exits_1_on_a_gap(run_cli: RunCli, tmp_path: Path) -> None:
    (tmp_path / "parc.yaml").write_text(FLOW.lstrip(), encoding="utf-8")
    r = run_cli("check", str(tmp_path), "--horizon", "7d", "--from", "2026-12-21 00:00")
    assert r.code == 1, r.out + r.err
    assert "GAP Mon 2026-12-21 08:00 → Mon 2026-12-21 19:00: keys 2: hours → menu → info" in r.out
    ok = FLOW.replace("next: bye}", "next: desk-call}").replace("  bye: {hangup: {}}\n", "")
    (tmp_path / "parc.yaml").write_text(ok.lstrip(), encoding="utf-8")
    r = run_cli("check", str(tmp_path), "--horizon", "7d", "--from", "2026-12-21 00:00")
    assert r.code == 0, r.out + r.err
    assert "no gap" in r.out
    r = run_cli("check", str(tmp_path), "--horizon", "forever")
    assert r.code != 0 and "invalid horizon 'forever'" in r.err
