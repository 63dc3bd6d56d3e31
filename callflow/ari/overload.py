"""Overload shedding: is the daemon too far behind to take one more call?

A caller must never wait in silence for the daemon.  When it is behind, a new call is
better served by the dialplan fallback (which rings the practice's phones on its own) than
by a flow whose prompts would come seconds late.  Three signals say "behind", each with its
budget (``[overload]`` of ``callflow.toml``):

* ``in_flight``: ARI requests sent and not yet answered (Asterisk or our pool is saturated),
  once over its budget for ``in_flight_for`` seconds: at 200 calls/s a hundred requests
  wait at any time, and a burst Asterisk absorbs in a tenth of a second is no overload
  (shedding for one sent hundreds of calls to the fallback that the reference app served);
* ``answer_latency``: the worst time, among the calls answered lately, from a call's
  arrival in Stasis to Asterisk's answer;
* ``loop_lag``: how late the event loop wakes up (it is busy or starved of CPU).

Hysteresis keeps the decision from flapping: shedding starts when any signal exceeds its
budget, and stops only once every signal is back under ``resume_ratio`` of its budget *and*
shedding has lasted ``hold`` seconds.  This module is pure: no I/O, no clock of its own
(the caller passes ``now``), so it is tested without waiting.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "Budgets",
    "Governor",
    "LatencyWindow",
    "Load",
    "Reason",
    "Shedder",
    "go_first",
    "goes_first",
]

# True in the task of a call whose ARI requests go before the others' (an emergency).  A
# context variable, so it belongs to that call's task alone (each task runs in its own
# copy of the context) and flows into the helper tasks the call starts afterwards.
_FIRST: ContextVar[bool] = ContextVar("callflow_goes_first", default=False)


def go_first() -> None:
    """From now on, the ARI requests of the current task (a call) skip the queue."""
    _FIRST.set(True)


def goes_first() -> bool:
    return _FIRST.get()


class Reason(StrEnum):
    """Why calls are shed: the signal that went over its budget (a metric label)."""

    IN_FLIGHT = "in_flight"
    ANSWER_LATENCY = "answer_latency"
    LOOP_LAG = "loop_lag"


@dataclass(frozen=True)
class Budgets:
    """How far behind the daemon may fall before it sheds new calls."""

    max_in_flight: int = 400  # ARI requests awaiting an answer
    max_answer_latency: float = 1.0  # seconds, arrival in Stasis -> answered
    max_loop_lag: float = 0.25  # seconds the event loop wakes up late
    resume_ratio: float = 0.5  # shedding stops when every signal is under this x its budget
    hold: float = 5.0  # seconds shedding lasts at least, once started
    latency_window: float = 10.0  # seconds an answer latency counts for
    in_flight_for: float = 0.5  # seconds in flight must stay over its budget to shed

    def __post_init__(self) -> None:
        if self.max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        if self.max_answer_latency <= 0 or self.max_loop_lag <= 0:
            raise ValueError("max_answer_latency and max_loop_lag must be positive")
        if not 0 < self.resume_ratio <= 1:
            raise ValueError("resume_ratio must be in (0, 1]")
        if self.hold < 0 or self.latency_window <= 0:
            raise ValueError("hold must be >= 0 and latency_window positive")
        if self.in_flight_for < 0:
            raise ValueError("in_flight_for must be >= 0")


@dataclass(frozen=True)
class Load:
    """One reading of the three signals."""

    in_flight: int = 0
    answer_latency: float = 0.0
    loop_lag: float = 0.0


class Governor:
    """The shedding decision with hysteresis: feed it readings, it says whether to shed."""

    def __init__(self, budgets: Budgets) -> None:
        self.budgets = budgets
        self.reason: Reason | None = None  # set while shedding: what started it
        self._since = 0.0  # when shedding started
        self._in_flight_over: float | None = None  # since when in flight is over budget

    @property
    def shedding(self) -> bool:
        return self.reason is not None

    def over(self, load: Load, ratio: float = 1.0) -> Reason | None:
        """The first signal over ``ratio`` x its budget, or None."""
        b = self.budgets
        if load.in_flight > b.max_in_flight * ratio:
            return Reason.IN_FLIGHT
        if load.loop_lag > b.max_loop_lag * ratio:
            return Reason.LOOP_LAG
        if load.answer_latency > b.max_answer_latency * ratio:
            return Reason.ANSWER_LATENCY
        return None

    def update(self, load: Load, now: float) -> Reason | None:
        """Take a reading made at ``now`` (seconds, monotonic); the reason to shed, or None."""
        b = self.budgets
        if load.in_flight <= b.max_in_flight:
            self._in_flight_over = None
        elif self._in_flight_over is None:
            self._in_flight_over = now
        if self.reason is None:
            reason = self.over(load)
            over_for = 0.0 if self._in_flight_over is None else now - self._in_flight_over
            if reason is Reason.IN_FLIGHT and over_for < b.in_flight_for:
                reason = self.over(Load(0, load.answer_latency, load.loop_lag))  # not yet
            if reason is not None:
                self.reason, self._since = reason, now
            return self.reason
        if (
            now - self._since >= self.budgets.hold
            and self.over(load, self.budgets.resume_ratio) is None
        ):
            self.reason = None
        return self.reason


class LatencyWindow:
    """The worst answer latency among those measured in the last ``window`` seconds.

    Old samples age out, so that once shedding has stopped calls being answered slowly
    the signal falls back to zero instead of shedding forever on a stale figure.
    """

    def __init__(self, window: float) -> None:
        self.window = window
        # (when, latency) in time order, latencies strictly falling: a sample followed by a
        # later one at least as slow can never be the worst again, so it is dropped.  The
        # worst is then the first, and each call's admission costs O(1), not a scan of
        # every answer of the window (hundreds under load, read for every new call).
        self._samples: deque[tuple[float, float]] = deque()

    def add(self, latency: float, now: float) -> None:
        samples = self._samples
        while samples and samples[-1][1] <= latency:
            samples.pop()
        samples.append((now, latency))
        self._expire(now)

    def worst(self, now: float) -> float:
        self._expire(now)
        return self._samples[0][1] if self._samples else 0.0

    def _expire(self, now: float) -> None:
        while self._samples and now - self._samples[0][0] > self.window:
            self._samples.popleft()


class Shedder:
    """The decision wired to its signals: ``in_flight`` and ``loop_lag`` are read when a
    call arrives, answer latencies are reported with ``answered``.  ``clock`` is monotonic
    seconds.  No I/O: whoever owns the signals passes them in."""

    def __init__(
        self,
        budgets: Budgets,
        *,
        in_flight: Callable[[], int],
        loop_lag: Callable[[], float],
        clock: Callable[[], float],
    ) -> None:
        self.governor = Governor(budgets)
        self.latencies = LatencyWindow(budgets.latency_window)
        self._in_flight = in_flight
        self._loop_lag = loop_lag
        self._clock = clock
        self.shed: dict[Reason, int] = dict.fromkeys(Reason, 0)  # calls shed, by reason

    def answered(self, latency: float) -> None:
        """A call was answered ``latency`` seconds after it arrived."""
        self.latencies.add(latency, self._clock())

    def load(self) -> Load:
        now = self._clock()
        return Load(self._in_flight(), self.latencies.worst(now), self._loop_lag())

    def check(self) -> Reason | None:
        """Read the signals now: the reason to shed a new call, or None to take it."""
        return self.governor.update(self.load(), self._clock())

    def explain(self, reason: Reason) -> str:
        """``reason`` with its budget and the figure now (under hysteresis it may be back
        under the budget while shedding goes on), for the call log and the log."""
        load, b = self.load(), self.governor.budgets
        match reason:
            case Reason.IN_FLIGHT:
                figure = f"{load.in_flight} ARI requests in flight, budget {b.max_in_flight}"
            case Reason.ANSWER_LATENCY:
                figure = (
                    f"answer latency {load.answer_latency:.3f} s, budget {b.max_answer_latency:g} s"
                )
            case Reason.LOOP_LAG:
                figure = f"event-loop lag {load.loop_lag:.3f} s, budget {b.max_loop_lag:g} s"
        return f"overload ({reason}): {figure}"

    def admit(self, never_shed: bool) -> Reason | None:
        """Decide for a new call: None to run it, else why it is shed (and counted).
        A call of a ``never_shed`` flow (an emergency line) is always run."""
        reason = self.check()
        if reason is None or never_shed:
            return None
        self.shed[reason] += 1
        return reason
