"""Drill results in the call log (table ``drills``), on SQLite and PostgreSQL: written,
read back as the last result and the last success of each leg (what the daemon shows
after a restart and the continuity audit reads), node by node: several nodes share the
database and each drills over its own trunks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from callflow.api import AdminContext, Credentials, create_app
from callflow.api.accounts import Account, Role, Scope, digest
from callflow.drill_audit import format_drill_audit, stale_drills
from callflow.drills import DrillMode, DrillResult, DrillRunner, TestCall
from callflow.drills.scheduler import Drills
from callflow.flow.live import LiveFlows
from callflow.schedule import OverrideStore
from callflow.store.db import upgrade
from callflow.store.drill_log import SqlDrillLog, last_successes, successes_by_node
from callflow.store.models import TrunkEvent
from callflow.telephony import DialStatus
from tests.support.flows import FORWARD_ONLY_FLOW, compile_flow, write_flow

from .conftest import Database

T0 = datetime(2026, 12, 4, 17, 0, tzinfo=UTC)


def leg(trunk: str, passed: bool, at: datetime, dest: str = "telesecretariat") -> DrillResult:
    mode = DrillMode.HEALTH if dest == "samu" else DrillMode.CALL
    delay = 1.5 if passed and mode is DrillMode.CALL else None
    reason = "answered in 1.5 s" if passed else "no answer within 6 s"
    return DrillResult("cabinet", dest, trunk, mode, passed, reason, at, delay)


async def test_results_are_stored_and_the_latest_read_back(database: Database) -> None:
    engine = database.engine()
    await upgrade(engine)
    log = SqlDrillLog(engine, "pbx-1")
    await log.record([leg("trunk-a", True, T0), leg("trunk-b", True, T0)])
    later = T0 + timedelta(days=7)
    await log.record([leg("trunk-a", False, later), leg("trunk-b", True, later)])
    await log.record([leg("trunk-b", False, later, dest="samu")])
    last, ok = await log.latest()
    by_key = {(r.destination, r.trunk): r for r in last}
    assert by_key[("telesecretariat", "trunk-a")] == leg("trunk-a", False, later)
    assert by_key[("telesecretariat", "trunk-b")] == leg("trunk-b", True, later)
    assert by_key[("samu", "trunk-b")].mode is DrillMode.HEALTH
    assert {(r.destination, r.trunk, r.at) for r in ok} == {
        ("telesecretariat", "trunk-a", T0),  # its last success, before the failure
        ("telesecretariat", "trunk-b", later),
    }
    assert await last_successes(engine, "pbx-1") == {
        ("cabinet", "telesecretariat", "trunk-a"): T0,
        ("cabinet", "telesecretariat", "trunk-b"): later,
    }


async def test_each_node_reads_back_its_own_legs(database: Database) -> None:
    """trunk-a of node 1 is not trunk-a of node 2: a newer failure on node 2 does not hide
    node 1's success, and node 2 does not take node 1's results for its own."""
    one, two = database.engine(), database.engine()  # two daemons, one database
    await upgrade(one)
    log1, log2 = SqlDrillLog(one, "pbx-1"), SqlDrillLog(two, "pbx-2")
    await log1.record([leg("trunk-a", True, T0), leg("trunk-b", True, T0)])
    later = T0 + timedelta(hours=1)
    await log2.record([leg("trunk-a", False, later)])
    last1, ok1 = await log1.latest()
    assert sorted(last1, key=lambda r: r.trunk) == [
        leg("trunk-a", True, T0),
        leg("trunk-b", True, T0),
    ]
    assert len(ok1) == 2
    last2, ok2 = await log2.latest()
    assert last2 == [leg("trunk-a", False, later)] and ok2 == []
    assert await last_successes(one, "pbx-2") == {}
    assert SqlDrillLog(one, "pbx-1").node == "pbx-1"
    with pytest.raises(ValueError, match=r"\[node\] name"):
        SqlDrillLog(one, "")


async def test_the_audit_finds_a_leg_stale_on_the_node_that_never_drilled_it(
    database: Database, tmp_path: Path
) -> None:
    engine = database.engine()
    await upgrade(engine)
    write_flow(tmp_path / "flows", FORWARD_ONLY_FLOW, "cabinet.yaml")
    flows = LiveFlows(tmp_path / "flows", None).current.flows.values()
    now, max_age = T0 + timedelta(days=1), timedelta(days=90)
    await SqlDrillLog(engine, "pbx-1").record([leg("trunk-a", True, T0), leg("trunk-b", True, T0)])

    one = await successes_by_node(engine, now - max_age)
    assert stale_drills(flows, one, now, max_age) == []  # one node: as before nodes were
    assert format_drill_audit([], 2, max_age, one) == (
        "drills: every forwarding destination (2 legs) passed a drill in 90 days\n"
    )

    # pbx-2 drilled only trunk-b, and it failed: both its legs are stale there, not on pbx-1
    await SqlDrillLog(engine, "pbx-2").record([leg("trunk-b", False, T0)])
    two = await successes_by_node(engine, now - max_age)
    assert set(two) == {"pbx-1", "pbx-2"}
    stale = stale_drills(flows, two, now, max_age)
    assert [(s.node, s.trunk, s.last_success) for s in stale] == [
        ("pbx-2", "trunk-a", None),
        ("pbx-2", "trunk-b", None),
    ]
    text = format_drill_audit(stale, 2, max_age, two)
    assert text.startswith(
        "drills: 2 of 4 legs on 2 nodes (pbx-1, pbx-2) without a successful drill in 90 days\n"
    )
    assert "NO DRILL cabinet/telesecretariat via trunk-a on node pbx-2: never drilled" in text

    # pbx-3 never drilled at all, but its trunk changes say it is there: stale everywhere
    async with engine.begin() as conn:
        await conn.execute(
            insert(TrunkEvent),
            [{"trunk": "trunk-a", "state": "up", "rtt_ms": 3.0, "at": T0, "node": "pbx-3"}],
        )
    three = await successes_by_node(engine, now - max_age)
    assert three["pbx-3"] == {}
    nodes = [s.node for s in stale_drills(flows, three, now, max_age)]
    assert nodes == ["pbx-2", "pbx-2", "pbx-3", "pbx-3"]
    # every node silent since: each that ever drilled (the single node of old keeps its date)
    assert set(await successes_by_node(engine, T0 + timedelta(hours=1))) == {"pbx-1", "pbx-2"}
    # a node silent since, while another is not, is gone
    after = T0 + timedelta(days=2)
    await SqlDrillLog(engine, "pbx-1").record([leg("trunk-a", False, after)])
    assert await successes_by_node(engine, T0 + timedelta(days=1)) == {
        "pbx-1": {
            ("cabinet", "telesecretariat", "trunk-a"): T0,
            ("cabinet", "telesecretariat", "trunk-b"): T0,
        }
    }


class Answering:
    async def call(self, endpoint: str, ring: float, caller_id: str | None) -> TestCall:
        return TestCall(DialStatus.ANSWER, answer_delay=2.0)


ADMIN = "admin-token-0123456789abcdef"
OTHER = "admin-of-another-practice-0123456"


@pytest.fixture
async def api(
    database: Database, tmp_path: Path
) -> AsyncIterator[tuple[TestClient[Any, Any], AsyncEngine]]:
    """Node pbx-1's admin API on a database that pbx-2 writes to as well."""
    engine = database.engine()
    await upgrade(engine)
    write_flow(tmp_path / "flows", FORWARD_ONLY_FLOW, "cabinet.yaml")
    flows = LiveFlows(tmp_path / "flows", None)
    runner = DrillRunner(Answering(), lambda t: (True, "reachable"), lambda: T0)
    log = SqlDrillLog(engine, "pbx-1")
    drills = Drills(runner, lambda: flows.current.flows, log, lambda: T0, scheduled=False)
    ctx = AdminContext(
        flows=flows,
        overrides=OverrideStore(),
        reload=flows.reload,
        credentials=Credentials(
            [
                Account("admin", Role.ADMIN, digest(ADMIN)),
                Account("other", Role.ADMIN, digest(OTHER), None, Scope(frozenset({"gare"}))),
            ]
        ),
        db=engine,
        node="pbx-1",
        drills=drills,
    )
    async with drills, TestClient(TestServer(create_app(ctx))) as client:
        yield client, engine


async def _get(client: TestClient[Any, Any], token: str = ADMIN) -> Any:
    headers = {"Authorization": f"Bearer {token}"}
    async with client.get("/api/drills", headers=headers) as resp:
        assert resp.status == 200
        return await resp.json()


async def test_the_api_shows_this_nodes_legs_and_the_other_nodes_apart(
    api: tuple[TestClient[Any, Any], AsyncEngine],
) -> None:
    client, engine = api
    earlier = T0 - timedelta(days=2)
    await SqlDrillLog(engine, "pbx-2").record([leg("trunk-a", True, earlier)])
    await SqlDrillLog(engine, "pbx-2").record([leg("trunk-a", False, T0 - timedelta(days=1))])
    body = await _get(client)
    assert body["node"] == "pbx-1"
    assert all(x["last"] is None for x in body["legs"])  # pbx-2's drills are not pbx-1's
    assert body["nodes"] == {
        "pbx-2": [
            {
                "flow": "cabinet",
                "destination": "telesecretariat",
                "trunk": "trunk-a",
                "mode": "call",
                "last": leg("trunk-a", False, T0 - timedelta(days=1)).to_json(),
                "last_success": earlier.isoformat(),
            }
        ]
    }
    async with client.post(
        "/api/drills/cabinet", headers={"Authorization": f"Bearer {ADMIN}"}
    ) as r:
        assert r.status == 200
    body = await _get(client)
    assert {x["trunk"]: x["last_success"] for x in body["legs"]} == {
        "trunk-a": T0.isoformat(),
        "trunk-b": T0.isoformat(),
    }
    assert list(body["nodes"]) == ["pbx-2"]  # this node's own rows are not an "other node"
    assert (await _get(client, OTHER))["nodes"] == {}  # another practice's admin sees none


class _OneLine:
    """The secretariat's line, one channel: a second test call while one rings is busy."""

    def __init__(self) -> None:
        self.ringing = 0
        self.calls = 0

    async def call(self, endpoint: str, ring: float, caller_id: str | None) -> TestCall:
        self.calls += 1
        if self.ringing:
            return TestCall(DialStatus.BUSY)
        self.ringing += 1
        try:
            await asyncio.sleep(0.3)  # rings, then answers (a real ring takes seconds)
        finally:
            self.ringing -= 1
        return TestCall(DialStatus.ANSWER, answer_delay=0.3)


async def test_two_nodes_drilling_the_same_line_at_once_take_turns(database: Database) -> None:
    # Found in review: every node drills at the same moment (the last open hour before a
    # closure); a line with one channel answered one node's test call and gave the other
    # busy, a false "drill failed" alert.
    if database.backend != "postgresql":
        pytest.skip("several nodes: PostgreSQL only (SQLite is one node)")
    line = _OneLine()
    loaded = compile_flow(FORWARD_ONLY_FLOW)

    def node(name: str) -> Drills:
        engine = database.engine()
        runner = DrillRunner(line, lambda t: (True, "reachable"), lambda: T0)
        return Drills(
            runner, lambda: {"cabinet": loaded}, SqlDrillLog(engine, name), lambda: T0,
            scheduled=False,
        )  # fmt: skip

    await upgrade(database.engine())
    a, b = node("pbx-1"), node("pbx-2")
    async with a, b:
        first, second = await asyncio.gather(a.drill("cabinet"), b.drill("cabinet"))
    assert [r.passed for r in first + second] == [True] * len(first + second)
    assert line.calls == len(first + second) > 2
