"""The load benchmark's verdict on issue #11's first target, read round by round against
the reference of the same round (benchmarks/load.py ``verdict``)."""

from __future__ import annotations

from typing import Any

from tests.support.bench_module import bench_module

load = bench_module("load")


def run(target: str, answer_p99: float, hangup_p99: float, *, completed: int = 100) -> Any:
    """A run of 100 calls whose p99s are the given ones (90 fast calls, 10 slow)."""
    answer = [4.0] * 90 + [answer_p99] * 10
    hangup = [984.0] * 90 + [hangup_p99] * 10
    return load.Run(target, 200, 100, answer_ms=answer[:completed], hangup_ms=hangup[:completed])


def rows(runs: list[tuple[int, Any]]) -> list[list[str]]:
    table = load.verdict(runs).strip().splitlines()[2:]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in table]


def test_met_within_the_bound_of_the_same_rounds_reference() -> None:
    got = rows([(1, run("reference", 40, 1000)), (1, run("callflow", 56, 1400))])
    assert got == [["200", "1", "40", "yes", "callflow", "1.4", "1.40", "met"]]


def test_not_met_past_the_bound_or_a_call_not_completed() -> None:
    got = rows(
        [
            (1, run("reference", 40, 1000)),
            (1, run("callflow", 64, 1000)),  # 1.6x the reference's answer
            (2, run("reference", 40, 1000)),
            (2, run("callflow", 40, 1000, completed=99)),  # one call failed
        ]
    )
    assert [r[-1] for r in got] == ["not met", "not met"]


def test_a_round_whose_reference_is_over_100_ms_is_no_target() -> None:
    got = rows(
        [
            (1, run("reference", 40, 1000)),
            (1, run("callflow", 50, 1000)),
            (2, run("reference", 700, 1000)),  # the host slowed: not a target rate here
            (2, run("callflow", 50, 1000)),
        ]
    )
    assert [(r[1], r[3], r[-1]) for r in got] == [
        ("1", "yes", "met"),
        ("2", "no", "– (not a target rate in this round)"),
    ]
