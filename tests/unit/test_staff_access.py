"""Staff access to the admin API: per-person accounts with a TOTP second factor, roles, the
brake on failed attempts, audited reads, credentials re-read on SIGHUP, HTTPS off loopback."""

from __future__ import annotations

import logging
import ssl
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pyotp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from callflow.api import AdminContext, AdminServer, Credentials, create_app, load_accounts
from callflow.api.accounts import Account, Role, Scope, account_entry, digest
from callflow.api.http import BRAKE
from callflow.api.server import tls_context
from callflow.api.sessions import Brake
from callflow.app import Daemon
from callflow.cli import main
from callflow.errors import SettingsError
from callflow.flow.live import LiveFlows
from callflow.schedule import OverrideStore
from callflow.settings import load_settings
from tests.support.flows import write_flow

NOW = datetime(2026, 12, 1, 9, 0, 15, tzinfo=UTC)
MARIE_TOKEN = "marie-token-0123456789abcdef"
ROOT_TOKEN = "admin-token-0123456789abcdef"
MARIE_TOTP = pyotp.random_base32()
ROOT_TOTP = pyotp.random_base32()
SERVICE_TOKEN = "prometheus-token-0123456789"


def code(secret: str, at: datetime = NOW) -> str:
    return pyotp.TOTP(secret).at(at)


def accounts() -> list[Account]:
    return [
        Account("marie", Role.SECRETARIAT, digest(MARIE_TOKEN), MARIE_TOTP),
        Account("dr.root", Role.ADMIN, digest(ROOT_TOKEN), ROOT_TOTP),
        Account("scraper", Role.SECRETARIAT, digest(SERVICE_TOKEN)),
    ]


class Ticks:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Api:
    def __init__(self, client: TestClient[Any, Any], ctx: AdminContext, ticks: Ticks) -> None:
        self.client = client
        self.ctx = ctx
        self.ticks = ticks
        self.audit: list[tuple[str, str, dict[str, Any]]] = []

    async def call(
        self, method: str, path: str, bearer: str | None = None, **kw: Any
    ) -> tuple[int, Any, Any]:
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        async with self.client.request(method, path, headers=headers, **kw) as resp:
            return resp.status, await resp.json(), resp.headers

    async def login(self, name: str, token: str, totp: str) -> tuple[int, Any]:
        body = {"name": name, "token": token, "code": totp}
        status, data, _ = await self.call("POST", "/api/login", json=body)
        return status, data


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    write_flow(tmp_path / "flows")
    flows = LiveFlows(tmp_path / "flows", None)
    ticks = Ticks()
    ctx = AdminContext(
        flows=flows,
        overrides=OverrideStore(),
        reload=flows.reload,
        clock=lambda: NOW,
        credentials=Credentials(accounts()),
    )
    app = create_app(ctx)
    app[BRAKE] = Brake(ticks, limit=5, window=60.0, address_limit=8)
    async with TestClient(TestServer(app)) as client:
        api = Api(client, ctx, ticks)
        ctx.audit = lambda who, action, detail: api.audit.append((who, action, dict(detail)))
        yield api


async def test_a_person_logs_in_with_token_and_code_and_the_token_alone_opens_nothing(
    api: Api,
) -> None:
    status, _, _ = await api.call("GET", "/api/calendars", MARIE_TOKEN)
    assert status == 401
    status, body = await api.login("marie", MARIE_TOKEN, "000000")
    assert status == 401 and "code" in body["error"]
    status, body = await api.login("marie", ROOT_TOKEN, code(ROOT_TOTP))  # someone else's
    assert status == 401
    status, body = await api.login("marie", MARIE_TOKEN, code(MARIE_TOTP))
    assert status == 200 and body["name"] == "marie" and body["role"] == "secretariat"
    session = body["session"]
    assert session not in (MARIE_TOKEN, MARIE_TOTP) and len(session) >= 40
    status, body, _ = await api.call("GET", "/api/calendars", session)
    assert status == 200 and body["calendars"]
    # The same code again: refused, whoever offers it.
    assert (await api.login("marie", MARIE_TOKEN, code(MARIE_TOTP)))[0] == 401
    # The next time step's code is accepted (clock drift of one step either way).
    later = code(MARIE_TOTP, NOW + timedelta(seconds=30))
    assert (await api.login("marie", MARIE_TOKEN, later))[0] == 200
    assert ("marie", "login", {"role": "secretariat"}) in api.audit
    # Logging out ends the session.
    assert (await api.call("POST", "/api/logout", session))[0] == 200
    assert (await api.call("GET", "/api/calendars", session))[0] == 401


async def test_roles_the_secretariat_is_refused_admin_routes(api: Api) -> None:
    _, marie = await api.login("marie", MARIE_TOKEN, code(MARIE_TOTP))
    _, root = await api.login("dr.root", ROOT_TOKEN, code(ROOT_TOTP))
    for method, path in [("POST", "/api/reload"), ("GET", "/api/audit"), ("GET", "/api/calls")]:
        status, body, _ = await api.call(method, path, marie["session"])
        assert status == 403 and "admin" in body["error"], path
    status, body, _ = await api.call("POST", "/api/reload", root["session"])
    assert status == 200 and body["ok"]
    assert api.audit[-1][:2] == ("dr.root", "reload")
    # A service token acts alone, within its role.
    assert (await api.call("GET", "/api/trunks", SERVICE_TOKEN))[0] == 200
    assert (await api.call("POST", "/api/reload", SERVICE_TOKEN))[0] == 403
    # A service account has no second factor, so it cannot open a page session.
    assert (await api.login("scraper", SERVICE_TOKEN, code(MARIE_TOTP)))[0] == 401


async def test_failed_attempts_are_logged_and_braked(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "callflow.api")
    for i in range(8):
        status, _, _ = await api.call("GET", "/api/calendars", f"guess-{i}-0123456789abcdef")
        assert status == 401
    assert caplog.text.count("401 GET /api/calendars from 127.0.0.1") == 8
    assert "guess-" not in caplog.text  # what was offered is never logged
    # Past the address's limit, its unknown bearers wait; the right credentials never do.
    status, body, headers = await api.call("GET", "/api/calendars", "guess-9-0123456789abcdef")
    assert status == 429 and "try again later" in body["error"]
    assert int(headers["Retry-After"]) > 0
    assert (await api.call("GET", "/api/trunks", SERVICE_TOKEN))[0] == 200
    assert (await api.login("marie", MARIE_TOKEN, code(MARIE_TOTP)))[0] == 200
    api.ticks.now += 61  # the failures leave the window
    assert (await api.call("GET", "/api/calendars", "guess-9-0123456789abcdef"))[0] == 401


def test_the_account_commands_write_an_owner_only_file_without_tokens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "accounts.toml"
    assert main(["account", "add", "marie", "--role", "secretariat", "--file", str(f)]) == 0
    out = capsys.readouterr().out
    token = out.split("token:")[1].split()[0]
    secret = out.split("TOTP secret:")[1].split()[0]
    assert f.stat().st_mode & 0o777 == 0o600
    assert token not in f.read_text() and digest(token) in f.read_text()
    assert "otpauth://totp/callflow:marie?secret=" in out
    [marie] = load_accounts(f)
    assert (marie.name, marie.role, marie.totp_secret) == ("marie", Role.SECRETARIAT, secret)
    assert main(["account", "add", "marie", "--role", "admin", "--file", str(f)]) == 1
    assert main(["account", "add", "dr.b@x", "--role", "admin", "--file", str(f)]) == 0
    scoped = ["--flow", "parc", "--flow", "gare", "--file", str(f)]
    assert main(["account", "add", "sec-parc", "--role", "secretariat", *scoped]) == 0
    assert "(secretariat, gare, parc)" in capsys.readouterr().out
    assert main(["account", "add", "x", "--role", "admin", "--flow", "a b", "--file", str(f)]) == 1
    assert main(["account", "list", "--file", str(f)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "marie\tsecretariat\tall flows",
        "dr.b@x\tadmin\tall flows",
        "sec-parc\tsecretariat\tgare, parc",
    ]
    assert load_accounts(f)[2].scope == Scope(frozenset({"parc", "gare"}))
    assert main(["account", "remove", "marie", "--file", str(f)]) == 0
    assert [a.name for a in load_accounts(f)] == ["dr.b@x", "sec-parc"]


def test_accounts_file_mistakes_are_named(tmp_path: Path) -> None:
    f = tmp_path / "accounts.toml"
    good = account_entry(Account("a", Role.ADMIN, digest("x" * 20), MARIE_TOTP))
    for text, message in [
        (good.replace('"admin"', '"root"'), "role must be"),
        (good.replace(digest("x" * 20), "abc"), "64 hex"),
        (good.replace(MARIE_TOTP, "not-base32"), "base32"),
        (good.replace("totp_secret", "totp"), "expected role, token_sha256, totp_secret"),
        (good + "flows = []\n", "flows must be a non-empty list"),
        (good + 'flows = ["a/b"]\n', "flows must be a non-empty list"),
        ("[other]\n", "only \\[accounts.NAME\\]"),
        ("[accounts.a\n", "accounts_file"),
    ]:
        f.write_text(text)
        with pytest.raises(SettingsError, match=message):
            load_accounts(f)


def test_an_address_off_loopback_needs_https_or_a_proxy(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="reachable from the network"):
        load_settings(None, {"CALLFLOW_HTTP_LISTEN": "0.0.0.0:8089"})
    with pytest.raises(SettingsError, match="reachable from the network"):
        load_settings(None, {"CALLFLOW_HTTP_LISTEN": "callflow.example:8089"})
    ok = load_settings(
        None, {"CALLFLOW_HTTP_LISTEN": "192.0.2.1:8089", "CALLFLOW_HTTP_BEHIND_PROXY": "true"}
    )
    assert ok.http.behind_proxy
    assert load_settings(None, {"CALLFLOW_HTTP_LISTEN": "[::1]:8089"}).http.loopback
    with pytest.raises(SettingsError, match="go together"):
        load_settings(None, {"CALLFLOW_HTTP_TLS_CERT": "cert.pem"})


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subj = ["-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"]
    out = ["-keyout", str(key), "-out", str(cert)]
    req = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
    subprocess.run([*req, *subj, *out], check=True, capture_output=True)
    return cert, key


async def test_https_is_served_with_the_configured_certificate(
    tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    with pytest.raises(SettingsError, match="tls_cert"):
        tls_context(key, key)
    write_flow(tmp_path / "flows")
    flows = LiveFlows(tmp_path / "flows", None)
    ctx = AdminContext(flows=flows, overrides=OverrideStore(), reload=flows.reload)
    trust = ssl.create_default_context(cafile=str(cert))
    async with (
        AdminServer(create_app(ctx), "127.0.0.1", 0, tls=tls_context(cert, key)) as server,
        aiohttp.ClientSession() as http,
    ):
        assert server.url.startswith("https://")
        async with http.get(f"{server.url}/healthz", ssl=trust) as resp:
            assert resp.status == 503  # served over TLS (ARI is not connected here)
        with pytest.raises(aiohttp.ClientError):
            async with http.get(f"http://127.0.0.1:{server.port}/healthz") as resp:
                await resp.read()


async def test_sighup_rereads_the_accounts_and_a_removed_person_loses_her_session(
    tmp_path: Path,
) -> None:
    write_flow(tmp_path / "flows")
    f = tmp_path / "accounts.toml"
    f.write_text("".join(account_entry(a) for a in accounts()[:2]))
    f.chmod(0o600)
    conf = tmp_path / "callflow.toml"
    conf.write_text(
        f'[flows]\ndir = "flows"\n[http]\nlisten = "127.0.0.1:0"\naccounts_file = "{f.name}"\n'
        '[ami]\nenabled = false\n[database]\nurl = "sqlite+aiosqlite:///callflow.db"\n'
        '[daemon]\nstate_dir = "."\n'  # the data beside this file, not in /var/lib/callflow
    )
    daemon = Daemon(load_settings(conf, {}), {"CALLFLOW_ARI_PASSWORD": "x" * 20})
    assert daemon.admin is not None
    async with TestClient(TestServer(daemon.admin.app)) as client:
        body = {"name": "marie", "token": MARIE_TOKEN, "code": code(MARIE_TOTP, datetime.now(UTC))}
        async with client.post("/api/login", json=body) as resp:
            assert resp.status == 200
            session = (await resp.json())["session"]
        auth = {"Authorization": f"Bearer {session}"}
        async with client.get("/api/calendars", headers=auth) as resp:
            assert resp.status == 200
        f.write_text("".join(account_entry(a) for a in accounts()[1:2]))  # marie removed
        assert (await daemon.reload()).ok
        assert daemon.credentials.get("marie") is None
        async with client.get("/api/calendars", headers=auth) as resp:
            assert resp.status == 401
        f.write_text("[accounts.broken\n")  # a broken file keeps the accounts in force
        await daemon.reload()
        assert daemon.credentials.get("dr.root") is not None
