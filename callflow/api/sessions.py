"""Logging a person in: the TOTP second factor, the sessions it opens, and the brake on
failed attempts.

A session lives ``ttl`` seconds from its login (a working day by default) and only while
its account is unchanged: an account removed or given a new token or role on SIGHUP loses
its sessions at their next use.  A TOTP code is accepted once (no replay within its window).
Sessions live in memory: a restart asks everyone to log in again, which is the safe side.
"""

from __future__ import annotations

import hmac
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import pyotp

from .accounts import Account, Credentials

SESSION_TTL = 10 * 3600.0


def totp_code_ok(account: Account, code: str, now: datetime, last_step: int | None) -> int | None:
    """The time step ``code`` belongs to (this one, or one either side for clock drift),
    if it is right for ``account`` and newer than ``last_step``; else None."""
    if account.totp_secret is None or not (code.isdigit() and len(code) == 6):
        return None
    totp = pyotp.TOTP(account.totp_secret)
    step = totp.timecode(now)
    found = None
    for offset in (-1, 0, 1):
        if hmac.compare_digest(totp.generate_otp(step + offset), code):
            found = step + offset
    if found is None or (last_step is not None and found <= last_step):
        return None
    return found


@dataclass(frozen=True)
class Session:
    account: Account
    expires: float


class Sessions:
    """Open sessions by their (random) bearer, checked against the credentials in force."""

    def __init__(
        self, credentials: Credentials, clock: Callable[[], float], ttl: float = SESSION_TTL
    ) -> None:
        self.credentials = credentials
        self.clock = clock
        self.ttl = ttl
        self._open: dict[str, Session] = {}
        self._last_step: dict[str, int] = {}

    def login(self, name: str, token: str, code: str, now: datetime) -> tuple[str, Session] | None:
        """A new session for a person whose token and code are right; None otherwise."""
        account = self.credentials.by_token(token)
        if account is None or account.name != name or not account.needs_second_factor:
            return None
        step = totp_code_ok(account, code, now, self._last_step.get(name))
        if step is None:
            return None
        self._last_step[name] = step
        self._expire()
        bearer = secrets.token_urlsafe(32)
        session = Session(account, self.clock() + self.ttl)
        self._open[bearer] = session
        return bearer, session

    def get(self, bearer: str) -> Account | None:
        session = self._open.get(bearer)
        if session is None:
            return None
        if session.expires <= self.clock() or self.credentials.get(session.account.name) != (
            session.account
        ):
            del self._open[bearer]
            return None
        return session.account

    def logout(self, bearer: str) -> None:
        self._open.pop(bearer, None)

    def _expire(self) -> None:
        now = self.clock()
        for bearer in [b for b, s in self._open.items() if s.expires <= now]:
            del self._open[bearer]

    def __len__(self) -> int:
        return len(self._open)


class Brake:
    """The brake on guessing, by client address.

    Only guesses count: a wrong name, token or code at the login, counted per (address,
    name) up to ``limit`` and per address up to ``address_limit`` (a practice's NAT holds
    several people mistyping a code), and a bearer that is neither a session nor a token,
    counted per address up to ``address_limit``, each distinct bearer once in the
    ``window``.  Past a limit that kind of attempt is refused (429) until its oldest
    failure leaves the window.  The caller checks a bearer before asking the brake: a
    valid session or token is never braked (see ``http.auth_middleware``).
    """

    def __init__(
        self,
        clock: Callable[[], float],
        limit: int = 10,
        window: float = 300.0,
        address_limit: int = 30,
    ) -> None:
        self.clock = clock
        self.limit = limit
        self.address_limit = address_limit
        self.window = window
        #: key -> (time, what was guessed: a digest, so that a repeat is not counted)
        self._failures: dict[tuple[str, ...], deque[tuple[float, str]]] = {}

    def _recent(self, key: tuple[str, ...]) -> deque[tuple[float, str]]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        cutoff = self.clock() - self.window
        while times and times[0][0] <= cutoff:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def _wait(self, key: tuple[str, ...], limit: int) -> float | None:
        times = self._recent(key)
        if len(times) < limit:
            return None
        return max(1.0, times[0][0] + self.window - self.clock())

    def _count(self, key: tuple[str, ...], limit: int, what: str) -> None:
        if len(self._failures) > 10_000:  # a flood of addresses: forget the quiet ones
            for k in list(self._failures):
                self._recent(k)
        times = self._recent(key)
        if len(times) >= limit or any(w == what for _, w in times):
            return  # braked already (bounded memory), or the same guess again
        self._failures.setdefault(key, times).append((self.clock(), what))

    def login_wait(self, client: str, name: str) -> float | None:
        """Seconds until ``client`` may try to log in as ``name`` again, or None: now."""
        waits = [
            w
            for w in (
                self._wait(("login", client, name), self.limit),
                self._wait(("login", client), self.address_limit),
            )
            if w is not None
        ]
        return max(waits) if waits else None

    def login_failed(self, client: str, name: str, what: str) -> None:
        """A wrong login; ``what`` identifies the guess (a digest, never the secret)."""
        self._count(("login", client, name), self.limit, what)
        self._count(("login", client), self.address_limit, what)

    def bearer_wait(self, client: str) -> float | None:
        """Seconds until ``client``'s unknown bearers are answered 401 again, or None."""
        return self._wait(("bearer", client), self.address_limit)

    def bearer_failed(self, client: str, what: str) -> None:
        """An unknown bearer; ``what`` is its digest (the same one counts once)."""
        self._count(("bearer", client), self.address_limit, what)


__all__ = ["SESSION_TTL", "Brake", "Session", "Sessions", "totp_code_ok"]
