"""Many practices on one deployment: a scoped credential sees and acts on its own
practice's calls, callbacks and calendars only; unscoped ones keep today's reach."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyotp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import insert

from callflow.api import AdminContext, Credentials, create_app
from callflow.api.accounts import Account, Role, Scope, digest
from callflow.flow.live import LiveFlows
from callflow.schedule import OverrideStore
from callflow.store.models import Call
from tests.support.flows import PARC_FLOW, write_flow
from tests.unit.test_api import NOW, Clock, add_callback, make_db

GARE_FLOW = PARC_FLOW.replace("flow: parc", "flow: gare").replace('["100"]', '["200"]')
TOKENS = {
    "sec-parc": "token-of-the-parc-secretariat-01",
    "admin-gare": "token-of-the-gare-admin-000002",
    "admin": "token-of-the-global-admin-00003",
    "marie": "token-of-marie-at-the-gare-00004",
}
TOTP = pyotp.random_base32()


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name]}"}


class Api:
    def __init__(self, client: TestClient[Any, Any], overrides: OverrideStore) -> None:
        self.client = client
        self.overrides = overrides

    async def call(
        self, method: str, path: str, who: str, body: Any = None
    ) -> tuple[int, dict[str, Any]]:
        async with self.client.request(method, path, headers=auth(who), json=body) as resp:
            return resp.status, await resp.json()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    flows_dir = tmp_path / "flows"
    write_flow(flows_dir)
    write_flow(flows_dir, GARE_FLOW, "gare.yaml")
    flows = LiveFlows(flows_dir, None)
    db = await make_db(tmp_path)
    for flow, n in (("parc", 1), ("gare", 2)):
        await add_callback(db, call_id=f"{flow}-call", created=NOW, flow=flow)
        async with db.begin() as conn:
            await conn.execute(
                insert(Call).values(
                    id=f"{flow}-call",
                    flow=flow,
                    flow_version="v1",
                    dialed=f"{n}00",
                    caller="0612345678",
                    started=NOW - timedelta(minutes=5),
                    node="pbx-1",
                )
            )
    accounts = [
        Account(
            "sec-parc",
            Role.SECRETARIAT,
            digest(TOKENS["sec-parc"]),
            None,
            Scope(frozenset({"parc"})),
        ),
        Account(
            "admin-gare", Role.ADMIN, digest(TOKENS["admin-gare"]), None, Scope(frozenset({"gare"}))
        ),
        Account("admin", Role.ADMIN, digest(TOKENS["admin"])),  # no scope: every practice
        # A person: logs in with the second factor; the session keeps the account's scope.
        Account(
            "marie", Role.SECRETARIAT, digest(TOKENS["marie"]), TOTP, Scope(frozenset({"gare"}))
        ),
    ]
    overrides = OverrideStore()
    ctx = AdminContext(
        flows=flows,
        overrides=overrides,
        reload=flows.reload,
        clock=Clock(),
        db=db,
        credentials=Credentials(accounts),
    )
    client: TestClient[Any, Any] = TestClient(TestServer(create_app(ctx)))
    await client.start_server()
    try:
        yield Api(client, overrides)
    finally:
        await client.close()
        await db.dispose()


async def test_a_scoped_secretariat_sees_its_practice_only(api: Api) -> None:
    status, body = await api.call("GET", "/api/calendars", "sec-parc")
    assert status == 200 and {c["flow"] for c in body["calendars"]} == {"parc"}
    status, body = await api.call("GET", "/api/callbacks?status=all", "sec-parc")
    assert status == 200 and [c["flow"] for c in body["callbacks"]] == ["parc"]
    # Another practice's calendar cannot be overridden, nor its callback completed.
    closed = {"state": "closed", "until": "2026-12-02T08:00"}
    status, body = await api.call("POST", "/api/calendars/gare/office/override", "sec-parc", closed)
    assert status == 403 and "gare" in body["error"]
    assert api.overrides.active(NOW) == {}
    status, _ = await api.call("DELETE", "/api/calendars/gare/office/override", "sec-parc")
    assert status == 403
    _, all_cbs = await api.call("GET", "/api/callbacks?status=all", "admin")
    ids = {c["flow"]: c["id"] for c in all_cbs["callbacks"]}
    status, _ = await api.call("POST", f"/api/callbacks/{ids['gare']}/done", "sec-parc", {})
    assert status == 404  # not found: its existence is not this practice's to know
    # Its own practice works as before.
    status, _ = await api.call("POST", "/api/calendars/parc/office/override", "sec-parc", closed)
    assert status == 200 and set(api.overrides.active(NOW)) == {"parc/office"}
    status, body = await api.call("POST", f"/api/callbacks/{ids['parc']}/done", "sec-parc", {})
    assert status == 200 and body["status"] == "done"
    _, after = await api.call("GET", "/api/callbacks?status=all", "admin")
    assert {c["flow"]: c["status"] for c in after["callbacks"]} == {
        "parc": "done",
        "gare": "pending",
    }


async def test_a_scoped_admin_reads_its_practices_calls_and_nothing_global(api: Api) -> None:
    status, body = await api.call("GET", "/api/calls", "admin-gare")
    assert status == 200 and [c["id"] for c in body["calls"]] == ["gare-call"]
    assert body["calls"][0]["node"] == "pbx-1"
    status, body = await api.call("GET", "/api/calls?flow=parc", "admin-gare")
    assert status == 200 and body["calls"] == []
    assert (await api.call("GET", "/api/calls/parc-call", "admin-gare"))[0] == 404
    assert (await api.call("GET", "/api/calls/gare-call", "admin-gare"))[0] == 200
    # Reloads and the audit trail concern every practice.
    for method, path in (("POST", "/api/reload"), ("GET", "/api/audit")):
        status, body = await api.call(method, path, "admin-gare")
        assert status == 403 and "every practice" in body["error"], path
    # A scoped secretariat is still a secretariat: the call log is an admin's.
    assert (await api.call("GET", "/api/calls", "sec-parc"))[0] == 403


async def test_an_account_without_a_scope_keeps_every_practice(api: Api) -> None:
    status, body = await api.call("GET", "/api/calls", "admin")
    assert status == 200 and {c["id"] for c in body["calls"]} == {"parc-call", "gare-call"}
    status, body = await api.call("GET", "/api/calendars", "admin")
    assert {c["flow"] for c in body["calendars"]} == {"parc", "gare"}
    assert (await api.call("GET", "/api/audit", "admin"))[0] == 200


async def test_a_scoped_person_keeps_the_scope_in_the_session(api: Api) -> None:
    body = {"name": "marie", "token": TOKENS["marie"], "code": pyotp.TOTP(TOTP).at(NOW)}
    async with api.client.post("/api/login", json=body) as resp:
        assert resp.status == 200
        session = (await resp.json())["session"]
    headers = {"Authorization": f"Bearer {session}"}
    async with api.client.get("/api/callbacks?status=all", headers=headers) as resp:
        assert [c["flow"] for c in (await resp.json())["callbacks"]] == ["gare"]
    async with api.client.get("/api/calendars", headers=headers) as resp:
        assert {c["flow"] for c in (await resp.json())["calendars"]} == {"gare"}
