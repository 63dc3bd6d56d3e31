"""Trunk health: what Asterisk's qualify (SIP OPTIONS) says about each watched trunk.

``TrunkHealth`` folds the status of each contact of a trunk into ``REACHABLE |
UNREACHABLE | UNKNOWN``, with the round-trip time, the time of the last change and a
bounded history of changes.  It is fed ``ContactUpdate`` values (``callflow.ami.qualify``
turns AMI's ``ContactList`` and ``ContactStatus`` events into them), knows nothing of AMI
itself, and is driven by an injected clock so that tests never wait.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

log = logging.getLogger("callflow.trunks")


def _utc_now() -> datetime:
    return datetime.now(UTC)


class TrunkState(StrEnum):
    REACHABLE = "reachable"
    UNREACHABLE = "unreachable"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class ContactUpdate:
    """What Asterisk says about one contact (a SIP URI) of an AOR.

    ``endpoint`` is the endpoint Asterisk named with it ('' when it named none: a static
    contact in a ``ContactList`` event).  ``removed`` means the contact is gone.
    """

    aor: str
    uri: str
    state: TrunkState = TrunkState.UNKNOWN
    rtt_ms: float | None = None
    endpoint: str = ""
    removed: bool = False


@dataclass(frozen=True)
class TrunkChange:
    """One entry of a trunk's history."""

    at: datetime
    old: TrunkState
    new: TrunkState
    rtt_ms: float | None
    source: str  # "qualify" (a live event) or "resync" (a full listing)


@dataclass(frozen=True)
class HealthChange:
    """What ``TrunkHealth`` tells its subscribers.

    ``old != new`` for a change of the trunk's state.  ``recovered`` is True when qualify
    has just seen a contact of the trunk become Reachable (the trunk's state may stay the
    same when another contact already was): the signal that closes an open breaker.
    """

    trunk: str
    old: TrunkState
    new: TrunkState
    rtt_ms: float | None
    recovered: bool


@dataclass(frozen=True)
class TrunkSnapshot:
    name: str
    state: TrunkState
    rtt_ms: float | None
    last_change: datetime | None
    consecutive_failures: int
    breaker_open: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": str(self.state),
            "rtt_ms": self.rtt_ms,
            "last_change": self.last_change.isoformat() if self.last_change else None,
            "consecutive_failures": self.consecutive_failures,
            "breaker_open": self.breaker_open,
        }


def _fmt_rtt(rtt_ms: float | None) -> str:
    return "n/a" if rtt_ms is None else f"{rtt_ms:.1f} ms"


@dataclass
class _Trunk:
    state: TrunkState = TrunkState.UNKNOWN
    rtt_ms: float | None = None
    last_change: datetime | None = None
    history: deque[TrunkChange] = field(default_factory=deque)


class TrunkHealth:
    """Qualify state of the watched trunks (PJSIP endpoint names), from contact updates.

    A trunk's contacts are those of its AORs: by default the AOR of the same name (the usual
    ``[trunk-a] type=aor``); ``resync(..., aors=)`` and updates that name the endpoint teach
    others.  A trunk is REACHABLE if any contact is, UNREACHABLE if it has contacts and all
    are unreachable, UNKNOWN otherwise (no contact, or qualify off / not yet done).
    Updates about other endpoints are ignored.

    ``clock`` stamps changes; ``history`` bounds each trunk's history; ``quiet`` logs
    changes at DEBUG instead of WARNING (for a one-off listing: ``callflow trunks --live``).
    """

    def __init__(
        self,
        trunks: Iterable[str],
        *,
        clock: Callable[[], datetime] = _utc_now,
        history: int = 50,
        quiet: bool = False,
    ) -> None:
        if history < 1:
            raise ValueError("history must be >= 1")
        self.clock = clock
        self._quiet = quiet
        self._history = history
        self._trunks: dict[str, _Trunk] = {}
        self._aors: dict[str, set[str]] = {}
        # Contacts by AOR then URI; only AORs of watched trunks are kept.
        self._contacts: dict[str, dict[str, ContactUpdate]] = {}
        self._listeners: list[Callable[[HealthChange], None]] = []
        self._live = False
        self.set_trunks(trunks)

    # -- the watched set -------------------------------------------------------------------

    @property
    def trunks(self) -> tuple[str, ...]:
        return tuple(self._trunks)

    def set_trunks(self, trunks: Iterable[str]) -> None:
        """Watch exactly ``trunks`` (e.g. after a flow reload); new ones start UNKNOWN."""
        wanted = list(dict.fromkeys(trunks))
        self._trunks = {t: self._trunks.get(t) or self._new_trunk() for t in wanted}
        self._aors = {t: self._aors.get(t, {t}) for t in wanted}
        kept = self._watched_aors()
        self._contacts = {a: c for a, c in self._contacts.items() if a in kept}

    def _new_trunk(self) -> _Trunk:
        return _Trunk(history=deque(maxlen=self._history))

    def _watched_aors(self) -> set[str]:
        return set().union(*self._aors.values()) if self._aors else set()

    # -- feed status -----------------------------------------------------------------------

    @property
    def live(self) -> bool:
        """True while the feed (AMI) is connected and has listed the contacts since."""
        return self._live

    def set_live(self, live: bool) -> None:
        if live != self._live:
            self._live = live
            if not self._quiet:
                log.info("trunk health: feed %s", "live" if live else "lost (states may be stale)")

    # -- subscribers -----------------------------------------------------------------------

    def subscribe(self, listener: Callable[[HealthChange], None]) -> None:
        """Call ``listener`` after each change (a listener's exception is logged, not raised)."""
        self._listeners.append(listener)

    def _notify(self, change: HealthChange) -> None:
        for listener in self._listeners:
            try:
                listener(change)
            except Exception:
                log.exception("trunk health: a change listener failed")

    # -- reading ---------------------------------------------------------------------------

    def state(self, trunk: str) -> TrunkState:
        t = self._trunks.get(trunk)
        return t.state if t else TrunkState.UNKNOWN

    def rtt_ms(self, trunk: str) -> float | None:
        t = self._trunks.get(trunk)
        return t.rtt_ms if t else None

    def last_change(self, trunk: str) -> datetime | None:
        t = self._trunks.get(trunk)
        return t.last_change if t else None

    def history(self, trunk: str) -> list[TrunkChange]:
        """The trunk's last changes, oldest first (at most ``history`` of them)."""
        t = self._trunks.get(trunk)
        return list(t.history) if t else []

    def aors(self, trunk: str) -> frozenset[str]:
        return frozenset(self._aors.get(trunk, ()))

    def contacts(self, trunk: str) -> list[ContactUpdate]:
        return [c for aor in sorted(self._aors.get(trunk, ())) for c in self._aor_contacts(aor)]

    def _aor_contacts(self, aor: str) -> list[ContactUpdate]:
        return list(self._contacts.get(aor, {}).values())

    # -- feeding ---------------------------------------------------------------------------

    def apply(self, update: ContactUpdate) -> None:
        """One live change of one contact (an AMI ``ContactStatus`` event)."""
        if update.endpoint in self._trunks and update.aor not in self._aors[update.endpoint]:
            self._aors[update.endpoint].add(update.aor)
        if update.aor not in self._watched_aors():
            return
        contacts = self._contacts.setdefault(update.aor, {})
        before = contacts.get(update.uri)
        if update.removed:
            contacts.pop(update.uri, None)
        else:
            contacts[update.uri] = update
        became_reachable = update.state is TrunkState.REACHABLE and (
            before is None or before.state is not TrunkState.REACHABLE
        )
        for trunk, aors in self._aors.items():
            if update.aor in aors:
                self._refresh(trunk, "qualify", recovered=became_reachable and not update.removed)

    def resync(
        self,
        contacts: Iterable[ContactUpdate],
        *,
        aors: Mapping[str, Iterable[str]] | None = None,
        live: bool = True,
    ) -> None:
        """Replace every watched contact with a full listing (AMI ``PJSIPShowContacts``).

        ``aors`` maps endpoint names to their AORs (AMI ``PJSIPShowEndpoints``); watched
        trunks missing from it keep what they had.  Contacts missing from the listing are
        gone.  Sets the feed ``live`` (False: the feed dropped just after the listing).
        """
        if aors is not None:
            for trunk in self._trunks:
                if trunk in aors:
                    self._aors[trunk] = set(aors[trunk])
        items = list(contacts)
        for c in items:
            if c.endpoint in self._trunks:
                self._aors[c.endpoint].add(c.aor)
        watched = self._watched_aors()
        fresh: dict[str, dict[str, ContactUpdate]] = {}
        for c in items:
            if c.aor in watched and not c.removed:
                fresh.setdefault(c.aor, {})[c.uri] = c
        old = self._contacts
        self._contacts = fresh
        self.set_live(live)
        for trunk, trunk_aors in self._aors.items():
            was = _reachable(old, trunk_aors)
            now = _reachable(fresh, trunk_aors)
            self._refresh(trunk, "resync", recovered=bool(now - was))

    def _refresh(self, trunk: str, source: str, *, recovered: bool) -> None:
        t = self._trunks[trunk]
        contacts = [c for aor in self._aors[trunk] for c in self._aor_contacts(aor)]
        reachable = [c for c in contacts if c.state is TrunkState.REACHABLE]
        if reachable:
            new = TrunkState.REACHABLE
            rtts = [c.rtt_ms for c in reachable if c.rtt_ms is not None]
            rtt = min(rtts) if rtts else None
        elif contacts and all(c.state is TrunkState.UNREACHABLE for c in contacts):
            new, rtt = TrunkState.UNREACHABLE, None
        else:
            new, rtt = TrunkState.UNKNOWN, None
        old = t.state
        t.rtt_ms = rtt
        if new is not old:
            now = self.clock()
            t.state = new
            t.last_change = now
            t.history.append(TrunkChange(now, old, new, rtt, source))
            log.log(
                logging.DEBUG if self._quiet else logging.WARNING,
                "trunk %s: %s → %s (rtt %s)",
                trunk,
                old,
                new,
                _fmt_rtt(rtt),
            )
        if new is not old or recovered:
            self._notify(HealthChange(trunk, old, new, rtt, recovered))


def _reachable(
    contacts: Mapping[str, Mapping[str, ContactUpdate]], aors: Iterable[str]
) -> set[tuple[str, str]]:
    return {
        (aor, uri)
        for aor in aors
        for uri, c in contacts.get(aor, {}).items()
        if c.state is TrunkState.REACHABLE
    }
