"""`callflow calendar` and `callflow simulate` with iCal feeds: they say which feed event
decided; a URL feed that is down is read from the daemon's cache (with a warning)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from callflow.feeds import FeedFetcher, feed_key
from callflow.schedule import FeedBook
from tests.support.flows import write_flow

RunCli = Callable[..., Any]  # the fixture of conftest.py
FEEDS = Path(__file__).parent / "feeds"
DOWN = "http://127.0.0.1:9/cal/private-5ecr3t/permanences.ics"  # discard port: refused

FLOW = f"""
version: 1
flow: parc
numbers: ["100"]
timezone: Europe/Paris
fallback: desk
calendars:
  office:
    weekly: {{mon-fri: ["08:00-12:30", "14:00-19:00"]}}
    closed_feeds: [feeds/fermetures.ics]
    open_feeds: ["{DOWN}"]
destinations:
  desk: {{endpoint: PJSIP/accueil}}
queues:
  same-day: {{overdue: 4h}}
start: hours
steps:
  hours:
    schedule: office
    open: desk-call
    closed: cb
  desk-call:
    dial: desk
  cb:
    callback: {{queue: same-day}}
"""


def practice(tmp_path: Path, *, cached: bool = True) -> tuple[Path, Path]:
    """The flow (its closures in a file beside it), and a config whose state_dir holds
    the daemon's cached copy of the URL feed (the Cal.com openings)."""
    shutil.copytree(FEEDS, tmp_path / "flows" / "feeds")
    flow = write_flow(tmp_path / "flows", FLOW)
    config = tmp_path / "callflow.toml"
    config.write_text('[daemon]\nstate_dir = "state"\n', encoding="utf-8")
    if cached:
        cache = FeedFetcher(FeedBook(), list, tmp_path / "state" / "feeds").cache_path(DOWN)
        cache.parent.mkdir(parents=True)
        shutil.copy(FEEDS / "permanences.ics", cache)
    return flow, config


def test_calendar_shows_the_feed_event_that_decided(run_cli: RunCli, tmp_path: Path) -> None:
    flow, config = practice(tmp_path)
    result = run_cli("calendar", flow, "--from", "2026-12-09", "--days", "5", "--config", config)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert (
        "Wed 2026-12-09  14:00-19:00  closed (closure: Mercredi après-midi fermé "
        "(2026-12-09 14:00 to 2026-12-09 19:00, feed Cabinet fermetures))"
    ) in lines
    assert (
        "Fri 2026-12-11  00:00-24:00  closed (closure: Formation DPC (cabinet fermé) "
        "(2026-12-11 00:00 to 2026-12-12 00:00, feed Cabinet fermetures))"
    ) in lines
    assert (
        "Sun 2026-12-13  09:00-12:00  open   (opening: Permanence du dimanche "
        "(2026-12-13 09:00 to 2026-12-13 12:00, feed Permanences Cal.com))"
    ) in lines
    # The feed that is down is named by its key, never by its (secret) URL.
    assert f"calendar feed {feed_key(DOWN)} unreadable, its cached copy" in result.err
    assert "5ecr3t" not in result.err


def test_simulate_says_which_feed_event_closed_the_line(run_cli: RunCli, tmp_path: Path) -> None:
    flow, config = practice(tmp_path)
    result = run_cli("simulate", flow, "--at", "2026-12-09 15:00", "--config", config)
    assert result.code == 0, result.err
    assert (
        "hours: closed (closure: Mercredi après-midi fermé (2026-12-09 14:00 to "
        "2026-12-09 19:00, feed Cabinet fermetures)) → cb"
    ) in result.out
    opened = run_cli("simulate", flow, "--at", "2026-12-13 10:00", "--config", config, "--json")
    data = json.loads(opened.out)
    (hours,) = [s for s in data["steps"] if s["step"] == "hours"]
    assert hours["result"] == "open"
    assert "feed Permanences Cal.com" in hours["detail"]
    assert data["path"][:2] == ["hours", "desk-call"]


def test_a_feed_down_with_no_cache_is_said_and_adds_nothing(
    run_cli: RunCli, tmp_path: Path
) -> None:
    flow, config = practice(tmp_path, cached=False)
    result = run_cli("simulate", flow, "--at", "2026-12-13 10:00", "--config", config)
    assert result.code == 0
    assert "hours: closed (weekly: outside opening hours) → cb" in result.out
    assert "no copy: its events are missing" in result.err
    assert not (tmp_path / "state" / "feeds").exists()  # the command line writes no cache
