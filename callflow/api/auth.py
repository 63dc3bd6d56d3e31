"""Bearer tokens of the admin API, and who is acting (for the audit trail).

The token file (``[http] token_file``) holds one token a line, ``name:token`` or a bare
token (named "admin"); blank lines and ``#`` comments are ignored.  Each token is at least
16 characters (``openssl rand -hex 24``).  A request is let in when its
``Authorization: Bearer <token>`` matches one of them (constant-time comparison); it then
acts as the token's name.  An ``X-Callflow-User`` header (the practice page sends the name
typed at login) adds who, within that token, did it: ``secretariat/Marie``.  The header is
declarative (anyone holding the token can write any name); the token's name is not.

Without tokens (no ``token_file``) every ``/api/`` route is refused with 401: secure by
default.  ``/healthz``, ``/metrics`` and the page's static files need no token (they
hold no personal data; the page calls the API with the token typed at login).
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote

from ..errors import SettingsError

log = logging.getLogger("callflow.api")

MIN_TOKEN = 16
USER_HEADER = "X-Callflow-User"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_MAX_USER = 64


def load_tokens(path: Path) -> dict[str, str]:
    """Tokens by name from ``path``.  Raises ``SettingsError`` naming the line at fault."""
    try:
        text = path.read_text(encoding="utf-8")
        st = path.stat()
    except OSError as exc:
        raise SettingsError(f"[http] token_file {path}: cannot read: {exc.strerror}") from None
    # A file of its own that others may read: say so.  (A docker secret belongs to root and
    # must be readable by the daemon's user: no warning then.)
    if st.st_uid == os.getuid() and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("[http] token_file %s is readable by others: chmod 600 it", path)
    tokens: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, token = line.partition(":")
        if not sep:
            name, token = "admin", line
        name, token = name.strip(), token.strip()
        where = f"[http] token_file {path}:{n}"
        if not _NAME.match(name):
            raise SettingsError(f"{where}: bad token name {name!r} (letters, digits, ._@-)")
        if len(token) < MIN_TOKEN or any(c.isspace() for c in token):
            raise SettingsError(
                f"{where}: a token is at least {MIN_TOKEN} characters without spaces "
                "(e.g. openssl rand -hex 24)"
            )
        if name in tokens:
            raise SettingsError(f"{where}: token name {name!r} given twice")
        if token in tokens.values():
            raise SettingsError(f"{where}: the same token is given twice")
        tokens[name] = token
    if not tokens:
        raise SettingsError(f"[http] token_file {path}: no token in it")
    return tokens


def token_name(tokens: Mapping[str, str], authorization: str | None) -> str | None:
    """The name of the token in an ``Authorization: Bearer`` header, or None."""
    if not authorization:
        return None
    scheme, _, given = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return None
    offered = given.strip().encode()
    found = None
    for name, token in tokens.items():  # every token compared: no early exit to time
        if hmac.compare_digest(offered, token.encode()):
            found = name
    return found


def acting_user(name: str, header: str | None) -> str:
    """``name``, or ``name/user`` with the (cleaned) ``X-Callflow-User`` header.

    The header is percent-encoded UTF-8 (``encodeURIComponent``): HTTP headers cannot
    carry any other text safely."""
    text = unquote(header or "", errors="replace")
    user = "".join(c for c in text if c.isprintable() and c not in "/\\").strip()
    user = user[:_MAX_USER]
    return f"{name}/{user}" if user else name


__all__ = ["MIN_TOKEN", "USER_HEADER", "acting_user", "load_tokens", "token_name"]
