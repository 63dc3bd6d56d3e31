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
    """Failed attempts by client address: past ``limit`` within ``window`` seconds, that
    address is refused (429) until its oldest failure leaves the window."""

    def __init__(self, clock: Callable[[], float], limit: int = 10, window: float = 300.0) -> None:
        self.clock = clock
        self.limit = limit
        self.window = window
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, client: str) -> deque[float]:
        times = self._failures.get(client)
        if times is None:
            return deque()
        cutoff = self.clock() - self.window
        while times and times[0] <= cutoff:
            times.popleft()
        if not times:
            del self._failures[client]
        return times

    def retry_after(self, client: str) -> float | None:
        """Seconds until ``client`` may try again, or None when it may now."""
        times = self._recent(client)
        if len(times) < self.limit:
            return None
        return max(1.0, times[0] + self.window - self.clock())

    def failed(self, client: str) -> None:
        if len(self._failures) > 10_000:  # a flood of addresses: forget the quiet ones
            for c in list(self._failures):
                self._recent(c)
        self._failures.setdefault(client, deque()).append(self.clock())


__all__ = ["SESSION_TTL", "Brake", "Session", "Sessions", "totp_code_ok"]
