"""The overload decision (pure, no clock of its own), the event-loop lag part, and the
``[overload]`` settings."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import random
import time
from pathlib import Path

import pytest

from callflow.ari.overload import (
    Budgets,
    Governor,
    LatencyWindow,
    Load,
    Reason,
    Shedder,
)
from callflow.errors import SettingsError
from callflow.flow.loader import load_text
from callflow.flow.registry import compile_document
from callflow.looplag import LoopLag
from callflow.settings import OverloadSettings, load_settings
from tests.support.polling import wait_until

B = Budgets(
    max_in_flight=10,
    max_answer_latency=1.0,
    max_loop_lag=0.2,
    resume_ratio=0.5,
    hold=5.0,
    latency_window=10.0,
    in_flight_for=0.0,  # at once: the tests below are about the rest
)


def test_each_signal_over_its_budget_starts_shedding_with_its_reason() -> None:
    for load, reason in (
        (Load(in_flight=11), Reason.IN_FLIGHT),
        (Load(answer_latency=1.5), Reason.ANSWER_LATENCY),
        (Load(loop_lag=0.3), Reason.LOOP_LAG),
    ):
        g = Governor(B)
        assert g.update(Load(in_flight=10, answer_latency=1.0, loop_lag=0.2), 0.0) is None
        assert g.update(load, 1.0) is reason
        assert g.shedding


def test_hysteresis_holds_then_waits_for_every_signal_to_calm_down() -> None:
    g = Governor(B)
    assert g.update(Load(in_flight=20), 100.0) is Reason.IN_FLIGHT
    # Back to nothing at once: shedding still lasts `hold` seconds.
    assert g.update(Load(), 101.0) is Reason.IN_FLIGHT
    assert g.update(Load(), 104.9) is Reason.IN_FLIGHT
    # After `hold`, a signal between resume_ratio x budget and the budget keeps it on...
    assert g.update(Load(in_flight=6), 106.0) is Reason.IN_FLIGHT
    assert g.update(Load(in_flight=5, loop_lag=0.15), 107.0) is Reason.IN_FLIGHT
    # ...and once every signal is at or under half its budget, it stops.
    assert g.update(Load(in_flight=5, answer_latency=0.5, loop_lag=0.1), 108.0) is None
    assert not g.shedding
    # Under the budget (but over the resume level) does not start it again: no flapping.
    assert g.update(Load(in_flight=9, answer_latency=0.9, loop_lag=0.19), 109.0) is None


def test_in_flight_sheds_only_once_over_its_budget_for_in_flight_for() -> None:
    g = Governor(dataclasses.replace(B, in_flight_for=0.5))
    # A burst: over the budget for 0.4 s, then back under; no call is shed.
    assert g.update(Load(in_flight=30), 10.0) is None
    assert g.update(Load(in_flight=30), 10.4) is None
    assert g.update(Load(in_flight=9), 10.45) is None
    # Over again: the time counts from the new crossing, not the old one.
    assert g.update(Load(in_flight=11), 10.5) is None
    assert g.update(Load(in_flight=11), 10.99) is None
    assert g.update(Load(in_flight=11), 11.0) is Reason.IN_FLIGHT
    # Another signal over its budget sheds at once, whatever in flight does.
    g = Governor(dataclasses.replace(B, in_flight_for=0.5))
    assert g.update(Load(in_flight=30, loop_lag=0.3), 0.0) is Reason.LOOP_LAG


def test_a_signal_that_hovers_around_the_budget_does_not_flap() -> None:
    g = Governor(B)
    states = []
    for i in range(40):  # in flight 9, 11, 9, 11... every 0.5 s for 20 s
        states.append(g.update(Load(in_flight=11 if i % 2 else 9), i * 0.5) is not None)
    changes = sum(1 for a, b in itertools.pairwise(states) if a != b)
    assert changes == 1  # on once, and it stays on while the load stays high


def test_latency_window_forgets_old_answers() -> None:
    w = LatencyWindow(10.0)
    assert w.worst(0.0) == 0.0
    w.add(2.0, 0.0)
    w.add(0.3, 5.0)
    assert w.worst(9.0) == 2.0
    assert w.worst(10.5) == 0.3  # the slow answer aged out
    assert w.worst(16.0) == 0.0  # so shedding on answer latency cannot last forever


def test_latency_window_worst_is_the_max_of_the_window_whatever_the_order() -> None:
    # The window keeps only the samples that can still be the worst: its answer must be
    # the plain maximum of the answers of the last ``window`` seconds, at every moment.
    rng = random.Random(11)
    w = LatencyWindow(3.0)
    seen: list[tuple[float, float]] = []
    now = 0.0
    for _ in range(2000):
        now += rng.choice([0.0, 0.01, 0.1, 0.5, 1.0, 4.0])
        if rng.random() < 0.6:
            lat = rng.choice([0.0, 0.1, 0.2, 0.2, 0.5, 1.5]) * rng.random()
            w.add(lat, now)
            seen.append((now, lat))
        expected = max((lat for t, lat in seen if now - t <= 3.0), default=0.0)
        assert w.worst(now) == expected


class Signals:
    def __init__(self) -> None:
        self.in_flight = 0
        self.lag = 0.0
        self.now = 1000.0


def shedder(s: Signals) -> Shedder:
    return Shedder(B, in_flight=lambda: s.in_flight, loop_lag=lambda: s.lag, clock=lambda: s.now)


def test_never_shed_calls_are_admitted_while_others_are_shed_and_counted() -> None:
    s = Signals()
    sh = shedder(s)
    assert sh.admit(never_shed=False) is None
    s.lag = 0.5
    assert sh.admit(never_shed=False) is Reason.LOOP_LAG
    assert sh.admit(never_shed=True) is None  # the emergency line
    assert sh.admit(never_shed=False) is Reason.LOOP_LAG
    assert sh.shed == {Reason.IN_FLIGHT: 0, Reason.ANSWER_LATENCY: 0, Reason.LOOP_LAG: 2}
    assert sh.explain(Reason.LOOP_LAG) == (
        "overload (loop_lag): event-loop lag 0.500 s, budget 0.2 s"
    )


def test_slow_answers_shed_until_they_age_out() -> None:
    s = Signals()
    sh = shedder(s)
    sh.answered(3.0)
    assert sh.admit(never_shed=False) is Reason.ANSWER_LATENCY
    assert "answer latency 3.000 s, budget 1 s" in sh.explain(Reason.ANSWER_LATENCY)
    s.now += 6.0  # past hold, but the slow answer still counts
    assert sh.admit(never_shed=False) is Reason.ANSWER_LATENCY
    s.now += 5.0  # past the latency window: nothing slow is known any more
    assert sh.admit(never_shed=False) is None
    assert sh.shed[Reason.ANSWER_LATENCY] == 2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_in_flight": 0},
        {"max_loop_lag": 0.0},
        {"resume_ratio": 0.0},
        {"resume_ratio": 1.5},
        {"hold": -1.0},
        {"in_flight_for": -0.1},
    ],
)
def test_budgets_refuse_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Budgets(**kwargs)  # type: ignore[arg-type]


def test_overload_settings_from_the_file_and_the_environment(tmp_path: Path) -> None:
    p = tmp_path / "callflow.toml"
    p.write_text("[overload]\nmax_in_flight = 7\nmax_loop_lag = 0.5\n")
    s = load_settings(p, {"CALLFLOW_OVERLOAD_HOLD": "2.5"})
    assert (s.overload.max_in_flight, s.overload.max_loop_lag, s.overload.hold) == (7, 0.5, 2.5)
    assert s.overload.enabled
    p.write_text("[overload]\nresume_ratio = 2\n")
    with pytest.raises(SettingsError, match=r"\[overload\] resume_ratio"):
        load_settings(p, {})
    p.write_text("[overload]\nmax_inflight = 7\n")
    with pytest.raises(SettingsError, match="unknown key 'max_inflight'"):
        load_settings(p, {})


def test_the_example_settings_document_every_overload_key() -> None:
    repo = Path(__file__).resolve().parents[2]
    s = load_settings(repo / "callflow.toml", {})
    text = (repo / "callflow.toml").read_text()
    for key in (
        "max_in_flight",
        "max_answer_latency",
        "max_loop_lag",
        "resume_ratio",
        "hold",
        "latency_window",
        "lag_interval",
        "in_flight_for",
    ):
        assert f"\n{key} = " in text.split("[overload]")[1], key
    assert s.overload.enabled


FLOW = """
version: 1
flow: urgences
numbers: ["200"]
timezone: Europe/Paris
never_shed: {value}
start: bye
steps:
  bye: {{hangup: {{}}}}
"""


def test_never_shed_in_the_flow_file() -> None:
    assert compile_document(load_text(FLOW.format(value="true"), "u.yaml")).spec.never_shed
    plain = FLOW.format(value="false").replace("never_shed: false\n", "")
    assert not compile_document(load_text(plain, "u.yaml")).spec.never_shed


async def test_loop_lag_sees_a_blocked_loop_and_its_task_ends_with_the_part() -> None:
    before = asyncio.all_tasks()
    async with LoopLag(0.01) as lag:
        await wait_until(lambda: lag.samples >= 2)
        time.sleep(0.3)  # noqa: ASYNC251 - holds the loop: the next wake-up is ~0.3 s late
        await wait_until(lambda: lag.take_worst() >= 0.25)
    assert asyncio.all_tasks() == before
    assert lag.interval == 0.01


def test_a_lone_stall_is_not_a_steady_lag_and_sheds_nothing() -> None:
    # Found at 200 calls/s (benchmarks/results/load-2026-12-04.md): one wake-up 0.312 s
    # late, then none, started shedding for its ``hold``: 1,028 calls of 2,400 sent to the
    # fallback while the reference app held that rate.  Shedding takes the steady lag.
    lag = LoopLag(0.1)
    shedder = Shedder(B, in_flight=lambda: 0, loop_lag=lambda: lag.steady, clock=lambda: 0.0)
    for figure in (0.001, 0.002, 0.312, 0.001, 0.003):
        lag.record(figure)
        assert shedder.admit(never_shed=False) is None, figure
    assert lag.take_worst() == 0.312  # the metrics still show it
    # A loop late at most wake-ups is behind: the median of the last three decides.
    for figure in (1.0, 0.0, 1.0):  # blocked a second at a time, free for a moment
        lag.record(figure)
    assert lag.steady == 1.0
    assert shedder.admit(never_shed=False) is Reason.LOOP_LAG


def test_the_steady_lag_needs_three_figures() -> None:
    lag = LoopLag(0.1)
    lag.record(0.5)
    lag.record(0.5)
    assert lag.steady == 0.0
    lag.record(0.6)
    assert lag.steady == 0.5


def test_the_worst_lag_is_forgotten_once_read() -> None:
    lag = LoopLag(1.0)
    lag.record(0.5)
    lag.record(0.1)
    assert (lag.lag, lag.take_worst()) == (0.1, 0.5)
    assert lag.take_worst() == 0.1  # the latest figure until a new one comes
    with pytest.raises(ValueError):
        LoopLag(0.0)


def test_the_settings_and_the_budgets_have_the_same_defaults() -> None:
    settings, budgets = OverloadSettings(), Budgets()
    shared = {f.name for f in dataclasses.fields(Budgets)}
    assert shared <= {f.name for f in dataclasses.fields(OverloadSettings)}
    for name in shared:
        assert getattr(settings, name) == getattr(budgets, name), name
    # A guard against an Asterisk that stops answering, not a latency target (README).
    assert budgets.max_in_flight == 400
