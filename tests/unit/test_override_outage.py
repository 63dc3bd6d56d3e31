"""An override the shared table did not take is refused (503) and applies nowhere: a node
must not run on an override the other nodes will never see."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from callflow.api import AdminContext, Credentials, create_app
from callflow.flow.live import LiveFlows
from callflow.overrides import SharedOverrides
from callflow.store.db import create_engine
from tests.support.flows import write_flow
from tests.unit.test_api import AUTH, NOW, TOKEN, Clock


async def test_an_override_the_database_did_not_take_is_refused(tmp_path: Path) -> None:
    write_flow(tmp_path / "flows")
    flows = LiveFlows(tmp_path / "flows", None)
    # Nothing listens on port 1: the database is away.
    dead = create_engine("postgresql+asyncpg://callflow@127.0.0.1:1/callflow")
    overrides = SharedOverrides(dead, node="pbx-1", clock=Clock())
    ctx = AdminContext(
        flows=flows,
        overrides=overrides,
        reload=flows.reload,
        clock=Clock(),
        credentials=Credentials.of_tokens({"staff": TOKEN}),
    )
    client: TestClient[Any, Any] = TestClient(TestServer(create_app(ctx)))
    await client.start_server()
    try:
        body = {"state": "closed", "until": "2026-12-02T08:00"}
        path = "/api/calendars/parc/office/override"
        async with client.post(path, json=body, headers=AUTH) as resp:
            assert resp.status == 503
            assert "unavailable" in (await resp.json())["error"]
        assert overrides.active(NOW) == {}
    finally:
        await client.close()
        await dead.dispose()
