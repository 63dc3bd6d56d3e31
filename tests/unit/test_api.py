"""The admin HTTP API (callflow.api): auth, health, metrics, overrides, reload, callbacks,
calls, trunks, errors; on a real SQLite call log and a real flow folder."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from callflow.api import AdminContext, AdminServer, Credentials, create_app, load_tokens
from callflow.api.accounts import digest
from callflow.errors import SettingsError
from callflow.flow.engine import Engine
from callflow.flow.events import CallInfo, Outcome, OutcomeKind
from callflow.flow.live import LiveFlows
from callflow.flow.services import Services
from callflow.metrics import Metrics
from callflow.schedule import OverrideStore
from callflow.simulate import Scenario, SimulatedCall
from callflow.store.db import create_engine, upgrade
from callflow.store.models import AdminAction, Call, CallbackRequestRow, CallStep
from callflow.trunks import ContactUpdate, HealthAwareSelector, TrunkHealth, TrunkState
from tests.support.flows import PARC_FLOW, write_flow

TOKEN = "s3cret-token-for-the-staff-0123"
ADMIN_TOKEN = "another-token-for-the-admin-4567"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)  # a Tuesday, 10:00 in Paris: office open


class Clock:
    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Env:
    client: TestClient[Any, Any]
    ctx: AdminContext
    clock: Clock
    db: AsyncEngine
    flows_dir: Path
    audit: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    ari: list[bool] = field(default_factory=lambda: [True])

    async def call(
        self, method: str, path: str, *, headers: Mapping[str, str] | None = AUTH, **kw: Any
    ) -> tuple[int, Any]:
        async with self.client.request(method, path, headers=headers, **kw) as resp:
            text = await resp.text()
            ctype = resp.headers.get("Content-Type", "")
            return resp.status, json.loads(text) if ctype.startswith("application/json") else text


async def make_db(tmp_path: Path) -> AsyncEngine:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}")
    await upgrade(engine)
    return engine


async def add_callback(
    db: AsyncEngine, *, call_id: str, created: datetime, tier: int | None = 2, **kw: Any
) -> int:
    values = {
        "call_id": call_id,
        "flow": "parc",
        "queue": "same-day",
        "priority": "high",
        "tier": tier,
        "caller": "0612345678",
        "status": "pending",
        "created": created,
        **kw,
    }
    async with db.begin() as conn:
        res = await conn.execute(insert(CallbackRequestRow).values(**values))
        key = res.inserted_primary_key
        assert key is not None
        return int(key[0])


def selector() -> HealthAwareSelector:
    health = TrunkHealth(["trunk-a", "trunk-b"], clock=lambda: NOW)
    health.resync(
        [
            ContactUpdate("trunk-a", "sip:a.example", TrunkState.REACHABLE, 21.5),
            ContactUpdate("trunk-b", "sip:b.example", TrunkState.UNREACHABLE),
        ]
    )
    return HealthAwareSelector(health, monotonic=lambda: 0.0)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    flows_dir = tmp_path / "flows"
    write_flow(flows_dir)
    store = LiveFlows(flows_dir, None)
    db = await make_db(tmp_path)
    clock = Clock()
    audit: list[tuple[str, str, dict[str, Any]]] = []
    ari = [True]
    ctx = AdminContext(
        flows=store,
        overrides=OverrideStore(),
        reload=store.reload,
        clock=clock,
        trunks=selector(),
        db=db,
        metrics=Metrics(process=False),
        credentials=Credentials.of_tokens({"staff": TOKEN, "admin": ADMIN_TOKEN}),
        audit=lambda who, action, detail: audit.append((who, action, dict(detail))),
        ari_connected=lambda: ari[0],
        checks={"database": lambda: True, "ami": lambda: False},
    )
    client: TestClient[Any, Any] = TestClient(TestServer(create_app(ctx)))
    await client.start_server()
    try:
        yield Env(client, ctx, clock, db, flows_dir, audit, ari)
    finally:
        await client.close()
        await db.dispose()


# -- auth -----------------------------------------------------------------------------------


async def test_api_routes_need_a_valid_bearer_token(env: Env) -> None:
    status, body = await env.call("GET", "/api/calendars", headers={})
    assert status == 401 and "token" in body["error"]
    async with env.client.get("/api/calendars") as resp:
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    bad = {"Authorization": "Bearer " + TOKEN[:-1] + "x"}
    assert (await env.call("GET", "/api/calendars", headers=bad))[0] == 401
    basic = {"Authorization": "Basic " + TOKEN}
    assert (await env.call("GET", "/api/calendars", headers=basic))[0] == 401
    admin = {"Authorization": f"bearer {ADMIN_TOKEN}"}
    assert (await env.call("GET", "/api/calendars", headers=admin))[0] == 200


async def test_without_a_token_file_every_api_route_is_refused(tmp_path: Path) -> None:
    write_flow(tmp_path / "flows")
    store = LiveFlows(tmp_path / "flows", None)
    ctx = AdminContext(flows=store, overrides=OverrideStore(), reload=store.reload)
    async with TestClient(TestServer(create_app(ctx))) as client:
        for method, path in [
            ("GET", "/api/calendars"),
            ("POST", "/api/reload"),
            ("GET", "/api/callbacks"),
            ("POST", "/api/calendars/parc/office/override"),
        ]:
            async with client.request(method, path, headers=AUTH) as resp:
                assert resp.status == 401
                assert "admin API is disabled" in (await resp.json())["error"]
        async with client.get("/healthz") as resp:  # not behind the token
            assert resp.status == 503  # ARI never connected here


def test_token_file_formats_and_mistakes(tmp_path: Path) -> None:
    f = tmp_path / "tokens"
    f.write_text(f"# staff of the practice\n\nstaff:{TOKEN}\n{ADMIN_TOKEN}\n")
    os.chmod(f, 0o600)
    loaded = {a.name: (a.role, a.token_sha256) for a in load_tokens(f)}
    assert loaded == {"staff": ("admin", digest(TOKEN)), "admin": ("admin", digest(ADMIN_TOKEN))}
    f.write_text(f"desk:secretariat:{TOKEN}\n")
    assert [(a.name, a.role) for a in load_tokens(f)] == [("desk", "secretariat")]
    for text, message in [
        ("staff:short\n", "at least 16"),
        (f"bad name:{TOKEN}\n", "bad token name"),
        (f"a:{TOKEN}\nb:{TOKEN}\n", "same token"),
        (f"a:{TOKEN}\na:{ADMIN_TOKEN}\n", "given twice"),
        ("# nothing\n", "no token"),
    ]:
        f.write_text(text)
        with pytest.raises(SettingsError, match=message):
            load_tokens(f)
    with pytest.raises(SettingsError, match="cannot read"):
        load_tokens(tmp_path / "missing")


# -- health and metrics ---------------------------------------------------------------------


async def test_healthz_is_ready_only_with_ari_connected_and_flows_loaded(env: Env) -> None:
    status, body = await env.call("GET", "/healthz", headers={})
    assert status == 200
    assert body["status"] == "ready" and body["flows"] == ["parc"]
    assert body["checks"] == {"ami": False, "database": True}
    env.ari[0] = False
    status, body = await env.call("GET", "/healthz", headers={})
    assert status == 503
    assert body["problems"] == ["ARI is not connected"]


async def test_metrics_need_no_token_and_show_the_callback_backlog(env: Env) -> None:
    await add_callback(env.db, call_id="c1", created=NOW - timedelta(hours=5))
    await add_callback(env.db, call_id="c2", created=NOW - timedelta(minutes=10), tier=None)
    info = CallInfo("c9", "parc", "v1", "0612345678", "100", NOW)
    assert env.ctx.metrics is not None
    env.ctx.metrics.call_started(info)
    env.ctx.metrics.call_ended(info, Outcome(OutcomeKind.ABANDONED, "hours"), NOW)
    async with env.client.get("/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await resp.text()
    assert 'callflow_calls_total{driver="ari",flow="parc",outcome="abandoned"} 1.0' in text
    assert 'callflow_callbacks_pending{tier="2"} 1.0' in text
    assert 'callflow_callbacks_pending{tier="none"} 1.0' in text
    assert 'callflow_callbacks_overdue{tier="2"} 1.0' in text  # 5 h > the queue's 4 h
    assert 'callflow_callbacks_overdue{tier="none"} 0.0' in text
    assert "callflow_callbacks_oldest_pending_seconds 18000.0" in text
    assert "0612345678" not in text and "c9" not in text


# -- calendars and overrides ----------------------------------------------------------------


async def test_calendars_show_the_state_now(env: Env) -> None:
    status, body = await env.call("GET", "/api/calendars")
    assert status == 200
    office = {c["key"]: c for c in body["calendars"]}["parc/office"]
    assert office["state"] == "open" and office["overridden"] is False
    assert office["reason"] == "weekly: tue 08:00-12:30"
    assert office["until"] == "2026-12-01T12:30:00+01:00"
    assert [c["calendar"] for c in body["calendars"]] == ["lab", "office"]


async def run_call(env: Env) -> OutcomeKind:
    flow = env.ctx.flows.current.flows["parc"]
    services = Services(clock=env.clock, overrides=env.ctx.overrides)
    sim = SimulatedCall(flow, Scenario(), caller="0612345678", dialed="100")
    return (await Engine(services).run(flow, sim)).kind


async def test_an_override_takes_effect_on_the_next_call_and_reverts_by_itself(env: Env) -> None:
    assert await run_call(env) is OutcomeKind.ANSWERED  # open: the desk answers
    status, body = await env.call(
        "POST",
        "/api/calendars/parc/office/override",
        json={"state": "closed", "until": "2026-12-07T08:00", "label": "séminaire"},
    )
    assert status == 200, body
    assert body["state"] == "closed" and body["overridden"] is True
    assert body["until"] == "2026-12-07T08:00:00+01:00"  # Monday 8:00 in Paris
    assert body["override"] == {
        "state": "closed",
        "until": "2026-12-07T08:00:00+01:00",
        "label": "séminaire",
        "set_by": "staff",
    }
    assert "set by staff" in body["reason"]
    assert env.audit == [
        (
            "staff",
            "override set",
            {
                "calendar": "parc/office",
                "state": "closed",
                "until": "2026-12-07T08:00:00+01:00",
                "label": "séminaire",
            },
        )
    ]
    assert await run_call(env) is OutcomeKind.CALLBACK  # closed: a callback request
    env.clock.now = datetime(2026, 12, 7, 7, 0, tzinfo=UTC)  # Monday 8:00 in Paris
    _, body = await env.call("GET", "/api/calendars")
    office = {c["key"]: c for c in body["calendars"]}["parc/office"]
    assert office["overridden"] is False and office["state"] == "open"
    assert await run_call(env) is OutcomeKind.ANSWERED


async def test_open_exceptionally_then_cancel(env: Env) -> None:
    env.clock.now = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)  # Saturday: closed
    status, body = await env.call(
        "POST", "/api/calendars/parc/office/override", json={"state": "open", "until": "12:00"}
    )
    assert status == 400 and "not a date and time" in body["error"]
    status, body = await env.call(
        "POST",
        "/api/calendars/parc/office/override",
        json={"state": "open", "until": "2026-12-05T12:00"},
    )
    assert status == 200 and body["state"] == "open" and body["overridden"]
    status, body = await env.call("DELETE", "/api/calendars/parc/office/override")
    assert status == 200 and body["cancelled"] is True
    assert body["state"] == "closed" and not body["overridden"]
    assert env.audit[-1][:2] == ("staff", "override cancelled")
    status, body = await env.call("DELETE", "/api/calendars/parc/office/override")
    assert status == 200 and body["cancelled"] is False
    assert len(env.audit) == 2  # nothing cancelled: nothing audited


async def test_an_until_in_the_dst_gap_and_with_an_offset(env: Env) -> None:
    env.clock.now = datetime(2027, 3, 27, 12, 0, tzinfo=UTC)
    # 02:30 does not exist in Paris on 28 March 2027: the first instant after the gap.
    status, body = await env.call(
        "POST",
        "/api/calendars/parc/lab/override",
        json={"state": "closed", "until": "2027-03-28T02:30"},
    )
    assert status == 200 and body["until"] == "2027-03-28T03:00:00+02:00"
    status, body = await env.call(
        "POST",
        "/api/calendars/parc/lab/override",
        json={"state": "closed", "until": "2027-03-29T06:00:00Z"},
    )
    assert status == 200 and body["until"] == "2027-03-29T08:00:00+02:00"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"state": "shut", "until": "2026-12-07T08:00"}, '"state" must be'),
        ({"state": "closed"}, '"until" is required'),
        ({"state": "closed", "until": "2026-11-30T08:00"}, "not in the future"),
        ({"state": "closed", "until": "2028-12-07T08:00"}, "days ahead"),
        ({"state": "closed", "until": "2026-12-07T08:00", "who": "x"}, "unknown field"),
        ({"state": "closed", "until": "2026-12-07T08:00", "label": 3}, '"label"'),
        (["closed"], "JSON object"),
    ],
)
async def test_bad_overrides_are_refused_with_a_json_error(
    env: Env, body: Any, message: str
) -> None:
    status, answer = await env.call("POST", "/api/calendars/parc/office/override", json=body)
    assert status == 400 and message in answer["error"]
    assert env.ctx.overrides.active(NOW) == {} and env.audit == []


async def test_errors_are_json_never_a_traceback(env: Env) -> None:
    status, body = await env.call("POST", "/api/calendars/parc/office/override", data=b"{not json")
    assert (status, body) == (400, {"error": "the body is not valid JSON"})
    status, body = await env.call("POST", "/api/calendars/parc/nope/override", json={})
    assert status == 404 and body["error"] == "no calendar 'nope' in flow 'parc'"
    status, body = await env.call("GET", "/api/nothing-here")
    assert status == 404 and body == {"error": "Not Found"}
    status, body = await env.call("PUT", "/api/reload")
    assert status == 405 and "error" in body
    big = b"x" * 100_000
    status, body = await env.call("POST", "/api/calendars/parc/office/override", data=big)
    assert status == 413 and "error" in body

    def boom() -> Any:
        raise RuntimeError("secret internals")

    env.ctx.reload = boom
    status, body = await env.call("POST", "/api/reload")
    assert status == 500
    assert body == {"error": "internal error (see the daemon's log)"}


# -- reload ---------------------------------------------------------------------------------


async def test_reload_reports_ok_or_the_errors_with_file_and_line(env: Env) -> None:
    status, body = await env.call("POST", "/api/reload")
    assert (status, body) == (200, {"ok": True, "flows": ["parc"], "errors": []})
    path = write_flow(env.flows_dir, PARC_FLOW.replace("dial: desk", "dial: nobody"))
    status, body = await env.call("POST", "/api/reload")
    assert status == 422 and body["ok"] is False and body["flows"] == ["parc"]
    assert "reload refused" in body["error"]
    assert any(e.startswith(f"{path}:") and "nobody" in e for e in body["errors"])
    assert [a[1] for a in env.audit] == ["reload", "reload"]
    assert env.audit[1][2]["ok"] is False and env.audit[1][0] == "staff"


# -- callbacks ------------------------------------------------------------------------------


async def test_callbacks_pending_with_waiting_time_and_overdue_flag(env: Env) -> None:
    old = await add_callback(env.db, call_id="c1", created=NOW - timedelta(hours=5))
    new = await add_callback(env.db, call_id="c2", created=NOW - timedelta(minutes=30), tier=None)
    await add_callback(
        env.db,
        call_id="c3",
        created=NOW - timedelta(hours=1),
        status="done",
        completed=NOW,
        completed_by="x",
    )
    status, body = await env.call("GET", "/api/callbacks?status=pending")
    assert status == 200
    items = body["callbacks"]
    assert [c["id"] for c in items] == [old, new]  # oldest first
    assert items[0]["waiting_seconds"] == 5 * 3600 and items[0]["overdue"] is True
    assert items[0]["overdue_after_seconds"] == 4 * 3600
    assert items[1]["overdue"] is False and items[1]["tier"] is None
    assert items[0]["caller"] == "0612345678"
    _, body = await env.call("GET", "/api/callbacks?status=done")
    assert [c["call_id"] for c in body["callbacks"]] == ["c3"]
    _, body = await env.call("GET", "/api/callbacks?status=all&limit=2")
    assert len(body["callbacks"]) == 2
    status, body = await env.call("GET", "/api/callbacks?status=later")
    assert status == 400 and "status" in body["error"]


async def test_marking_a_callback_done_records_who_and_when(env: Env) -> None:
    cb = await add_callback(env.db, call_id="c1", created=NOW - timedelta(hours=1))
    env.clock.now = NOW + timedelta(minutes=5)
    status, body = await env.call("POST", f"/api/callbacks/{cb}/done", json={"status": "done"})
    assert status == 200, body
    assert body["status"] == "done" and body["completed_by"] == "staff"
    assert body["waiting_seconds"] == 3900
    async with env.db.connect() as conn:
        row = (await conn.execute(select(CallbackRequestRow))).mappings().one()
        audit = (await conn.execute(select(AdminAction))).mappings().all()
    assert row["status"] == "done" and row["completed"] == NOW + timedelta(minutes=5)
    assert [(a["who"], a["action"], a["detail"]) for a in audit] == [
        ("staff", "callback done", {"callback": cb})
    ]
    status, body = await env.call("POST", f"/api/callbacks/{cb}/done")
    assert status == 409 and "not pending: done by staff" in body["error"]
    assert (await env.call("POST", "/api/callbacks/999/done"))[0] == 404
    assert (await env.call("POST", "/api/callbacks/abc/done"))[0] == 404
    assert env.ctx.metrics is not None
    reg = env.ctx.metrics.registry
    labels = {"flow": "parc", "tier": "2"}
    assert reg.get_sample_value("callflow_callbacks_completed_total", labels) == 1.0
    delay = reg.get_sample_value("callflow_callback_completion_delay_seconds_sum", {"tier": "2"})
    assert delay == 3900.0


async def test_reads_of_personal_data_are_audited_by_record_never_by_content(env: Env) -> None:
    first = await add_callback(env.db, call_id="c1", created=NOW)
    second = await add_callback(env.db, call_id="c2", created=NOW)
    status, _ = await env.call("GET", "/api/callbacks")
    assert status == 200
    assert env.audit[-1] == (
        "staff",
        "read",
        {"what": "callbacks", "count": 2, "ids": [first, second]},
    )
    assert "06" not in repr(env.audit)
    assert (await env.call("GET", "/api/calls/none"))[0] == 404
    assert env.audit[-1][1] == "read" and env.audit[-1][2]["what"] == "callbacks"  # none read


async def test_who_acted_comes_from_the_credential_never_from_the_request(env: Env) -> None:
    cb = await add_callback(env.db, call_id="c1", created=NOW)
    status, body = await env.call(
        "POST", f"/api/callbacks/{cb}/done", json={"who": "Dr House", "status": "done"}
    )
    assert status == 400 and "status" in body["error"]  # no "who" to declare
    headers = {**AUTH, "X-Callflow-User": "H%C3%A9l%C3%A8ne"}
    status, body = await env.call("POST", f"/api/callbacks/{cb}/done", headers=headers)
    assert status == 200 and body["completed_by"] == "staff"


# -- calls, trunks, audit, no database --------------------------------------------------------


async def test_recent_calls_with_their_steps(env: Env) -> None:
    async with env.db.begin() as conn:
        for i in range(3):
            start = NOW + timedelta(minutes=i)
            await conn.execute(
                insert(Call).values(
                    id=f"call-{i}",
                    flow="parc",
                    flow_version="v1",
                    dialed="100",
                    caller="0612345678",
                    started=start,
                    answered=start + timedelta(seconds=12),
                    ended=start + timedelta(seconds=70),
                    outcome="shed" if i == 0 else "answered",
                    driver="agi" if i == 2 else "ari",
                    # Where the dialplan fallback left the shed call (from its CDR).
                    fallback="secretariat dial=ANSWER" if i == 0 else None,
                    fallback_fate="secretariat" if i == 0 else None,
                )
            )
            for seq in (1, 2):
                await conn.execute(
                    insert(CallStep).values(
                        call_id=f"call-{i}",
                        seq=seq,
                        at=start + timedelta(seconds=seq),
                        step="hours" if seq == 1 else "desk-call",
                        kind="schedule" if seq == 1 else "dial",
                        result="open" if seq == 1 else "answered",
                        detail="",
                        next="desk-call" if seq == 1 else None,
                        duration=0.5,
                    )
                )
    status, body = await env.call("GET", "/api/calls?limit=2")
    assert status == 200
    assert [(c["id"], c["driver"]) for c in body["calls"]] == [("call-2", "agi"), ("call-1", "ari")]
    first = body["calls"][0]
    assert first["answer_seconds"] == 12 and first["duration_seconds"] == 70
    assert [s["step"] for s in first["steps"]] == ["hours", "desk-call"]
    assert (first["fallback"], first["fallback_fate"]) == (None, None)
    status, body = await env.call("GET", "/api/calls/call-0")
    assert status == 200 and body["id"] == "call-0" and len(body["steps"]) == 2
    assert (body["outcome"], body["fallback"], body["fallback_fate"]) == (
        "shed",
        "secretariat dial=ANSWER",
        "secretariat",
    )
    assert (await env.call("GET", "/api/calls/none"))[0] == 404
    for bad in ("0", "501", "x"):
        status, body = await env.call("GET", f"/api/calls?limit={bad}")
        assert status == 400 and "limit" in body["error"]


async def test_trunks_and_audit(env: Env) -> None:
    status, body = await env.call("GET", "/api/trunks")
    assert status == 200 and body["live"] is True
    states = {t["name"]: (t["state"], t["rtt_ms"]) for t in body["trunks"]}
    assert states == {"trunk-a": ("reachable", 21.5), "trunk-b": ("unreachable", None)}
    cb = await add_callback(env.db, call_id="c1", created=NOW)
    await env.call("POST", f"/api/callbacks/{cb}/done")
    status, body = await env.call("GET", "/api/audit")
    assert status == 200 and body["audit"][0]["action"] == "callback done"
    assert body["audit"][0]["who"] == "staff"


async def test_without_a_database_the_call_log_routes_answer_503(tmp_path: Path) -> None:
    write_flow(tmp_path / "flows")
    store = LiveFlows(tmp_path / "flows", None)
    ctx = AdminContext(
        flows=store,
        overrides=OverrideStore(),
        reload=store.reload,
        credentials=Credentials.of_tokens({"staff": TOKEN}),
    )
    async with TestClient(TestServer(create_app(ctx))) as client:
        for path in ("/api/callbacks", "/api/calls", "/api/calls/x", "/api/audit"):
            async with client.get(path, headers=AUTH) as resp:
                assert resp.status == 503
                assert (await resp.json())["error"] == "no call log database in this daemon"
        async with client.get("/api/trunks", headers=AUTH) as resp:
            assert await resp.json() == {"node": "", "live": False, "trunks": [], "nodes": {}}
        async with client.get("/metrics") as resp:
            assert resp.status == 404


async def test_a_database_that_is_gone_gives_503_not_a_traceback(env: Env) -> None:
    env.ctx.db = create_engine(f"sqlite+aiosqlite:///{env.flows_dir / 'no' / 'such' / 'x.db'}")
    try:
        status, body = await env.call("GET", "/api/callbacks")
    finally:
        await env.ctx.db.dispose()
    assert status == 503 and "database" in body["error"]


# -- the page and the server ----------------------------------------------------------------


async def test_the_page_is_served_without_a_token_with_a_strict_csp(env: Env) -> None:
    async with env.client.get("/", allow_redirects=False) as resp:
        assert resp.status == 302 and resp.headers["Location"] == "/page/"
    async with env.client.get("/page/") as resp:
        assert resp.status == 200
        html = await resp.text()
        csp = resp.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert '<script src="/page/app.js"' in html
    assert "http://" not in html and "https://" not in html  # no external asset
    for name in ("app.js", "style.css"):
        async with env.client.get(f"/page/{name}") as resp:
            assert resp.status == 200
            assert "https://" not in await resp.text()
    async with env.client.get("/page/../app.py") as resp:
        assert resp.status in (403, 404)


async def test_admin_server_binds_and_stops(tmp_path: Path) -> None:
    write_flow(tmp_path / "flows")
    store = LiveFlows(tmp_path / "flows", None)
    ctx = AdminContext(
        flows=store, overrides=OverrideStore(), reload=store.reload, ari_connected=lambda: True
    )
    server = AdminServer(create_app(ctx), "127.0.0.1", 0)
    await server.start()
    try:
        assert server.port != 0
        async with ClientSession() as session, session.get(f"{server.url}/healthz") as resp:
            assert resp.status == 200
    finally:
        await server.close()


def test_settings_http_section(tmp_path: Path) -> None:
    from callflow.settings import load_settings

    s = load_settings(None, {})
    assert (s.http.host, s.http.port, s.http.token_file) == ("127.0.0.1", 8089, None)
    conf = tmp_path / "callflow.toml"
    conf.write_text('[http]\nlisten = "[::1]:9000"\ntoken_file = "tokens"\n')
    s = load_settings(conf, {})
    assert (s.http.host, s.http.port) == ("::1", 9000)
    assert s.resolve(s.http.token_file or "") == tmp_path / "tokens"
    with pytest.raises(SettingsError, match="host:port"):
        load_settings(None, {"CALLFLOW_HTTP_LISTEN": "8089"})


def test_a_token_file_others_can_read_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    f = tmp_path / "tokens"
    f.write_text(f"staff:{TOKEN}\n")
    os.chmod(f, 0o644)
    load_tokens(f)
    assert "readable by others" in caplog.text
    caplog.clear()
    os.chmod(f, 0o600)
    load_tokens(f)
    assert caplog.text == ""
