"""Trunk health and the failover policy (callflow.trunks), with an injected clock."""

from __future__ import annotations

import json
import logging
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callflow.telephony import DialStatus
from callflow.trunks import (
    SNAPSHOT_VERSION,
    ContactUpdate,
    HealthAwareSelector,
    HealthChange,
    TrunkHealth,
    TrunkSnapshot,
    TrunkState,
    read_snapshot,
)

R, U, X = TrunkState.REACHABLE, TrunkState.UNKNOWN, TrunkState.UNREACHABLE
TRUNKS = ["trunk-a", "trunk-b", "trunk-c", "trunk-d"]
START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


class Clock:
    """Monotonic seconds and the matching wall-clock time, moved by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def monotonic(self) -> float:
        return self.t

    def now(self) -> datetime:
        return START + timedelta(seconds=self.t - 1000.0)

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


def contact(trunk: str, state: TrunkState, rtt: float | None = None, n: int = 1) -> ContactUpdate:
    return ContactUpdate(
        aor=trunk, uri=f"sip:sbc{n}.{trunk}.example", state=state, rtt_ms=rtt, endpoint=trunk
    )


def make(
    clock: Clock, states: dict[str, TrunkState], **kw: float
) -> tuple[TrunkHealth, HealthAwareSelector]:
    """A live health (listed once) with one contact per trunk in ``states``."""
    health = TrunkHealth(TRUNKS, clock=clock.now)
    health.resync(contact(t, s, 20.0 if s is R else None) for t, s in states.items())
    selector = HealthAwareSelector(
        health,
        failure_threshold=int(kw.get("threshold", 3)),
        cooldown=kw.get("cooldown", 60.0),
        monotonic=clock.monotonic,
    )
    return health, selector


def fail(selector: HealthAwareSelector, trunk: str, n: int = 3) -> None:
    for _ in range(n):
        selector.report(trunk, DialStatus.CONGESTION)


# -- order -------------------------------------------------------------------------------


def test_route_order_is_kept(clock: Clock) -> None:
    _, selector = make(clock, {t: R for t in TRUNKS})
    route = ["trunk-c", "trunk-a", "trunk-d", "trunk-b"]
    assert selector.candidates(route, emergency=False) == route


def test_unreachable_trunks_are_skipped(clock: Clock) -> None:
    _, selector = make(clock, {"trunk-a": X, "trunk-b": R, "trunk-c": X})
    route = ["trunk-a", "trunk-b", "trunk-c"]
    assert selector.candidates(route, emergency=False) == ["trunk-b"]


def test_unknown_comes_after_reachable_each_in_route_order(clock: Clock) -> None:
    _, selector = make(clock, {"trunk-a": U, "trunk-b": R, "trunk-c": U, "trunk-d": R})
    route = ["trunk-a", "trunk-b", "trunk-c", "trunk-d"]
    assert selector.candidates(route, emergency=False) == [
        "trunk-b",
        "trunk-d",
        "trunk-a",
        "trunk-c",
    ]


def test_a_trunk_named_twice_is_tried_once(clock: Clock) -> None:
    _, selector = make(clock, {"trunk-a": R})
    assert selector.candidates(["trunk-a", "trunk-a"], emergency=True) == ["trunk-a"]


def test_a_trunk_nobody_watches_is_unknown(clock: Clock) -> None:
    _, selector = make(clock, {"trunk-a": R})
    assert selector.candidates(["other", "trunk-a"], emergency=False) == ["trunk-a", "other"]


def test_emergency_tries_every_trunk_down_ones_last(clock: Clock) -> None:
    _, selector = make(clock, {"trunk-a": X, "trunk-b": U, "trunk-c": R, "trunk-d": R})
    fail(selector, "trunk-d")  # breaker open
    route = ["trunk-a", "trunk-b", "trunk-c", "trunk-d"]
    assert selector.candidates(route, emergency=True) == [
        "trunk-c",
        "trunk-b",
        "trunk-a",
        "trunk-d",
    ]
    assert selector.candidates(route, emergency=False) == ["trunk-c", "trunk-b"]


# -- all down ----------------------------------------------------------------------------


def test_all_down_by_live_qualify_gives_no_candidate(clock: Clock) -> None:
    _, selector = make(clock, {"trunk-a": X, "trunk-b": X})
    route = ["trunk-a", "trunk-b"]
    assert selector.candidates(route, emergency=False) == []
    assert selector.candidates(route, emergency=True) == route


def test_all_down_by_breaker_tries_them_as_a_last_resort(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    _, selector = make(clock, {"trunk-a": R, "trunk-b": X})
    fail(selector, "trunk-a")
    with caplog.at_level(logging.WARNING, "callflow.trunks"):
        assert selector.candidates(["trunk-a", "trunk-b"], emergency=False) == ["trunk-a"]
    assert "last resort" in caplog.text


def test_unreachable_while_the_feed_is_lost_is_a_last_resort(clock: Clock) -> None:
    health, selector = make(clock, {"trunk-a": X, "trunk-b": X, "trunk-c": R})
    health.set_live(False)
    # A usable trunk is still preferred; the stale "unreachable" ones come only when alone.
    assert selector.candidates(["trunk-a", "trunk-c"], emergency=False) == ["trunk-c"]
    assert selector.candidates(["trunk-b", "trunk-a"], emergency=False) == ["trunk-b", "trunk-a"]


# -- breaker -----------------------------------------------------------------------------


def test_breaker_opens_after_n_trunk_faults_in_a_row(clock: Clock) -> None:
    _, selector = make(clock, {"trunk-a": R, "trunk-b": R})
    route = ["trunk-a", "trunk-b"]
    fail(selector, "trunk-a", 2)
    assert selector.candidates(route, emergency=False) == route
    assert not selector.breaker_open("trunk-a")
    selector.report("trunk-a", DialStatus.FAILED)
    assert selector.breaker_open("trunk-a")
    assert selector.candidates(route, emergency=False) == ["trunk-b"]
    snap = {s.name: s for s in selector.snapshot()}["trunk-a"]
    assert (snap.consecutive_failures, snap.breaker_open, snap.state) == (3, True, R)


def test_threshold_is_configurable(clock: Clock) -> None:
    _, selector = make(clock, {"trunk-a": R}, threshold=1)
    selector.report("trunk-a", DialStatus.CHANUNAVAIL)
    assert selector.breaker_open("trunk-a")


@pytest.mark.parametrize(
    "status", [DialStatus.BUSY, DialStatus.NOANSWER, DialStatus.ANSWER, DialStatus.DECLINED]
)
def test_far_end_answers_are_not_trunk_faults_and_reset_the_count(
    clock: Clock, status: DialStatus
) -> None:
    _, selector = make(clock, {"trunk-a": R, "trunk-b": R})
    fail(selector, "trunk-a", 2)
    selector.report("trunk-a", status)
    assert selector.consecutive_failures("trunk-a") == 0
    for _ in range(5):
        selector.report("trunk-a", status)
    fail(selector, "trunk-a", 2)
    assert not selector.breaker_open("trunk-a")
    assert selector.candidates(["trunk-a", "trunk-b"], emergency=False)[0] == "trunk-a"


def test_breaker_closes_when_qualify_sees_the_trunk_back(clock: Clock) -> None:
    health, selector = make(clock, {"trunk-a": R, "trunk-b": R})
    fail(selector, "trunk-a")
    health.apply(contact("trunk-a", X))
    assert selector.breaker_open("trunk-a")
    health.apply(contact("trunk-a", R, 30.0))
    assert not selector.breaker_open("trunk-a")
    assert selector.consecutive_failures("trunk-a") == 0
    assert selector.candidates(["trunk-a", "trunk-b"], emergency=False) == ["trunk-a", "trunk-b"]


def test_breaker_closes_when_another_contact_comes_back(clock: Clock) -> None:
    """The trunk stays reachable (one contact is), but a Reachable event is news."""
    health, selector = make(clock, {"trunk-a": R})
    fail(selector, "trunk-a")
    health.apply(contact("trunk-a", R, 12.0, n=2))
    assert not selector.breaker_open("trunk-a")


def test_a_reachable_trunk_staying_reachable_does_not_close_the_breaker(clock: Clock) -> None:
    health, selector = make(clock, {"trunk-a": R})
    fail(selector, "trunk-a")
    health.resync([contact("trunk-a", R, 20.0)])  # same contact, still reachable: no news
    assert selector.breaker_open("trunk-a")


def test_half_open_after_the_cooldown_lets_one_trial_through(clock: Clock) -> None:
    # trunk-a has qualify off (unknown): no Reachable event will ever come.
    _, selector = make(clock, {"trunk-a": U, "trunk-b": R}, cooldown=60.0)
    route = ["trunk-a", "trunk-b"]
    fail(selector, "trunk-a")
    clock.advance(59.9)
    assert selector.candidates(route, emergency=False) == ["trunk-b"]
    clock.advance(0.1)
    assert selector.candidates(route, emergency=False) == ["trunk-b", "trunk-a"]  # the trial
    assert selector.candidates(route, emergency=False) == ["trunk-b"]  # only one at a time
    selector.report("trunk-a", DialStatus.CONGESTION)  # the trial failed: open again
    assert selector.breaker_open("trunk-a")
    clock.advance(30)
    assert selector.candidates(route, emergency=False) == ["trunk-b"]
    clock.advance(30)
    assert selector.candidates(route, emergency=False) == ["trunk-b", "trunk-a"]
    selector.report("trunk-a", DialStatus.ANSWER)  # the trial went through: closed
    assert not selector.breaker_open("trunk-a")
    assert selector.consecutive_failures("trunk-a") == 0
    assert selector.candidates(route, emergency=False) == ["trunk-b", "trunk-a"]


def test_a_trial_that_is_never_reported_does_not_block_the_trunk_forever(clock: Clock) -> None:
    _, selector = make(clock, {"trunk-a": R, "trunk-b": R}, cooldown=10.0)
    route = ["trunk-a", "trunk-b"]
    fail(selector, "trunk-a")
    clock.advance(10)
    assert selector.candidates(route, emergency=False) == route  # trial given, then trunk-b...
    clock.advance(5)
    assert selector.candidates(route, emergency=False) == ["trunk-b"]
    clock.advance(5)  # ...answered first: trunk-a was never tried; a new trial comes
    assert selector.candidates(route, emergency=False) == route


# -- health model ------------------------------------------------------------------------


def test_a_trunk_with_several_contacts_is_reachable_if_any_is(clock: Clock) -> None:
    health = TrunkHealth(["trunk-b"], clock=clock.now)
    health.apply(contact("trunk-b", X, n=1))
    assert health.state("trunk-b") is X
    health.apply(contact("trunk-b", R, 41.2, n=2))
    assert (health.state("trunk-b"), health.rtt_ms("trunk-b")) == (R, 41.2)
    health.apply(contact("trunk-b", R, 38.0, n=1))
    assert health.rtt_ms("trunk-b") == 38.0  # the best round trip
    health.apply(contact("trunk-b", X, n=2))
    health.apply(contact("trunk-b", X, n=1))
    assert health.state("trunk-b") is X
    health.apply(ContactUpdate("trunk-b", "sip:sbc1.trunk-b.example", removed=True))
    health.apply(ContactUpdate("trunk-b", "sip:sbc2.trunk-b.example", removed=True))
    assert health.state("trunk-b") is U  # no contact left: nothing is known


def test_unknown_contact_makes_the_trunk_unknown_not_unreachable(clock: Clock) -> None:
    health = TrunkHealth(["trunk-a"], clock=clock.now)
    health.apply(contact("trunk-a", X, n=1))
    health.apply(contact("trunk-a", U, n=2))
    assert health.state("trunk-a") is U


def test_changes_are_stamped_logged_and_kept_in_a_bounded_history(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    health = TrunkHealth(["trunk-a"], clock=clock.now, history=3)
    with caplog.at_level(logging.WARNING, "callflow.trunks"):
        health.apply(contact("trunk-a", R, 23.8))
        clock.advance(60)
        health.apply(contact("trunk-a", X))
    assert "trunk trunk-a: unknown → reachable (rtt 23.8 ms)" in caplog.messages
    assert "trunk trunk-a: reachable → unreachable (rtt n/a)" in caplog.messages
    assert all(r.levelno == logging.WARNING for r in caplog.records)
    assert health.last_change("trunk-a") == START + timedelta(seconds=60)
    for _ in range(3):
        clock.advance(60)
        health.apply(contact("trunk-a", R, 25.0))
        health.apply(contact("trunk-a", X))
    history = health.history("trunk-a")
    assert len(history) == 3
    assert [(h.old, h.new) for h in history] == [(R, X), (X, R), (R, X)]
    assert history[-1].new is X and history[-1].at == health.last_change("trunk-a")


def test_no_change_no_log_no_history(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    health = TrunkHealth(["trunk-a"], clock=clock.now)
    health.apply(contact("trunk-a", R, 20.0))
    caplog.clear()
    with caplog.at_level(logging.DEBUG, "callflow.trunks"):
        health.apply(contact("trunk-a", R, 20.0))
    assert caplog.records == []
    assert len(health.history("trunk-a")) == 1


def test_other_endpoints_are_ignored(clock: Clock) -> None:
    health = TrunkHealth(["trunk-a"], clock=clock.now)
    seen: list[HealthChange] = []
    health.subscribe(seen.append)
    health.apply(ContactUpdate("accueil", "sip:accueil@10.0.0.1", R, 1.0, endpoint="accueil"))
    assert health.trunks == ("trunk-a",) and seen == []


def test_a_trunk_learns_its_aor_from_the_endpoint_name(clock: Clock) -> None:
    health = TrunkHealth(["trunk-c"], clock=clock.now)
    health.apply(ContactUpdate("trunk-c-sbc", "sip:10.20.0.5", R, 3.0, endpoint="trunk-c"))
    assert health.state("trunk-c") is R
    assert health.aors("trunk-c") == {"trunk-c", "trunk-c-sbc"}


def test_resync_replaces_contacts_and_marks_the_feed_live(clock: Clock) -> None:
    health = TrunkHealth(["trunk-a", "trunk-c"], clock=clock.now)
    assert not health.live
    health.apply(contact("trunk-a", R, 10.0))
    health.resync(
        [ContactUpdate("trunk-c-sbc", "sip:10.20.0.5", U)],
        aors={"trunk-a": ["trunk-a"], "trunk-c": ["trunk-c-sbc"]},
    )
    assert health.live
    assert health.state("trunk-a") is U  # its contact is gone
    assert health.contacts("trunk-c") == [ContactUpdate("trunk-c-sbc", "sip:10.20.0.5", U)]
    assert health.history("trunk-a")[-1].source == "resync"


def test_set_trunks_keeps_known_state(clock: Clock) -> None:
    health = TrunkHealth(["trunk-a"], clock=clock.now)
    health.apply(contact("trunk-a", R, 5.0))
    health.set_trunks(["trunk-b", "trunk-a"])
    assert health.trunks == ("trunk-b", "trunk-a")
    assert health.state("trunk-a") is R and health.state("trunk-b") is U


def test_a_failing_listener_does_not_stop_the_others(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    health = TrunkHealth(["trunk-a"], clock=clock.now)
    seen: list[HealthChange] = []

    def broken(change: HealthChange) -> None:
        raise RuntimeError("boom")

    health.subscribe(broken)
    health.subscribe(seen.append)
    health.apply(contact("trunk-a", R, 5.0))
    assert seen == [HealthChange("trunk-a", U, R, 5.0, True)]
    assert "listener failed" in caplog.text


# -- snapshot ----------------------------------------------------------------------------


def test_snapshot_lists_watched_trunks_then_reported_ones(clock: Clock) -> None:
    _, selector = make(clock, {"trunk-a": R})
    selector.report("elsewhere", DialStatus.CHANUNAVAIL)
    snap = selector.snapshot()
    assert [s.name for s in snap] == [*TRUNKS, "elsewhere"]
    assert snap[0] == TrunkSnapshot("trunk-a", R, 20.0, START, 0, False)
    assert snap[-1] == TrunkSnapshot("elsewhere", U, None, None, 1, False)


def test_write_snapshot_is_atomic_and_readable_by_others(clock: Clock, tmp_path: Path) -> None:
    _, selector = make(clock, {"trunk-a": R, "trunk-b": X})
    fail(selector, "trunk-b")
    path = tmp_path / "var" / "trunks.json"
    selector.write_snapshot(path)
    assert os.listdir(path.parent) == ["trunks.json"]  # no temporary file left behind
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    data = read_snapshot(path)
    assert data["version"] == SNAPSHOT_VERSION
    assert data["live"] is True and data["pid"] == os.getpid()
    assert data["written_at"] == START.isoformat()
    by_name = {t["name"]: t for t in data["trunks"]}
    assert by_name["trunk-a"] == {
        "name": "trunk-a",
        "state": "reachable",
        "rtt_ms": 20.0,
        "last_change": START.isoformat(),
        "consecutive_failures": 0,
        "breaker_open": False,
    }
    assert by_name["trunk-b"]["breaker_open"] is True


def test_snapshot_is_rewritten_on_every_change(clock: Clock, tmp_path: Path) -> None:
    health, selector = make(clock, {"trunk-a": R})
    path = tmp_path / "trunks.json"
    selector.subscribe(lambda: selector.write_snapshot(path))
    health.apply(contact("trunk-a", X))
    assert read_snapshot(path)["trunks"][0]["state"] == "unreachable"
    selector.report("trunk-b", DialStatus.CONGESTION)
    assert {t["name"]: t for t in read_snapshot(path)["trunks"]}["trunk-b"][
        "consecutive_failures"
    ] == 1


def test_a_snapshot_that_cannot_be_written_does_not_reach_the_call(
    clock: Clock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, selector = make(clock, {"trunk-a": R})
    blocker = tmp_path / "file"
    blocker.write_text("")
    selector.subscribe(lambda: selector.write_snapshot(blocker / "trunks.json"))
    selector.report("trunk-a", DialStatus.CONGESTION)  # must not raise
    assert "listener failed" in caplog.text


def test_read_snapshot_refuses_other_files(tmp_path: Path) -> None:
    p = tmp_path / "trunks.json"
    p.write_text(json.dumps({"version": 99, "trunks": []}))
    with pytest.raises(ValueError, match="not a trunk snapshot"):
        read_snapshot(p)
    p.write_text("{")
    with pytest.raises(ValueError):
        read_snapshot(p)
    with pytest.raises(FileNotFoundError):
        read_snapshot(tmp_path / "none.json")


# -- properties --------------------------------------------------------------------------

STATES = st.sampled_from([R, U, X])


@given(
    states=st.lists(STATES, min_size=4, max_size=4),
    open_breakers=st.sets(st.sampled_from(TRUNKS)),
    route=st.lists(st.sampled_from(TRUNKS), min_size=1, max_size=6),
    live=st.booleans(),
)
def test_candidate_rules_hold_for_any_state(
    states: list[TrunkState], open_breakers: set[str], route: list[str], live: bool
) -> None:
    clock = Clock()
    health, selector = make(clock, dict(zip(TRUNKS, states, strict=True)))
    health.set_live(live)
    for trunk in open_breakers:
        fail(selector, trunk)
    order = list(dict.fromkeys(route))
    urgent = selector.candidates(route, emergency=True)
    normal = selector.candidates(route, emergency=False)
    # An emergency tries every trunk once.
    assert sorted(urgent) == sorted(order)
    # Usable trunks come first, REACHABLE before UNKNOWN, each group in route order.
    usable = [t for t in order if t not in open_breakers and health.state(t) is not X]
    expected = [t for t in usable if health.state(t) is R] + [
        t for t in usable if health.state(t) is U
    ]
    assert urgent[: len(expected)] == expected
    assert [t for t in urgent if t not in expected] == [t for t in order if t not in expected]
    if expected:
        assert normal == expected
    else:
        # Last resort: only trunks whose down state may be wrong, never a live unreachable.
        assert all(not (live and health.state(t) is X) for t in normal)
        assert normal == [t for t in order if t in normal]
