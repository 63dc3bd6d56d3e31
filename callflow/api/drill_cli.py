"""``callflow drill FLOW [--destination NAME]``: asks the running daemon to drill a flow.

The daemon owns the ARI connection and the channels' events, so the command does not
place calls itself: it calls ``POST /api/drills/{flow}`` on the daemon's admin API
(``[http] listen``, or ``--url``) with a service token (``$CALLFLOW_API_TOKEN``, else the
first admin token of ``[http] token_file``), prints one line per destination and trunk,
and exits 1 when a leg failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
from typing import Any, TextIO

import aiohttp

from ..errors import UserError
from ..settings import Settings, discover_settings
from .accounts import Role

TOKEN_ENV = "CALLFLOW_API_TOKEN"


def add_commands(sub: Any) -> None:
    d = sub.add_parser(
        "drill",
        help="test-call each forwarding destination of a flow over each trunk (asks the daemon)",
    )
    d.add_argument("flow", metavar="FLOW")
    d.add_argument("--destination", metavar="NAME", help="only this forwarding destination")
    d.add_argument("--config", type=Path, metavar="FILE", help="settings file (TOML)")
    d.add_argument("--url", help="the daemon's admin API (default: from [http] listen)")
    d.add_argument(
        "--timeout", type=float, default=600.0, help="seconds to wait for the drill (600)"
    )
    d.add_argument("--json", action="store_true", help="print the daemon's answer as JSON")
    d.set_defaults(func=cmd_drill)


def _url(settings: Settings, given: str | None) -> str:
    if given:
        return given.rstrip("/")
    http = settings.http
    if not http.enabled:
        raise UserError("[http] enabled = false: the daemon has no admin API to ask (--url)")
    host = "127.0.0.1" if http.host in ("0.0.0.0", "::", "") else http.host
    host = f"[{host}]" if ":" in host else host
    scheme = "https" if http.tls_cert else "http"
    return f"{scheme}://{host}:{http.port}"


def _token(settings: Settings) -> str:
    token = os.environ.get(TOKEN_ENV, "").strip()
    if token:
        return token
    if settings.http.token_file:
        path = settings.resolve(settings.http.token_file)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise UserError(f"[http] token_file {path}: cannot read: {exc.strerror}") from None
        for raw in lines:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            _name, _, rest = line.partition(":")
            head, sep, tail = rest.partition(":")
            if not sep:
                return rest.strip() or line  # name:token (admin), or a bare token
            if head.strip() == Role.ADMIN:
                return tail.strip()
    raise UserError(f"no admin token: set ${TOKEN_ENV} or an admin line in [http] token_file")


async def _ask(url: str, token: str, body: dict[str, str], timeout: float) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    limit = aiohttp.ClientTimeout(total=timeout)
    async with (
        aiohttp.ClientSession(timeout=limit) as session,
        session.post(url, json=body or None, headers=headers) as resp,
    ):
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, {"error": text.strip()[:200]}


def cmd_drill(args: argparse.Namespace, out: TextIO) -> int:
    settings = discover_settings(args.config)
    base = _url(settings, args.url)
    body = {"destination": args.destination} if args.destination else {}
    try:
        status, data = asyncio.run(
            _ask(f"{base}/api/drills/{args.flow}", _token(settings), body, args.timeout)
        )
    except (aiohttp.ClientError, OSError) as exc:
        raise UserError(f"cannot reach the daemon at {base}: {exc} (is it running?)") from None
    except TimeoutError:
        raise UserError(f"no answer from the daemon within {args.timeout:g} s") from None
    if status != 200:
        raise UserError(f"the daemon refused the drill ({status}): {data.get('error', data)}")
    if args.json:
        out.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
    else:
        for r in data["results"]:
            verdict = "PASS" if r["passed"] else "FAIL"
            mode = " (trunk health only)" if r["mode"] == "health" else ""
            out.write(
                f"{verdict} {r['flow']}/{r['destination']} via {r['trunk']}{mode}: {r['reason']}\n"
            )
        if not data["results"]:
            out.write(f"flow {args.flow}: no forwarding destination to drill\n")
    return 0 if data["passed"] else 1
