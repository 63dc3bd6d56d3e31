"""French for the practice, English available: the page, the report, holiday names."""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient, TestServer

from callflow.api import AdminContext, create_app
from callflow.api.i18n import LOCALES, catalog, render_page
from callflow.flow.live import LiveFlows
from callflow.schedule.calendar import Calendar, OverrideStore
from callflow.schedule.spec import CalendarSpec
from callflow.settings import load_settings
from callflow.store.report import render_html, render_text
from tests.support.flows import write_flow

REPO = Path(__file__).resolve().parents[2]
STATIC = REPO / "callflow" / "api" / "static"
PARIS = ZoneInfo("Europe/Paris")


# -- the page ---------------------------------------------------------------------------


def test_both_catalogs_hold_every_word_of_the_page() -> None:
    html_keys = set(re.findall(r"\{\{(\w+)\}\}", (STATIC / "index.html").read_text()))
    js_keys = set(re.findall(r'\bt\("(\w+)"\s*[,)]', (STATIC / "app.js").read_text()))
    js_prefixed = {"reason_" + s for s in ("holiday", "closure", "opening", "weekly", "override")}
    states = {"open", "closed", "reachable", "unreachable", "unknown"}  # t(value) in app.js
    needed = (html_keys - {"lang", "messages"}) | js_keys | js_prefixed | states
    assert {p.stem for p in LOCALES.glob("*.json")} == {"fr", "en"}
    for language in ("fr", "en"):
        missing = needed - set(catalog(language))
        assert not missing, f"{language}: {sorted(missing)}"
    assert set(catalog("fr")) == set(catalog("en"))


def test_no_english_word_is_left_in_the_page_template() -> None:
    text = re.sub(r"<[^>]+>", " ", (STATIC / "index.html").read_text())
    words = {w for w in re.findall(r"[A-Za-z]{3,}", re.sub(r"\{\{\w+\}\}", " ", text))}
    assert words <= {"callflow"}, words


def test_the_page_in_french_is_french_through_and_through() -> None:
    page = render_page((STATIC / "index.html").read_text(), "fr")
    assert '<html lang="fr">' in page
    assert "Se connecter" in page and "Jeton d&#x27;accès" in page
    assert "Log in" not in page and "Access token" not in page
    embedded = re.search(r'<script id="messages" type="application/json">(.*?)</script>', page)
    assert embedded is not None and json.loads(embedded.group(1)) == catalog("fr")
    assert "{{" not in page


def test_the_catalog_cannot_end_its_script_block() -> None:
    page = render_page('<script type="application/json">{{messages}}</script>', "fr")
    assert page.count("</") == 1


async def test_the_server_serves_the_page_in_the_daemons_language(tmp_path: Path) -> None:
    write_flow(tmp_path / "flows")
    flows = LiveFlows(tmp_path / "flows", None)
    for language, words in (("fr", "Patients à rappeler"), ("en", "Callbacks to make")):
        ctx = AdminContext(
            flows=flows, overrides=OverrideStore(), reload=flows.reload, language=language
        )
        async with TestClient(TestServer(create_app(ctx))) as client:
            for path in ("/page/", "/page/index.html"):
                async with client.get(path) as resp:
                    assert resp.status == 200
                    text = await resp.text()
                assert f'<html lang="{language}">' in text and words in text, path
                assert "Content-Security-Policy" in resp.headers


def test_the_daemons_language_defaults_to_french(tmp_path: Path) -> None:
    cfg = tmp_path / "callflow.toml"
    cfg.write_text("")
    assert load_settings(cfg, env={}).daemon.language == "fr"
    cfg.write_text('[daemon]\nlanguage = "en"\n')
    assert load_settings(cfg, env={}).daemon.language == "en"


# -- holidays -----------------------------------------------------------------------------


def moselle(language: str) -> Calendar:
    spec = CalendarSpec.model_validate({"holidays": {"country": "FR", "subdivision": "57"}})
    return Calendar("office", spec, PARIS, language=language)


@pytest.mark.parametrize(
    ("language", "christmas", "stephen"),
    [("fr", "Noël", "Saint-Étienne"), ("en", "Christmas Day", "Saint Stephen's Day")],
)
def test_holiday_names_in_the_language(language: str, christmas: str, stephen: str) -> None:
    cal = moselle(language)
    assert cal.holiday_name(date(2026, 12, 25)) == christmas
    assert cal.holiday_name(date(2026, 12, 26)) == stephen


def test_the_running_flows_name_holidays_in_the_daemons_language() -> None:
    flows = LiveFlows(REPO / "dialplans", None, language="fr")
    names = {
        cal.holiday_name(date(2026, 12, 25))
        for flow in flows.current.flows.values()
        for cal in flow.calendars.values()
        if cal.spec.holidays is not None
    }
    assert names == {"Noël"}


# -- the report ---------------------------------------------------------------------------


def report() -> dict[str, object]:
    grid = [[0] * 24 for _ in range(7)]
    grid[0][9] = 4
    return {
        "period": {
            "from": "2026-12-01",
            "to": "2026-12-08",
            "timezone": "Europe/Paris",
            "flow": None,
        },
        "calls": {"total": 4, "by_outcome": {"answered": 3, "abandoned": 1}, "unfinished": 0},
        "missed": {"rate": 0.25, "count": 1},
        "without_daemon": {"fallback": 1, "shed": 0, "recovered": 0, "lost": 0, "rate": 0.25},
        "after_fallback": {
            **dict.fromkeys(("secretariat", "outside", "nobody", "abandoned", "cut"), 0),
            "voicemail": 1,
            "not_known": 0,
            "reached_nobody": 0,
        },
        "time_to_answer": {"calls": 3, "average_s": 12.5, "p90_s": 20.0},
        "response_time": {"calls": 2, "average_s": 8.0, "p90_s": 10.0},
        "callbacks": {
            "requested": 0,
            "done": 0,
            "pending": 0,
            "cancelled": 0,
            "completion_rate": None,
            "delay_average_s": None,
            "delay_p90_s": None,
        },
        "forwarding": {"calls": 0, "rate": 0.0, "by_destination": {}},
        "satisfaction": {
            "status": "collected",
            "asked": 3,
            "ratings": 2,
            "declined": 1,
            "response_rate": 2 / 3,
            "average": 4.5,
            "scale": 5,
            "by_score": {"4": 1, "5": 1},
        },
        "tiers": {},
        "volume": {
            "weekdays": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"],
            "hours": list(range(24)),
            "calls": grid,
        },
    }


def test_the_html_report_in_french() -> None:
    page = render_html(report(), "fr")
    assert page.startswith('<!DOCTYPE html>\n<html lang="fr">')
    for words in (
        "rapport du 2026-12-01 au 2026-12-08",
        "temps de réponse, équipe seule",
        "taux d&#x27;appels manqués",
        "25,0 %",
        "sans le démon (repli, délestés, panne)",
        "panne : repris / perdus",
        "après le repli du plan de numérotation</th><td>messagerie 1",
        "pris",
        "abandonnés",
        "appels par jour et par heure",
        "lun 09 h 00-09 h 59 : 4 appels",
        "satisfaction des patients, note moyenne (2 notes)</th><td>4,5 / 5",
        "66,7 % (2/3)",
        "Définitions",
    ):
        assert words in page, words
    for english in ("missed-call", "Definitions", "Mon 09", "answered"):
        assert english not in page, english


def test_the_html_report_in_english() -> None:
    page = render_html(report(), "en")
    assert '<html lang="en">' in page and "missed-call rate" in page and "25.0 %" in page
    assert "Mon 09:00-09:59: 4 calls" in page
    assert "patient satisfaction, average rating (2 ratings)</th><td>4.5 / 5" in page
    assert "survey response rate" in page and "66.7 % (2/3)" in page
    assert "taux" not in render_text(report(), "en")
