"""``callflow account``: staff accounts of the admin API (``[http] accounts_file``).

``add`` draws the person's token and TOTP secret, writes only the token's digest and the
secret to the file (created owner-only), and prints both once, with the ``otpauth://`` link an
authenticator app reads.  ``remove`` and ``list`` need no secret.  The daemon picks the
change up on SIGHUP.
"""

from __future__ import annotations

import argparse
import secrets
from pathlib import Path
from typing import Any, TextIO

import pyotp

from ..errors import UserError
from ..files import write_private
from ..settings import discover_settings
from .accounts import (
    FLOW,
    GLOBAL,
    NAME,
    Account,
    Role,
    Scope,
    account_entry,
    digest,
    load_accounts,
)


def add_commands(sub: Any) -> None:
    a = sub.add_parser("account", help="staff accounts of the admin API and the page")
    asub = a.add_subparsers(dest="account_command", required=True, metavar="ACTION")
    add = asub.add_parser("add", help="create an account; prints its token and TOTP secret once")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--role", choices=[str(r) for r in Role], required=True)
    add.add_argument(
        "--flow",
        action="append",
        metavar="FLOW",
        help="a practice (flow) the account may see; repeat for several; none: every flow",
    )
    rm = asub.add_parser("remove", help="delete an account (its sessions end at the reload)")
    rm.add_argument("name", metavar="NAME")
    ls = asub.add_parser("list", help="the accounts and their roles")
    for p in (add, rm, ls):
        p.add_argument(
            "--file", type=Path, help="the accounts file (default: [http] accounts_file)"
        )
        p.add_argument("--config", type=Path, metavar="FILE", help="settings file (TOML)")
    add.set_defaults(func=cmd_add)
    rm.set_defaults(func=cmd_remove)
    ls.set_defaults(func=cmd_list)


def _file(args: argparse.Namespace) -> Path:
    if args.file is not None:
        path: Path = args.file
        return path
    settings = discover_settings(args.config)
    if settings.http.accounts_file is None:
        raise UserError("no accounts file: give --file, or set [http] accounts_file")
    return settings.resolve(settings.http.accounts_file)


def _read(path: Path) -> list[Account]:
    return load_accounts(path) if path.exists() else []


def _write(path: Path, accounts: list[Account]) -> None:
    text = "# callflow staff accounts: `callflow account add|remove`, then SIGHUP the daemon.\n"
    text += "".join(account_entry(a) for a in accounts)
    write_private(path, text)


def cmd_add(args: argparse.Namespace, out: TextIO) -> int:
    name: str = args.name
    if not NAME.match(name):
        raise UserError(f"bad account name {name!r} (letters, digits, ._@-; 64 at most)")
    path = _file(args)
    accounts = _read(path)
    if any(a.name == name for a in accounts):
        raise UserError(f"{path}: account {name!r} exists (remove it first)")
    flows: list[str] = args.flow or []
    bad = [f for f in flows if not FLOW.match(f)]
    if bad:
        raise UserError(f"bad flow name {bad[0]!r} (letters, digits, ._-)")
    scope = Scope(frozenset(flows)) if flows else GLOBAL
    token = secrets.token_hex(24)
    secret = pyotp.random_base32()
    accounts.append(Account(name, Role(args.role), digest(token), secret, scope))
    _write(path, accounts)
    uri = pyotp.TOTP(secret).provisioning_uri(name=name, issuer_name="callflow")
    print(f"account {name} ({args.role}, {scope}) added to {path}", file=out)
    print("Give these to the person, privately; they are shown only now:", file=out)
    print(f"  token:       {token}", file=out)
    print(f"  TOTP secret: {secret}", file=out)
    print(f"  TOTP link:   {uri}", file=out)
    print("Then reload the daemon (systemctl reload callflow, or SIGHUP).", file=out)
    return 0


def cmd_remove(args: argparse.Namespace, out: TextIO) -> int:
    path = _file(args)
    accounts = _read(path)
    kept = [a for a in accounts if a.name != args.name]
    if len(kept) == len(accounts):
        raise UserError(f"{path}: no account {args.name!r}")
    _write(path, kept)
    print(f"account {args.name} removed from {path}; reload the daemon", file=out)
    return 0


def cmd_list(args: argparse.Namespace, out: TextIO) -> int:
    for a in _read(_file(args)):
        print(f"{a.name}\t{a.role}\t{a.scope}", file=out)
    return 0


__all__ = ["add_commands"]
