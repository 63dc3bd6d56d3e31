"""Who may use the admin API, with which role: per-person staff accounts and service tokens.

Two files, both optional, both re-read on SIGHUP (``Credentials.replace``):

* ``[http] accounts_file`` (TOML), one table per person, written by ``callflow account add``::

      [accounts.marie]
      role = "secretariat"            # or "admin"
      token_sha256 = "9f86d0…"        # the file never holds a usable token
      totp_secret = "JBSWY3DPEHPK3PXP"  # RFC 6238 second factor (an authenticator app)
      flows = ["cabinet-du-parc"]     # optional: the practices (flows) it may see; absent:
                                      # all of them (the behaviour before scopes existed)

  A staff account logs in at ``POST /api/login`` with its token *and* a TOTP code, and gets a
  session; its token alone opens nothing else.
* ``[http] token_file``: service tokens for scripts and monitoring, one a line,
  ``name:token``, ``name:role:token`` or a bare token (named "admin").  A service token is a
  bearer on its own and has no second factor, so keep it on the machines that need it.

The acting person is always the credential's name: no header or body can choose it.
Roles are ordered: an admin may do all a secretariat may.  A *scoped* account (``flows``)
sees and acts on its practices' calls, callbacks and calendars only (``Scope``); what
concerns every practice (reloads, the audit trail) needs a global admin.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import stat
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from ..errors import SettingsError

log = logging.getLogger("callflow.api")

MIN_TOKEN = 16
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
FLOW = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # a flow's name, as scopes list it
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_BASE32 = re.compile(r"^[A-Z2-7]{16,128}$")


class Role(StrEnum):
    SECRETARIAT = "secretariat"  # the callback queue and the calendars
    ADMIN = "admin"  # and reloads, the call log, the audit trail

    def allows(self, needed: Role) -> bool:
        return _RANK[self] >= _RANK[needed]


_RANK = {Role.SECRETARIAT: 1, Role.ADMIN: 2}


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Scope:
    """The practices (flows) a credential may see: ``flows`` None is every one."""

    flows: frozenset[str] | None = None

    @property
    def is_global(self) -> bool:
        return self.flows is None

    def allows(self, flow: str) -> bool:
        return self.flows is None or flow in self.flows

    def __str__(self) -> str:
        return "all flows" if self.flows is None else ", ".join(sorted(self.flows))


GLOBAL = Scope()


@dataclass(frozen=True)
class Account:
    """One credential.  ``totp_secret`` set: a person, who needs a session to act."""

    name: str
    role: Role
    token_sha256: str
    totp_secret: str | None = None
    scope: Scope = GLOBAL

    @property
    def needs_second_factor(self) -> bool:
        return self.totp_secret is not None


class Credentials:
    """The accounts in force now; ``replace`` swaps them whole (SIGHUP)."""

    def __init__(self, accounts: Iterable[Account] = ()) -> None:
        self._accounts: dict[str, Account] = {}
        self.replace(accounts)

    @classmethod
    def of_tokens(cls, tokens: Mapping[str, str], role: Role = Role.ADMIN) -> Credentials:
        """Service tokens by name, all with ``role`` (tests and simple set-ups)."""
        return cls(Account(n, role, digest(t)) for n, t in tokens.items())

    def replace(self, accounts: Iterable[Account]) -> None:
        new: dict[str, Account] = {}
        for account in accounts:
            if account.name in new:
                raise SettingsError(f"account {account.name!r} is given twice")
            new[account.name] = account
        self._accounts = new

    def __len__(self) -> int:
        return len(self._accounts)

    def get(self, name: str) -> Account | None:
        return self._accounts.get(name)

    def by_token(self, token: str) -> Account | None:
        """The account whose token is ``token``: every digest compared, no early exit."""
        offered = digest(token)
        found = None
        for account in self._accounts.values():
            if hmac.compare_digest(offered, account.token_sha256):
                found = account
        return found


def _check_private(path: Path, what: str) -> None:
    st = path.stat()
    # A file of its own that others may read: say so.  (A docker secret belongs to root and
    # must be readable by the daemon's user: no warning then.)
    if st.st_uid == os.getuid() and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s %s is readable by others: chmod 600 it", what, path)


def load_tokens(path: Path) -> list[Account]:
    """The service tokens of ``path``.  Raises ``SettingsError`` naming the line at fault."""
    try:
        text = path.read_text(encoding="utf-8")
        _check_private(path, "[http] token_file")
    except OSError as exc:
        raise SettingsError(f"[http] token_file {path}: cannot read: {exc.strerror}") from None
    accounts: list[Account] = []
    names: set[str] = set()
    digests: set[str] = set()
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"[http] token_file {path}:{n}"
        name, sep, token = line.partition(":")
        if not sep:
            name, token = "admin", line
        role = Role.ADMIN
        head, sep, rest = token.partition(":")
        if sep and head.strip() in Role.__members__.values():
            role, token = Role(head.strip()), rest
        name, token = name.strip(), token.strip()
        if not NAME.match(name):
            raise SettingsError(f"{where}: bad token name {name!r} (letters, digits, ._@-)")
        if len(token) < MIN_TOKEN or any(c.isspace() for c in token):
            raise SettingsError(
                f"{where}: a token is at least {MIN_TOKEN} characters without spaces "
                "(e.g. openssl rand -hex 24)"
            )
        if name in names:
            raise SettingsError(f"{where}: token name {name!r} given twice")
        if digest(token) in digests:
            raise SettingsError(f"{where}: the same token is given twice")
        names.add(name)
        digests.add(digest(token))
        accounts.append(Account(name, role, digest(token)))
    if not accounts:
        raise SettingsError(f"[http] token_file {path}: no token in it")
    return accounts


def load_accounts(path: Path) -> list[Account]:
    """The staff accounts of the TOML file ``path``; ``SettingsError`` names the one at fault."""
    try:
        raw = path.read_bytes()
        _check_private(path, "[http] accounts_file")
    except OSError as exc:
        raise SettingsError(f"[http] accounts_file {path}: cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"[http] accounts_file {path}: {exc}") from None
    table = data.get("accounts", {})
    if set(data) - {"accounts"} or not isinstance(table, dict):
        raise SettingsError(f"[http] accounts_file {path}: only [accounts.NAME] tables belong here")
    accounts = []
    for name, entry in table.items():
        where = f"[http] accounts_file {path}: [accounts.{name}]"
        if not NAME.match(name):
            raise SettingsError(f"{where}: bad name (letters, digits, ._@-)")
        keys = {"role", "token_sha256", "totp_secret"}
        if not isinstance(entry, dict) or not keys <= set(entry) <= keys | {"flows"}:
            raise SettingsError(f"{where}: expected role, token_sha256, totp_secret (and flows)")
        role, token_sha256, secret = entry["role"], entry["token_sha256"], entry["totp_secret"]
        scope = _scope(entry.get("flows"), where)
        if role not in Role.__members__.values():
            raise SettingsError(f"{where}: role must be one of {', '.join(Role)}")
        if not isinstance(token_sha256, str) or not _HEX64.match(token_sha256):
            raise SettingsError(f"{where}: token_sha256 must be 64 hex digits")
        if not isinstance(secret, str) or not _BASE32.match(secret):
            raise SettingsError(f"{where}: totp_secret must be base32 (A-Z, 2-7), 16+ chars")
        accounts.append(Account(name, Role(role), token_sha256, secret, scope))
    return accounts


def _scope(flows: object, where: str) -> Scope:
    if flows is None:
        return GLOBAL
    if (
        not isinstance(flows, list)
        or not flows
        or not all(isinstance(f, str) and FLOW.match(f) for f in flows)
    ):
        raise SettingsError(f"{where}: flows must be a non-empty list of flow names")
    return Scope(frozenset(flows))


def account_entry(account: Account) -> str:
    """``account`` as the TOML table ``load_accounts`` reads (names and values are checked
    by construction: no quoting can break out)."""
    assert NAME.match(account.name) and account.totp_secret is not None
    flows = account.scope.flows
    assert flows is None or all(FLOW.match(f) for f in flows)
    quoted = ", ".join('"' + f + '"' for f in sorted(flows or ()))
    scope = "" if flows is None else f"flows = [{quoted}]\n"
    return (
        f'\n[accounts."{account.name}"]\n'
        f'role = "{account.role}"\n'
        f'token_sha256 = "{account.token_sha256}"\n'
        f'totp_secret = "{account.totp_secret}"\n'
        f"{scope}"
    )


__all__ = [
    "FLOW",
    "GLOBAL",
    "MIN_TOKEN",
    "Account",
    "Credentials",
    "Role",
    "Scope",
    "account_entry",
    "digest",
    "load_accounts",
    "load_tokens",
]
