"""Forwarding drills through the admin API (admin only), and their metrics."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from callflow.api import AdminContext, Credentials, create_app
from callflow.api.accounts import Account, Role, Scope, digest
from callflow.drills import DrillRunner, TestCall
from callflow.drills.scheduler import Drills
from callflow.flow.live import LiveFlows
from callflow.metrics.drill_gauges import DrillGauges
from callflow.schedule import OverrideStore
from callflow.telephony import DialStatus
from tests.support.flows import DRILL_FLOW, write_flow

ADMIN, STAFF = "admin-token-0123456789abcdef", "staff-token-0123456789abcdef"
OTHER = "admin-of-another-practice-0123456"  # an admin scoped to another practice
NOW = datetime(2026, 12, 4, 17, 0, tzinfo=UTC)


class Caller:
    def __init__(self) -> None:
        self.endpoints: list[str] = []

    async def call(self, endpoint: str, ring: float, caller_id: str | None) -> TestCall:
        self.endpoints.append(endpoint)
        if endpoint.endswith("@trunk-a"):
            return TestCall(DialStatus.NOANSWER)
        return TestCall(DialStatus.ANSWER, answer_delay=2.0)


@dataclass
class Env:
    client: TestClient[Any, Any]
    drills: Drills
    caller: Caller
    audit: list[tuple[str, str, dict[str, Any]]]

    async def call(self, method: str, path: str, token: str = ADMIN, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {token}"}
        async with self.client.request(method, path, headers=headers, **kw) as resp:
            return resp.status, await resp.json()


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    write_flow(tmp_path / "flows", DRILL_FLOW, "cabinet.yaml")
    flows = LiveFlows(tmp_path / "flows", None)
    caller = Caller()
    runner = DrillRunner(caller, lambda t: (t == "trunk-a", "reachable"), lambda: NOW)
    drills = Drills(runner, lambda: flows.current.flows, None, lambda: NOW, scheduled=False)
    audit: list[tuple[str, str, dict[str, Any]]] = []
    ctx = AdminContext(
        flows=flows,
        overrides=OverrideStore(),
        reload=flows.reload,
        credentials=Credentials(
            [
                Account("admin", Role.ADMIN, digest(ADMIN)),
                Account("staff", Role.SECRETARIAT, digest(STAFF)),
                Account("other", Role.ADMIN, digest(OTHER), None, Scope(frozenset({"gare"}))),
            ]
        ),
        audit=lambda who, action, detail: audit.append((who, action, dict(detail))),
        drills=drills,
    )
    async with drills, TestClient(TestServer(create_app(ctx))) as client:
        yield Env(client, drills, caller, audit)


async def test_an_admin_drills_a_flow_and_reads_the_results(env: Env) -> None:
    status, body = await env.call("POST", "/api/drills/cabinet")
    assert status == 200, body
    legs = [(r["destination"], r["trunk"], r["mode"], r["passed"]) for r in body["results"]]
    assert legs == [
        ("telesecretariat", "trunk-a", "call", False),
        ("telesecretariat", "trunk-b", "call", True),
        ("samu", "trunk-a", "health", True),
        ("samu", "trunk-b", "health", False),
    ]
    assert body["passed"] is False
    assert body["results"][0]["reason"] == "no answer within 6 s"
    assert env.caller.endpoints == ["PJSIP/0180000000@trunk-a", "PJSIP/0180000000@trunk-b"]
    assert env.audit == [("admin", "drill", {"flow": "cabinet", "destination": None})]
    status, body = await env.call("GET", "/api/drills")
    assert status == 200
    shown = {(leg["destination"], leg["trunk"]): leg for leg in body["legs"]}
    assert shown[("telesecretariat", "trunk-b")]["last_success"] == NOW.isoformat()
    assert shown[("telesecretariat", "trunk-a")]["last"]["passed"] is False
    assert shown[("telesecretariat", "trunk-a")]["last_success"] is None


async def test_one_destination_and_the_mistakes(env: Env) -> None:
    body = json.dumps({"destination": "telesecretariat"})
    status, got = await env.call("POST", "/api/drills/cabinet", data=body)
    assert status == 200 and len(got["results"]) == 2
    assert (await env.call("POST", "/api/drills/nope"))[0] == 404
    status, got = await env.call("POST", "/api/drills/cabinet", data='{"destination": "x"}')
    assert status == 400 and "not a forwarding destination" in got["error"]
    assert (await env.call("POST", "/api/drills/cabinet", data='{"to": 1}'))[0] == 400


async def test_the_secretariat_may_not_drill(env: Env) -> None:
    assert (await env.call("POST", "/api/drills/cabinet", STAFF))[0] == 403
    assert (await env.call("GET", "/api/drills", STAFF))[0] == 403
    assert env.caller.endpoints == []


async def test_an_admin_of_another_practice_neither_drills_nor_sees_this_one(env: Env) -> None:
    assert (await env.call("POST", "/api/drills/cabinet", OTHER))[0] == 404
    assert env.caller.endpoints == [] and env.audit == []
    await env.drills.drill("cabinet", "telesecretariat")
    status, body = await env.call("GET", "/api/drills", OTHER)
    assert status == 200 and body["legs"] == [] and body["next"] == {}
    status, body = await env.call("GET", "/api/drills")  # the global admin sees them
    assert status == 200 and {leg["flow"] for leg in body["legs"]} == {"cabinet"}


async def test_the_metrics_say_the_last_success_and_result(env: Env) -> None:
    await env.drills.drill("cabinet", "telesecretariat")
    registry = CollectorRegistry()
    DrillGauges(env.drills.readings, lambda: {"cabinet": NOW}).register(registry)
    samples = {
        (s.name, s.labels.get("trunk", ""), s.labels.get("destination", "")): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
    }
    success = "callflow_drill_last_success_timestamp_seconds"
    assert samples[(success, "trunk-b", "telesecretariat")] == NOW.timestamp()
    assert samples[(success, "trunk-a", "telesecretariat")] == 0.0  # never passed
    assert samples[("callflow_drill_last_result", "trunk-a", "telesecretariat")] == 0.0
    assert samples[("callflow_drill_last_result", "trunk-b", "telesecretariat")] == 1.0
    assert samples[("callflow_drill_last_result", "trunk-a", "samu")] == -1.0  # never drilled
    assert samples[("callflow_drill_next_timestamp_seconds", "", "")] == NOW.timestamp()
