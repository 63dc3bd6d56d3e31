"""The daemon's calendar feeds part, wired: a flow whose calendar reads a feed file; the
daemon's part reads it, the running flows' calendars close on its events, the metrics
tell the feed's state, and a reload brings a new feed in at once."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from callflow.app import Daemon
from callflow.errors import SettingsError
from callflow.feeds import feed_key
from callflow.schedule import Source, localize
from callflow.settings import (
    AmiSettings,
    AriSettings,
    DaemonSettings,
    DatabaseSettings,
    FlowsSettings,
    HttpSettings,
    Settings,
)
from tests.support.flows import PARC_FLOW, write_flow
from tests.support.polling import wait_until

FEEDS = Path(__file__).resolve().parents[1] / "unit" / "feeds"
WEDNESDAY = localize(datetime(2026, 12, 9, 15, 0), ZoneInfo("Europe/Paris"))
SUNDAY = localize(datetime(2026, 12, 13, 10, 0), ZoneInfo("Europe/Paris"))
WITH_FEED = PARC_FLOW.replace(
    'weekly: {mon-fri: ["08:00-12:30", "14:00-19:00"]}',
    'weekly: {mon-fri: ["08:00-12:30", "14:00-19:00"]}\n    closed_feeds: [fermetures.ics]',
)


def make_daemon(tmp_path: Path) -> Daemon:
    settings = Settings(
        ari=AriSettings(url="http://127.0.0.1:9", password_env="TEST_ARI_PASSWORD"),
        ami=AmiSettings(enabled=False),
        flows=FlowsSettings(dir="flows", feed_refresh=3600),
        daemon=DaemonSettings(stop_grace=0.1, state_dir="var"),
        database=DatabaseSettings(
            url=f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}", spool_dir="spool"
        ),
        http=HttpSettings(enabled=False),
        base_dir=tmp_path,
    )
    return Daemon(settings, {"TEST_ARI_PASSWORD": "ari-secret"})


async def test_the_daemon_reads_the_feeds_its_flows_name(tmp_path: Path) -> None:
    assert WITH_FEED != PARC_FLOW
    flows = tmp_path / "flows"
    write_flow(flows, WITH_FEED)
    shutil.copy(FEEDS / "fermetures.ics", flows / "fermetures.ics")
    daemon = make_daemon(tmp_path)
    location = str((flows / "fermetures.ics").resolve())
    assert daemon.flows.current.feed_locations() == [location]

    async with daemon.feeds:
        office = daemon.flows.current.flows["parc"].calendars["office"]
        await wait_until(lambda: office.state_at(WEDNESDAY).source is Source.CLOSURE, 30)
        assert office.state_at(WEDNESDAY).feed == "Cabinet fermetures"
        metrics = daemon.metrics.render().decode()
        assert f'callflow_calendar_feed_up{{feed="{feed_key(location)}"}} 1.0' in metrics
        assert (tmp_path / "var" / "feeds").is_dir()

        # A reload that names a second feed reads it now, not at the next refresh.
        shutil.copy(FEEDS / "permanences.ics", flows / "permanences.ics")
        write_flow(
            flows,
            WITH_FEED.replace(
                "closed_feeds: [fermetures.ics]",
                "closed_feeds: [fermetures.ics]\n    open_feeds: [permanences.ics]",
            ),
        )
        assert (await daemon.reload()).ok
        office = daemon.flows.current.flows["parc"].calendars["office"]
        await wait_until(lambda: office.state_at(SUNDAY).open, 30)
        assert office.state_at(SUNDAY).feed == "Permanences Cal.com"
        assert len(daemon.feeds.statuses()) == 2


def test_feed_settings_are_checked() -> None:
    with pytest.raises(SettingsError, match="feed_refresh must be between 10 and 86400"):
        FlowsSettings(feed_refresh=1)
    with pytest.raises(SettingsError, match="feed_timeout must be between 0 and 300"):
        FlowsSettings(feed_timeout=0)
