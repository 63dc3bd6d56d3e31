"""The practice's page in a real headless Chromium (Debian's ``chromium``), driven over the
DevTools protocol: log in, see the callbacks, the calendars and the trunks, mark a callback
done by clicking, change a calendar by clicking.

The API runs on 127.0.0.1 with a real SQLite call log and a real flow folder.  Without
``chromium`` the test is skipped, and FAILS when ``CI=true``
(``apt-get install -y chromium``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import logging
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pyotp
import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from callflow.api import AdminContext, AdminServer, create_app
from callflow.api.accounts import Account, Credentials, Role, digest
from callflow.api.http import SESSIONS
from callflow.flow.live import LiveFlows
from callflow.schedule import Override, OverrideStore
from callflow.store.db import create_engine, upgrade
from callflow.store.models import AdminAction, CallbackRequestRow, TrunkEvent
from callflow.trunks import ContactUpdate, HealthAwareSelector, TrunkHealth, TrunkState
from tests.support.flows import write_flow

TOKEN = "browser-test-token-0123456789"
TOTP = pyotp.random_base32()
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--window-size=1200,1000",
    "--remote-debugging-port=0",
]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if in_ci():
            pytest.fail("chromium is missing: apt-get install -y chromium (Debian)")
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    return found


class DevTools:
    """A minimal DevTools protocol client for one page target."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._ids = itertools.count(1)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self._ids)
        await self.ws.send_json({"id": msg_id, "method": method, "params": params})
        async with asyncio.timeout(30):
            while True:
                msg = await self.ws.receive()
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    raise AssertionError(f"DevTools connection ended: {msg.type}")
                data = json.loads(msg.data)
                if data.get("id") == msg_id:
                    if "error" in data:
                        raise AssertionError(f"{method}: {data['error']}")
                    result: dict[str, Any] = data.get("result", {})
                    return result

    async def js(self, expression: str) -> Any:
        """Evaluate ``expression`` in the page (promises awaited); its JSON value."""
        res = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in res:
            raise AssertionError(f"page JS error: {res['exceptionDetails']}")
        return res["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 60.0) -> Any:
        """Poll ``expression`` until it is truthy; its value."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            value = await self.js(expression)
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                # What the page showed the user says why (an API error lands in #error).
                shown = await self.js("(document.getElementById('error') || {}).textContent")
                raise AssertionError(f"timed out waiting for: {expression} (page error: {shown!r})")
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def chromium(profile: Path) -> AsyncIterator[DevTools]:
    exe = chromium_path()
    proc = await asyncio.create_subprocess_exec(
        exe,
        *FLAGS,
        f"--user-data-dir={profile}",
        "about:blank",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        async with asyncio.timeout(60):
            while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
                if proc.returncode is not None:
                    raise AssertionError(f"chromium exited with {proc.returncode}")
                await asyncio.sleep(0.1)
        port = int(port_file.read_text().splitlines()[0])
        async with aiohttp.ClientSession() as session:
            async with asyncio.timeout(30):
                while True:
                    async with session.get(f"http://127.0.0.1:{port}/json/list") as resp:
                        targets = await resp.json()
                    pages = [t for t in targets if t.get("type") == "page"]
                    if pages:
                        break
                    await asyncio.sleep(0.1)
            async with session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                yield DevTools(ws)
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def open_login_form(page: DevTools, base_url: str) -> None:
    """Open the page and wait until app.js has bound the login form: the form exists before
    (DOMContentLoaded), and a click then submits it natively and reloads the page."""
    await page.send("Page.enable")
    await page.send("Page.navigate", url=f"{base_url}/page/")
    await page.wait_for(
        "document.readyState === 'complete' && !!document.getElementById('login-form')"
    )


async def submit_login(page: DevTools, user: str = "marie", code: str | None = None) -> None:
    """Fill the login form with the account's token and a code (the authenticator's
    current one unless given), and submit it."""
    code = pyotp.TOTP(TOTP).now() if code is None else code
    await page.js(
        f"""document.getElementById('user').value = {json.dumps(user)};
        document.getElementById('token').value = {json.dumps(TOKEN)};
        document.getElementById('code').value = {json.dumps(code)};
        document.getElementById('login-button').click(); true"""
    )


async def seed(db: AsyncEngine, now: datetime) -> tuple[int, int]:
    await upgrade(db)
    ids = []
    async with db.begin() as conn:
        for call_id, tier, age, caller in (
            ("c-old", 2, timedelta(hours=5), "0611111111"),
            ("c-new", None, timedelta(minutes=20), "0622222222"),
        ):
            res = await conn.execute(
                insert(CallbackRequestRow).values(
                    call_id=call_id,
                    flow="parc",
                    queue="same-day",
                    priority="high",
                    tier=tier,
                    caller=caller,
                    status="pending",
                    created=now - age,
                )
            )
            assert res.inserted_primary_key is not None
            ids.append(int(res.inserted_primary_key[0]))
        # Another node on the same call log saw its trunk-a go down (this node is "pbx-1").
        await conn.execute(
            insert(TrunkEvent).values(
                trunk="trunk-a", state="unreachable", rtt_ms=None, at=now, node="pbx-2"
            )
        )
    return ids[0], ids[1]


@dataclass
class Practice:
    """The page's back end: the parc flow, an override, two trunks, two callbacks waiting."""

    ctx: AdminContext
    store: LiveFlows
    overrides: OverrideStore
    db: AsyncEngine
    now: datetime
    callbacks: tuple[int, int]  # the overdue one, the fresh one
    audit: list[tuple[str, str, dict[str, Any]]]


async def open_practice(tmp_path: Path, language: str = "en") -> Practice:
    flows_dir = tmp_path / "flows"
    write_flow(flows_dir)
    store = LiveFlows(flows_dir, None, language=language)
    now = datetime.now(UTC)
    overrides = OverrideStore()
    overrides.set(
        "parc/office",
        Override(open=False, until=now + timedelta(days=2), label="séminaire", set_by="admin"),
    )
    health = TrunkHealth(["trunk-a", "trunk-b"])
    health.resync(
        [
            ContactUpdate("trunk-a", "sip:a.example", TrunkState.REACHABLE, 18.0),
            ContactUpdate("trunk-b", "sip:b.example", TrunkState.UNREACHABLE),
        ]
    )
    db = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}")
    callbacks = await seed(db, now)
    audit: list[tuple[str, str, dict[str, Any]]] = []
    ctx = AdminContext(
        flows=store,
        overrides=overrides,
        reload=store.reload,
        trunks=HealthAwareSelector(health),
        db=db,
        credentials=Credentials([Account("marie", Role.SECRETARIAT, digest(TOKEN), TOTP)]),
        audit=lambda who, action, detail: audit.append((who, action, dict(detail))),
        ari_connected=lambda: True,
        language=language,
        node="pbx-1",
    )
    return Practice(ctx, store, overrides, db, now, callbacks, audit)


async def test_the_page_lists_callbacks_marks_one_done_and_shows_calendars(
    tmp_path: Path,
) -> None:
    chromium_path()  # skip (or fail in CI) before building anything
    practice = await open_practice(tmp_path)
    ctx, store, overrides, db, now = (
        practice.ctx,
        practice.store,
        practice.overrides,
        practice.db,
        practice.now,
    )
    overdue_id, fresh_id = practice.callbacks
    audit = practice.audit
    server = AdminServer(create_app(ctx), "127.0.0.1", 0)
    await server.start()
    try:
        async with chromium(tmp_path / "profile") as page:
            await open_login_form(page, server.url)
            assert await page.js("document.getElementById('main').hidden") is True

            # Log in with the account, its token and the authenticator's code: a wrong code
            # is refused; the right one opens a session (the token itself is not kept).
            await submit_login(page, code="000000")
            await page.wait_for("!document.getElementById('error').hidden")
            assert "wrong" in await page.js("document.getElementById('error').textContent")
            assert await page.js("document.getElementById('main').hidden") is True
            await submit_login(page)
            await page.wait_for("document.body.dataset.loaded === 'yes'")
            stored = await page.js("JSON.stringify(Object.values(sessionStorage))")
            assert TOKEN not in stored and TOTP not in stored
            assert await page.js("sessionStorage.getItem('callflow.session')")

            # The secretariat's session is refused an admin route.
            status = await page.js(
                """fetch('/api/reload', {method: 'POST', headers: {Authorization:
                'Bearer ' + sessionStorage.getItem('callflow.session')}}).then(r => r.status)"""
            )
            assert status == 403

            # The callbacks to make: the tier 2 one first, overdue (5 h > 4 h).
            rows = await page.js(
                """[...document.querySelectorAll('#callbacks tbody tr')].map(tr => ({
                    id: Number(tr.dataset.callbackId), cls: tr.className,
                    number: tr.querySelector('.number').textContent,
                    waiting: tr.querySelector('.waiting').textContent}))"""
            )
            assert [r["id"] for r in rows] == [overdue_id, fresh_id]
            assert rows[0]["cls"] == "overdue" and rows[0]["number"] == "0611111111"
            assert rows[0]["waiting"].startswith("5 h 0") and "(overdue)" in rows[0]["waiting"]
            assert rows[1]["waiting"] in ("20 min", "21 min")

            # The calendars: office closed by the override, with its end.
            office = await page.js(
                """(() => { const tr = document.querySelector('tr[data-calendar="parc/office"]');
                    return {state: tr.querySelector('.state').textContent,
                            reason: tr.querySelector('.reason').textContent,
                            until: tr.querySelector('.until').textContent}; })()"""
            )
            assert office["state"] == "closedoverridden"
            assert "séminaire" in office["reason"] and "set by admin" in office["reason"]
            local_until = (now + timedelta(days=2)).astimezone(store.current.flows["parc"].tz)
            assert office["until"] == f"{local_until:%Y-%m-%d %H:%M}"
            lab = await page.js(
                "document.querySelector('tr[data-calendar=\"parc/lab\"] .state').textContent"
            )
            assert lab in ("open", "closed")

            # The trunks.
            trunks = await page.js(
                """[...document.querySelectorAll('#trunks tbody tr')].map(
                    tr => tr.dataset.trunk + ':' + tr.querySelector('.state').textContent)"""
            )
            assert trunks == ["trunk-a:reachable", "trunk-b:unreachable"]
            others = await page.js(
                """[...document.querySelectorAll('#node-trunks tbody tr')].map(
                    tr => tr.dataset.node + ':' + tr.querySelector('.state').textContent)"""
            )
            assert others == ["pbx-2:unreachable"]

            shot = await page.send("Page.captureScreenshot", format="png")
            (tmp_path / "page.png").write_bytes(base64.b64decode(shot["data"]))

            # Mark the overdue callback done by clicking its button.
            await page.js(
                f"document.querySelector('tr[data-callback-id=\"{overdue_id}\"] button.done')"
                ".click(); true"
            )
            await page.wait_for(
                f"!document.querySelector('tr[data-callback-id=\"{overdue_id}\"]')"
                " && document.querySelectorAll('#callbacks tbody tr').length === 1"
            )
            assert await page.js("document.getElementById('callback-count').textContent") == "1"
            assert await page.js("document.getElementById('error').hidden") is True

            # Close the lab until tomorrow 8:00 (the field's default), by clicking.
            await page.js(
                "document.querySelector('tr[data-calendar=\"parc/lab\"] button.close-until')"
                ".click(); true"
            )
            await page.wait_for(
                "!!document.querySelector('tr[data-calendar=\"parc/lab\"] .overridden')"
            )
            lab_override = overrides.get("parc/lab", datetime.now(UTC))
            assert lab_override is not None and not lab_override.open
            assert lab_override.set_by == "marie"
            assert f"{lab_override.until:%H:%M}" == "08:00"

            # Back to the calendar, by clicking.
            await page.js(
                'document.querySelector(\'tr[data-calendar="parc/office"] '
                "button.cancel-override').click(); true"
            )
            await page.wait_for(
                "!document.querySelector('tr[data-calendar=\"parc/office\"] .overridden')"
            )
            assert overrides.get("parc/office", datetime.now(UTC)) is None
    finally:
        await server.close()

    async with db.connect() as conn:
        row = (
            (
                await conn.execute(
                    select(CallbackRequestRow).where(CallbackRequestRow.id == overdue_id)
                )
            )
            .mappings()
            .one()
        )
        actions = (await conn.execute(select(AdminAction))).mappings().all()
    await db.dispose()
    assert row["status"] == "done" and row["completed_by"] == "marie"
    assert [(a["who"], a["action"]) for a in actions] == [("marie", "callback done")]
    assert [(who, action) for who, action, _ in audit if action != "read"] == [
        ("marie", "login"),
        ("marie", "override set"),
        ("marie", "override cancelled"),
    ]
    reads = [(who, detail["what"]) for who, action, detail in audit if action == "read"]
    assert reads and set(reads) == {("marie", "callbacks")}


async def test_the_page_speaks_french_when_the_daemon_does(tmp_path: Path) -> None:
    """[daemon] language = "fr": every word staff read, static or drawn by app.js."""
    practice = await open_practice(tmp_path, language="fr")
    ctx, db = practice.ctx, practice.db
    server = AdminServer(create_app(ctx), "127.0.0.1", 0)
    await server.start()
    try:
        async with chromium(tmp_path / "profile") as page:
            await open_login_form(page, server.url)
            assert await page.js("document.documentElement.lang") == "fr"
            assert await page.js("document.getElementById('login-button').textContent") == (
                "Se connecter"
            )
            await submit_login(page)
            await page.wait_for("document.body.dataset.loaded === 'yes'")
            waiting = await page.js(
                "document.querySelector('#callbacks tbody tr .waiting').textContent"
            )
            assert "(en retard)" in waiting
            done = await page.js("document.querySelector('#callbacks button.done').textContent")
            assert done == "Fait"
            office = await page.js(
                """(() => { const tr = document.querySelector('tr[data-calendar="parc/office"]');
                    return {state: tr.querySelector('.state').textContent,
                            reason: tr.querySelector('.reason').textContent}; })()"""
            )
            assert office["state"] == "fermé" + "forcé"
            assert office["reason"].startswith("forçage") and "séminaire" in office["reason"]
            trunks = await page.js(
                """[...document.querySelectorAll('#trunks tbody tr')].map(
                    tr => tr.dataset.trunk + ':' + tr.querySelector('.state').textContent)"""
            )
            assert trunks == ["trunk-a:joignable", "trunk-b:injoignable"]
            assert await page.js("document.getElementById('trunk-feed').textContent") in (
                "(en direct)",
                "(pas de suivi en direct : états peut-être périmés)",
            )
    finally:
        await server.close()
        await db.dispose()


async def test_a_session_that_ended_costs_one_request_and_no_logout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A tab whose session ended (expired, or the daemon restarted) stops at the first 401,
    shows the login form, and sends nothing more with the dead session (no logout either):
    open tabs must not add up to the brake's limit (``tests/unit/test_api_brake.py``)."""
    chromium_path()
    practice = await open_practice(tmp_path)
    app = create_app(practice.ctx)
    server = AdminServer(app, "127.0.0.1", 0)
    await server.start()
    try:
        async with chromium(tmp_path / "profile") as page:
            await open_login_form(page, server.url)
            await submit_login(page)
            await page.wait_for("document.body.dataset.loaded === 'yes'")
            session = await page.js("sessionStorage.getItem('callflow.session')")
            app[SESSIONS].logout(session)  # the daemon no longer knows it
            caplog.clear()
            caplog.set_level(logging.WARNING, "callflow.api")
            # The page's next refresh, awaited: it found the session dead.
            await page.js("refresh().then(() => true)")
            assert await page.js("document.getElementById('login').hidden") is False
            assert await page.js("document.getElementById('main').hidden") is True
            assert await page.js("sessionStorage.getItem('callflow.session')") is None
            shown = await page.js("document.getElementById('error').textContent")
            assert shown == "your session has ended: log in again"
            refused = [r.getMessage() for r in caplog.records if r.getMessage()[:3] == "401"]
            assert len(refused) == 1 and refused[0].startswith("401 GET /api/callbacks")
            # Another refresh (the timer's, a click's) sends nothing: no session to send.
            await page.js("refresh().then(() => true)")
            assert [r.getMessage()[:3] for r in caplog.records] == ["401"]
    finally:
        await server.close()
        await practice.db.dispose()
