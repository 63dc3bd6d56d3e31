"""The brake on failed attempts at the admin API: it brakes guesses, never a valid session or
token, so page tabs whose sessions ended, or an attacker behind the same proxy or NAT, cannot
lock the secretariat out; behind a proxy it reads the address that proxy saw."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyotp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from callflow.api import AdminContext, Credentials, create_app
from callflow.api.accounts import Account, Role, digest
from callflow.api.http import BRAKE, SESSIONS
from callflow.api.sessions import SESSION_TTL, Brake, Sessions
from callflow.app import Daemon
from callflow.flow.live import LiveFlows
from callflow.schedule import OverrideStore
from callflow.settings import load_settings
from tests.support.flows import write_flow

NOW = datetime(2026, 12, 1, 9, 0, 15, tzinfo=UTC)
MARIE_TOKEN = "marie-token-0123456789abcdef"
ROOT_TOKEN = "admin-token-0123456789abcdef"
SERVICE_TOKEN = "prometheus-token-0123456789"
MARIE_TOTP = pyotp.random_base32()
ROOT_TOTP = pyotp.random_base32()
PRACTICE = "198.51.100.10"  # the practice's NAT, as the proxy sees it
ATTACKER = "203.0.113.66"


class Clocks:
    """The daemon's monotonic seconds (sessions, brake) and its wall clock (TOTP codes)."""

    def __init__(self) -> None:
        self.ticks = 1000.0
        self.wall = NOW

    def monotonic(self) -> float:
        return self.ticks

    def now(self) -> datetime:
        return self.wall

    def code(self, secret: str) -> str:
        """A fresh code: the wall clock moves on one TOTP step (a code is accepted once)."""
        self.wall += timedelta(seconds=30)
        return pyotp.TOTP(secret).at(self.wall)


class Api:
    def __init__(self, client: TestClient[Any, Any], clocks: Clocks) -> None:
        self.client = client
        self.clocks = clocks

    async def call(
        self,
        method: str,
        path: str,
        bearer: str | None = None,
        forwarded: str | None = None,
        **kw: Any,
    ) -> tuple[int, Mapping[str, str]]:
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        if forwarded is not None:
            headers["X-Forwarded-For"] = forwarded
        async with self.client.request(method, path, headers=headers, **kw) as resp:
            await resp.read()
            return resp.status, resp.headers

    async def login(
        self, name: str, token: str, secret_or_code: str, forwarded: str | None = None
    ) -> tuple[int, str]:
        code = self.clocks.code(secret_or_code) if len(secret_or_code) > 6 else secret_or_code
        body = {"name": name, "token": token, "code": code}
        headers = {} if forwarded is None else {"X-Forwarded-For": forwarded}
        async with self.client.post("/api/login", json=body, headers=headers) as resp:
            data = await resp.json()
            return resp.status, data.get("session", "")

    async def tab_finds_its_session_dead(self, session: str, forwarded: str | None) -> None:
        """What a page tab did when its session had ended: three requests at once, then a
        logout with the dead session; each answered 401."""
        paths = ["/api/callbacks?status=pending", "/api/calendars", "/api/trunks"]
        answers = await asyncio.gather(*(self.call("GET", p, session, forwarded) for p in paths))
        assert [status for status, _ in answers] == [401, 401, 401]
        assert (await self.call("POST", "/api/logout", session, forwarded))[0] == 401


def context(tmp_path: Path, clocks: Clocks, **kw: Any) -> AdminContext:
    write_flow(tmp_path / "flows")
    flows = LiveFlows(tmp_path / "flows", None)
    accounts = [
        Account("marie", Role.SECRETARIAT, digest(MARIE_TOKEN), MARIE_TOTP),
        Account("dr.root", Role.ADMIN, digest(ROOT_TOKEN), ROOT_TOTP),
        Account("scraper", Role.SECRETARIAT, digest(SERVICE_TOKEN)),
    ]
    return AdminContext(
        flows=flows,
        overrides=OverrideStore(),
        reload=flows.reload,
        clock=clocks.now,
        credentials=Credentials(accounts),
        **kw,
    )


def daemon_app(ctx: AdminContext, clocks: Clocks) -> web.Application:
    """The daemon's application, with the production brake's limits on the test's clock."""
    app = create_app(ctx)
    app[SESSIONS] = Sessions(ctx.credentials, clocks.monotonic)
    app[BRAKE] = Brake(clocks.monotonic)
    return app


@asynccontextmanager
async def serving(ctx: AdminContext, clocks: Clocks) -> AsyncIterator[Api]:
    async with TestClient(TestServer(daemon_app(ctx, clocks))) as client:
        yield Api(client, clocks)


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


@pytest.fixture
async def api(tmp_path: Path, clocks: Clocks) -> AsyncIterator[Api]:
    async with serving(context(tmp_path, clocks), clocks) as api:
        yield api


@pytest.fixture
async def proxied(tmp_path: Path, clocks: Clocks) -> AsyncIterator[Api]:
    async with serving(context(tmp_path, clocks, behind_proxy=True), clocks) as api:
        yield api


async def expire(api: Api) -> Api:
    api.clocks.ticks += SESSION_TTL + 1  # the working day is over
    return api


@pytest.mark.parametrize("ended", ["expired", "restarted"])
async def test_tabs_whose_sessions_ended_do_not_lock_the_practice_out(
    tmp_path: Path, clocks: Clocks, ended: str
) -> None:
    """Scenario 1: three open tabs from one address (the practice's NAT) find their sessions
    ended, after 10 hours or a restart of the daemon: 12 failed requests.  Then the
    secretariat logs in again and works, and the service token works throughout."""
    ctx = context(tmp_path, clocks)
    async with serving(ctx, clocks) as before:
        tabs = [(await before.login("marie", MARIE_TOKEN, MARIE_TOTP)) for _ in range(3)]
        assert [status for status, _ in tabs] == [200, 200, 200]
        for _, session in tabs:
            assert (await before.call("GET", "/api/calendars", session))[0] == 200
        if ended == "expired":
            await expire(before)
            await check_tabs_then_login(before, [s for _, s in tabs])
    if ended == "restarted":  # sessions live in memory: the new daemon knows none
        async with serving(ctx, clocks) as after:
            await check_tabs_then_login(after, [s for _, s in tabs])


async def check_tabs_then_login(api: Api, sessions: list[str]) -> None:
    for session in sessions:
        await api.tab_finds_its_session_dead(session, None)
    assert (await api.call("GET", "/api/trunks", SERVICE_TOKEN))[0] == 200
    status, session = await api.login("marie", MARIE_TOKEN, MARIE_TOTP)
    assert status == 200
    for path in ["/api/calendars", "/api/trunks"]:
        assert (await api.call("GET", path, session))[0] == 200, path
    # Past the auth (this test has no call log: 503, not 401 or 429).
    assert (await api.call("GET", "/api/callbacks?status=pending", session))[0] == 503


async def test_a_dead_session_counts_once_however_often_it_is_sent(api: Api) -> None:
    _, session = await api.login("marie", MARIE_TOKEN, MARIE_TOTP)
    await expire(api)
    for _ in range(60):  # a tab left open all night, refreshing
        assert (await api.call("GET", "/api/calendars", session))[0] == 401


async def test_behind_a_proxy_an_attacker_cannot_keep_the_page_down(proxied: Api) -> None:
    """Scenario 2: every client reaches the daemon from the proxy's address; someone on the
    internet sends bad bearers every 5 minutes; the practice's page keeps working."""
    api = proxied
    for round_ in range(3):
        for i in range(40):
            bad = f"guess-{round_}-{i}-0123456789abcdef"
            status, _ = await api.call("GET", "/api/calendars", bad, ATTACKER)
            assert status == (401 if i < 30 else 429)
        status, session = await api.login("marie", MARIE_TOKEN, MARIE_TOTP, PRACTICE)
        assert status == 200
        assert (await api.call("GET", "/api/calendars", session, PRACTICE))[0] == 200
        assert (await api.call("GET", "/api/trunks", SERVICE_TOKEN, PRACTICE))[0] == 200
        # Even from the attacker's own address, a valid credential is never braked.
        assert (await api.call("GET", "/api/calendars", session, ATTACKER))[0] == 200
        api.clocks.ticks += 300


async def test_a_brute_force_on_one_account_is_braked(proxied: Api) -> None:
    api = proxied
    for i in range(10):
        status, _ = await api.login("marie", MARIE_TOKEN, f"{i:06d}", ATTACKER)
        assert status == 401
    # The right code too: a braked guess is answered 429 before it is checked.
    status, _ = await api.login("marie", MARIE_TOKEN, MARIE_TOTP, ATTACKER)
    assert status == 429
    async with api.client.post(
        "/api/login",
        json={"name": "marie", "token": MARIE_TOKEN, "code": "123456"},
        headers={"X-Forwarded-For": ATTACKER},
    ) as resp:
        assert resp.status == 429 and int(resp.headers["Retry-After"]) > 0
    # Marie from the practice, and another account from the same address, log in.
    assert (await api.login("marie", MARIE_TOKEN, MARIE_TOTP, PRACTICE))[0] == 200
    assert (await api.login("dr.root", ROOT_TOKEN, ROOT_TOTP, ATTACKER))[0] == 200
    api.clocks.ticks += 301  # the guesses leave the window
    assert (await api.login("marie", MARIE_TOKEN, MARIE_TOTP, ATTACKER))[0] == 200


async def test_guessing_many_names_from_one_address_is_braked_too(proxied: Api) -> None:
    api = proxied
    for i in range(30):  # 3 guesses at each of 10 names: under each name's limit
        status, _ = await api.login(f"user{i % 10}", MARIE_TOKEN, f"{i:06d}", ATTACKER)
        assert status == 401
    assert (await api.login("marie", MARIE_TOKEN, MARIE_TOTP, ATTACKER))[0] == 429
    assert (await api.login("marie", MARIE_TOKEN, MARIE_TOTP, PRACTICE))[0] == 200


async def test_the_same_wrong_login_sent_twice_counts_once(api: Api) -> None:
    for _ in range(15):  # a double click, again and again: one mistake
        assert (await api.login("marie", MARIE_TOKEN, "000000"))[0] == 401
    assert (await api.login("marie", MARIE_TOKEN, MARIE_TOTP))[0] == 200


async def test_a_valid_token_works_while_an_attacker_is_braked_from_the_same_address(
    api: Api,
) -> None:
    _, session = await api.login("marie", MARIE_TOKEN, MARIE_TOTP)
    for i in range(30):
        assert (await api.call("GET", "/api/calendars", f"guess-{i}-0123456789abcdef"))[0] == 401
    status, headers = await api.call("GET", "/api/calendars", "guess-x-0123456789abcdef")
    assert status == 429 and int(headers["Retry-After"]) > 0
    assert (await api.call("GET", "/api/trunks", SERVICE_TOKEN))[0] == 200
    assert (await api.call("GET", "/api/calendars", session))[0] == 200
    assert (await api.login("dr.root", ROOT_TOKEN, ROOT_TOTP))[0] == 200
    # No bearer: nothing guessed, a plain 401.  A person's token without the login: braked
    # like a miss (a 401 would tell the attacker they hit a token).
    assert (await api.call("GET", "/api/calendars"))[0] == 401
    assert (await api.call("GET", "/api/calendars", MARIE_TOKEN))[0] == 429


async def test_a_persons_token_without_the_login_is_refused_but_not_counted(api: Api) -> None:
    for i in range(29):
        assert (await api.call("GET", "/api/calendars", f"guess-{i}-0123456789abcdef"))[0] == 401
    for _ in range(5):  # neither a guess: nothing counted
        assert (await api.call("GET", "/api/calendars", MARIE_TOKEN))[0] == 401
        assert (await api.call("GET", "/api/calendars"))[0] == 401
    assert (await api.call("GET", "/api/calendars", "guess-29-0123456789abcdef"))[0] == 401
    assert (await api.call("GET", "/api/calendars", "guess-30-0123456789abcdef"))[0] == 429


def logged_from(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    def addresses() -> list[str]:
        messages = [r.getMessage() for r in caplog.records]
        refusals = [m for m in messages if m[:4] in ("401 ", "429 ")]
        return [m.split(" from ")[1].split(": ")[0] for m in refusals]

    return addresses


async def test_x_forwarded_for_is_honoured_only_behind_a_proxy(
    api: Api, proxied: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "callflow.api")
    addresses = logged_from(caplog)
    # Not behind a proxy: the header is the client's word, ignored; rotating it dodges nothing.
    for i in range(30):
        status, _ = await api.call("GET", "/api/calendars", f"g{i}-0123456789abcdef", f"10.0.0.{i}")
        assert status == 401
    assert set(addresses()) == {"127.0.0.1"}
    assert (await api.call("GET", "/api/calendars", "g-x-0123456789abcdef", PRACTICE))[0] == 429
    caplog.clear()
    # Behind the proxy: the right-most entry, the one the proxy appended, is the client.
    await proxied.call("GET", "/api/calendars", "g-0123456789abcdef", f"{PRACTICE}, {ATTACKER}")
    await proxied.call("GET", "/api/calendars", None, f"{PRACTICE},{ATTACKER}")
    await proxied.call("GET", "/api/calendars", None, "2001:db8::1")
    await proxied.call("GET", "/api/calendars", None, "not-an-address")  # the proxy's own
    await proxied.call("GET", "/api/calendars", None)  # no header: the proxy's own
    assert addresses() == [ATTACKER, ATTACKER, "2001:db8::1", "127.0.0.1", "127.0.0.1"]
    # An attacker who writes the practice's address first still pays as themselves.
    for i in range(40):
        forged = f"{PRACTICE}, {ATTACKER}"
        await proxied.call("GET", "/api/calendars", f"h{i}-0123456789abcdef", forged)
    assert (await proxied.call("GET", "/api/calendars", "h-x-01234567890abc", ATTACKER))[0] == 429
    status, _ = await proxied.call("GET", "/api/calendars", "dead-0123456789abcdef", PRACTICE)
    assert status == 401


@pytest.mark.parametrize("behind_proxy", [True, False])
async def test_the_daemon_passes_behind_proxy_to_the_api(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, behind_proxy: bool
) -> None:
    write_flow(tmp_path / "flows")
    tokens = tmp_path / "tokens"
    tokens.write_text(f"scraper:secretariat:{SERVICE_TOKEN}\n")
    tokens.chmod(0o600)
    conf = tmp_path / "callflow.toml"
    conf.write_text(
        f'[flows]\ndir = "flows"\n[http]\nlisten = "127.0.0.1:0"\ntoken_file = "tokens"\n'
        f"behind_proxy = {str(behind_proxy).lower()}\n"
        '[ami]\nenabled = false\n[database]\nurl = "sqlite+aiosqlite:///callflow.db"\n'
        '[daemon]\nstate_dir = "."\n'
    )
    daemon = Daemon(load_settings(conf, {}), {"CALLFLOW_ARI_PASSWORD": "x" * 20})
    assert daemon.admin is not None
    caplog.set_level(logging.WARNING, "callflow.api")
    async with TestClient(TestServer(daemon.admin.app)) as client:
        headers = {"Authorization": "Bearer guess-0123456789abcdef", "X-Forwarded-For": ATTACKER}
        async with client.get("/api/calendars", headers=headers) as resp:
            assert resp.status == 401
    assert logged_from(caplog)() == [ATTACKER if behind_proxy else "127.0.0.1"]
