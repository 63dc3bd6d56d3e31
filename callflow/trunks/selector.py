"""Trunk health and the failover policy built on it: pure state, no I/O but one file write.

Two objects, both driven by an injected clock so that tests never wait:

* ``TrunkHealth`` keeps what Asterisk's qualify (SIP OPTIONS) says about each watched trunk:
  the status of each of its contacts, folded into ``REACHABLE | UNREACHABLE | UNKNOWN``, the
  round-trip time, the time of the last change and a bounded history of changes.  It is fed
  ``ContactUpdate`` values (``callflow.ami.qualify`` turns AMI's ``ContactList`` and
  ``ContactStatus`` events into them) and knows nothing of AMI itself.
* ``HealthAwareSelector`` is the engine's ``TrunkSelector``: it orders a route's trunks by
  health and runs a circuit breaker per trunk fed by the results of real calls.

The failover rules (``HealthAwareSelector.candidates``):

1. Trunks keep the route's order within each class: REACHABLE first, then UNKNOWN (qualify
   off, not yet qualified, or no news): both are usable.
2. A trunk is *down* when qualify says UNREACHABLE, or when its breaker is open: it failed
   ``failure_threshold`` calls in a row with a trunk fault (``DialStatus.trunk_fault``).  An
   open breaker closes when qualify reports a contact of the trunk Reachable again, or, so
   that a trunk without qualify is not down forever, lets one trial call through once
   ``cooldown`` seconds have passed (half-open): a success closes it, a fault re-opens it.
3. An emergency route (``emergency=True``) tries every trunk before giving up: the usable
   ones first, then the down ones, each group in route order.
4. When no trunk of an ordinary route is usable, the trunks whose down state is *soft* are
   tried anyway as a last resort, in route order: an open breaker (indirect evidence: a few
   refused calls, e.g. a burst of 503s, say little about the next call), or UNREACHABLE
   learnt while the AMI feed was lost (the state may be stale).  A trunk that a *live*
   qualify reports UNREACHABLE is not tried: Asterisk itself has just seen it answer no SIP
   at all, so an INVITE would most likely wait out its timer (32 s) while the caller waits,
   and the flow's ``failed`` branch (a human by another path) is the better use of that
   time.  Only when nothing at all is left is the list empty; the engine then reports
   ``CHANUNAVAIL`` and the flow takes its ``failed`` branch: the call is never dropped.

Every change of state (qualify or breaker) is logged at WARNING and reported to the
subscribers of ``HealthAwareSelector.subscribe``; ``write_snapshot`` writes the current
``snapshot()`` as JSON, atomically, for ``callflow trunks`` (another process).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ..telephony import DialStatus
from .health import HealthChange, TrunkHealth, TrunkSnapshot, TrunkState

log = logging.getLogger("callflow.trunks")

#: Name of the snapshot file in ``[daemon] state_dir``.
SNAPSHOT_FILE: Final = "trunks.json"
#: Version of the snapshot file's layout.
SNAPSHOT_VERSION: Final = 1


@dataclass
class _Breaker:
    failures: int = 0
    opened_at: float | None = None  # monotonic time it (re-)opened; None while closed
    trial_at: float | None = None  # monotonic time a half-open trial call was let through

    @property
    def open(self) -> bool:
        return self.opened_at is not None


class HealthAwareSelector:
    """The engine's ``TrunkSelector``: health-ordered failover with a per-trunk breaker.

    See the module docstring for the rules.  ``monotonic`` (seconds) measures cool-downs;
    ``TrunkHealth``'s clock stamps changes.
    """

    def __init__(
        self,
        health: TrunkHealth,
        *,
        failure_threshold: int = 3,
        cooldown: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        if cooldown <= 0:
            raise ValueError("cooldown must be > 0")
        self.health = health
        self.failure_threshold = failure_threshold
        self.cooldown = cooldown
        self._monotonic = monotonic
        self._breakers: dict[str, _Breaker] = {}
        self._listeners: list[Callable[[], None]] = []
        health.subscribe(self._on_health)

    # -- TrunkSelector ---------------------------------------------------------------------

    def candidates(self, trunks: Sequence[str], *, emergency: bool) -> list[str]:
        now = self._monotonic()
        live = self.health.live
        reachable: list[str] = []
        unknown: list[str] = []
        soft_down: list[str] = []
        hard_down: list[str] = []
        for trunk in dict.fromkeys(trunks):
            state = self.health.state(trunk)
            if state is TrunkState.UNREACHABLE:
                (hard_down if live else soft_down).append(trunk)
            elif not self._breaker_allows(trunk, now):
                soft_down.append(trunk)
            elif state is TrunkState.REACHABLE:
                reachable.append(trunk)
            else:
                unknown.append(trunk)
        usable = reachable + unknown
        if emergency:
            down = set(soft_down) | set(hard_down)
            return usable + [t for t in dict.fromkeys(trunks) if t in down]
        if usable:
            return usable
        if soft_down:
            log.warning(
                "route %s: no usable trunk; trying %s as a last resort",
                ",".join(dict.fromkeys(trunks)),
                ",".join(soft_down),
            )
        return soft_down

    def report(self, trunk: str, status: DialStatus) -> None:
        b = self._breakers.setdefault(trunk, _Breaker())
        if status.trunk_fault:
            b.failures += 1
            if not b.open and b.failures >= self.failure_threshold:
                log.warning(
                    "trunk %s: breaker open after %d failures in a row (last %s); "
                    "down until qualify sees it back or %g s pass",
                    trunk,
                    b.failures,
                    status,
                    self.cooldown,
                )
            if b.open or b.failures >= self.failure_threshold:
                # Opens, or stays open after a failed trial: a new cool-down starts.
                b.opened_at = self._monotonic()
                b.trial_at = None
            self._changed()
            return
        # ANSWER, BUSY, NOANSWER, DECLINED: the far end answered something.
        if b.open:
            log.warning("trunk %s: breaker closed: a call went through (%s)", trunk, status)
        if b.failures or b.open:
            self._breakers[trunk] = _Breaker()
            self._changed()

    # -- breaker ---------------------------------------------------------------------------

    def _breaker_allows(self, trunk: str, now: float) -> bool:
        """True when the breaker is closed, or half-open with the trial slot free (this
        takes it: the next trial waits another cool-down unless a result comes first)."""
        b = self._breakers.get(trunk)
        if b is None or b.opened_at is None:
            return True
        if now - b.opened_at < self.cooldown:
            return False
        if b.trial_at is not None and now - b.trial_at < self.cooldown:
            return False
        b.trial_at = now
        log.warning("trunk %s: breaker half-open: letting one trial call through", trunk)
        return True

    def breaker_open(self, trunk: str) -> bool:
        b = self._breakers.get(trunk)
        return b is not None and b.open

    def consecutive_failures(self, trunk: str) -> int:
        b = self._breakers.get(trunk)
        return b.failures if b else 0

    def _on_health(self, change: HealthChange) -> None:
        if change.recovered:
            b = self._breakers.get(change.trunk)
            if b is not None and (b.open or b.failures):
                if b.open:
                    log.warning("trunk %s: breaker closed: qualify sees it reachable", change.trunk)
                self._breakers[change.trunk] = _Breaker()
        self._changed()

    # -- snapshot and subscribers ----------------------------------------------------------

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every change of a trunk's state or breaker, e.g. to
        ``write_snapshot``; a listener's exception is logged, never raised into a call."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            try:
                listener()
            except Exception:
                log.exception("trunk selector: a change listener failed")

    def snapshot(self) -> list[TrunkSnapshot]:
        """Every watched trunk (then any other trunk a call reported on), in order."""
        names = list(dict.fromkeys([*self.health.trunks, *self._breakers]))
        return [
            TrunkSnapshot(
                name=name,
                state=self.health.state(name),
                rtt_ms=self.health.rtt_ms(name),
                last_change=self.health.last_change(name),
                consecutive_failures=self.consecutive_failures(name),
                breaker_open=self.breaker_open(name),
            )
            for name in names
        ]

    def snapshot_json(self) -> dict[str, Any]:
        """``snapshot()`` as the JSON document ``write_snapshot`` writes."""
        return {
            "version": SNAPSHOT_VERSION,
            "written_at": self.health.clock().isoformat(),
            "pid": os.getpid(),
            "live": self.health.live,
            "trunks": [s.to_json() for s in self.snapshot()],
        }

    def write_snapshot(self, path: Path) -> None:
        """Write ``snapshot_json()`` to ``path`` atomically (a temporary file in the same
        folder, then a rename), creating the folder.  Raises ``OSError``."""
        data = json.dumps(self.snapshot_json(), ensure_ascii=False, indent=2) + "\n"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)  # not secret; the CLI may run as another user
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def read_snapshot(path: Path) -> dict[str, Any]:
    """Load a snapshot file written by ``write_snapshot``.

    Raises ``FileNotFoundError`` when there is none and ``ValueError`` when it is not one.
    """
    data = json.loads(path.read_text(encoding="utf-8"))
    if (
        not isinstance(data, dict)
        or data.get("version") != SNAPSHOT_VERSION
        or not isinstance(data.get("trunks"), list)
        or not all(isinstance(t, dict) and isinstance(t.get("name"), str) for t in data["trunks"])
    ):
        raise ValueError(f"{path} is not a trunk snapshot (version {SNAPSHOT_VERSION})")
    return data
