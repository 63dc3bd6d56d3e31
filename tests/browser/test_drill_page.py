"""The forwarding drills on the page, in a real headless Chromium: an admin sees the last
result of each destination and trunk, drills a flow with its button, and sees the other
nodes' results apart (each node drills over its own trunks)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from callflow.api import AdminContext, AdminServer, create_app
from callflow.api.accounts import Account, Credentials, Role, digest
from callflow.drills import DrillMode, DrillResult, DrillRunner, TestCall
from callflow.drills.scheduler import Drills
from callflow.flow.live import LiveFlows
from callflow.schedule import OverrideStore
from callflow.store.db import create_engine, upgrade
from callflow.store.drill_log import SqlDrillLog
from callflow.telephony import DialStatus
from tests.support.flows import DRILL_FLOW, write_flow

from .test_page import TOKEN, TOTP, chromium, chromium_path, open_login_form, submit_login


class Caller:
    async def call(self, endpoint: str, ring: float, caller_id: str | None) -> TestCall:
        if endpoint.endswith("@trunk-a"):
            return TestCall(DialStatus.NOANSWER)
        return TestCall(DialStatus.ANSWER, answer_delay=2.0)


async def test_an_admin_drills_a_flow_from_the_page(tmp_path: Path) -> None:
    chromium_path()  # skip (or fail in CI) before building anything
    write_flow(tmp_path / "flows", DRILL_FLOW, "cabinet.yaml")
    flows = LiveFlows(tmp_path / "flows", None)
    now = datetime.now(UTC)
    runner = DrillRunner(Caller(), lambda t: (True, "reachable (qualify)"), lambda: now)
    drills = Drills(runner, lambda: flows.current.flows, None, lambda: now, scheduled=False)
    db = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}")
    await upgrade(db)
    other = DrillResult("cabinet", "telesecretariat", "trunk-a", DrillMode.CALL, False, "busy", now)
    await SqlDrillLog(db, "pbx-2").record([other])  # another node's trunk-a, not this one's
    ctx = AdminContext(
        node="pbx-1",
        flows=flows,
        db=db,
        overrides=OverrideStore(),
        reload=flows.reload,
        credentials=Credentials([Account("paul", Role.ADMIN, digest(TOKEN), TOTP)]),
        ari_connected=lambda: True,
        language="fr",
        drills=drills,
    )
    server = AdminServer(create_app(ctx), "127.0.0.1", 0)
    await server.start()
    try:
        async with drills, chromium(tmp_path / "profile") as page:
            await open_login_form(page, server.url)
            await submit_login(page, user="paul")
            await page.wait_for("document.body.dataset.loaded === 'yes'")
            assert await page.js("document.getElementById('drills-section').hidden") is False
            rows = "[...document.querySelectorAll('#drills tbody tr')]"
            before = await page.js(f"{rows}.map(tr => tr.querySelector('.state').textContent)")
            assert before == ["jamais testé"] * 4
            assert await page.js("document.getElementById('node-drills').hidden") is False
            others = await page.js(
                """[...document.querySelectorAll('#node-drills tbody tr')].map(tr =>
                    tr.dataset.nodeDrill + ' ' + tr.querySelector('.state').textContent)"""
            )
            assert others == ["pbx-2/cabinet/telesecretariat/trunk-a échoué"]
            assert "Autres nœuds" in await page.js(
                "document.querySelector('#node-drills caption').textContent"
            )

            await page.js("document.querySelector('button.run-drill').click(); true")
            await page.wait_for(
                f"{rows}.every(tr => tr.querySelector('.state').textContent !== 'jamais testé')"
            )
            shown = await page.js(
                f"""{rows}.map(tr => tr.dataset.drill + ' ' +
                    tr.querySelector('.state').textContent + ' ' +
                    tr.querySelector('.reason').textContent)"""
            )
            assert shown == [
                "cabinet/telesecretariat/trunk-a échoué no answer within 6 s",
                "cabinet/telesecretariat/trunk-b réussi décroché en 2.0 s",
                "cabinet/samu/trunk-a réussi ligne joignable (pas d'appel d'essai)",
                "cabinet/samu/trunk-b réussi ligne joignable (pas d'appel d'essai)",
            ]
            assert await page.js("document.getElementById('error').hidden") is True
            assert "Tester les renvois : cabinet" in await page.js(
                "document.querySelector('button.run-drill').textContent"
            )
    finally:
        await server.close()
        await db.dispose()
