"""Two Asterisk nodes behind Kamailio, one daemon per node, one PostgreSQL (issue #17).

The bench is in nodes.py: Kamailio (deploy/kamailio/kamailio.cfg) on 127.0.0.20 dispatches
to node1 (127.0.0.21) and node2 (127.0.0.22); each node's daemon has its ARI and AMI on its
own node and writes to the same database. Patients (SIPp) call Kamailio; the secretariat's
phone (accueil) is rung by whichever node has the call.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from .harness import Bench, Daemon, sandbox, wait_until
from .nodes import NODE_ADDRESSES, PING_INTERVAL, AsteriskNode, Kamailio

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the bench needs root (chroot)")


def _dsn(url: str) -> str:
    """An asyncpg DSN from a SQLAlchemy URL (postgresql+asyncpg://...)."""
    u = make_url(url)
    return u.set(drivername="postgresql").render_as_string(hide_password=False)


def _pg(url: str, sql: str, *args: object) -> list[Any]:
    async def run() -> list[Any]:
        conn = await asyncpg.connect(_dsn(url))
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    return asyncio.run(run())


@pytest.fixture
def shared_db() -> Iterator[str]:
    """A database of its own on the test PostgreSQL, shared by both nodes' daemons."""
    url = os.environ.get("CALLFLOW_TEST_PG_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("CALLFLOW_TEST_PG_URL is not set (scripts/test starts PostgreSQL)")
        pytest.skip("no PostgreSQL: export CALLFLOW_TEST_PG_URL=$(scripts/postgres up)")
    name = f"callflow_nodes_{uuid.uuid4().hex[:8]}"
    _pg(url, f'CREATE DATABASE "{name}"')
    yield make_url(url).set(database=name).render_as_string(hide_password=False)
    _pg(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[dict[str, AsteriskNode]]:
    sandbox("install")  # the chroot (done once); the sandbox's own Asterisk is not needed
    started: dict[str, AsteriskNode] = {}
    try:
        for name, (ip, rtp) in NODE_ADDRESSES.items():
            node = AsteriskNode(name, ip, rtp, tmp_path)
            node.configure()
            node.start()
            started[name] = node
        yield started
    finally:
        for node in started.values():
            node.stop()


@pytest.fixture
def kamailio(tmp_path: Path, nodes: dict[str, AsteriskNode]) -> Iterator[Kamailio]:
    k = Kamailio(tmp_path, list(nodes.values()))
    k.start()
    yield k
    k.stop()


@pytest.fixture
def daemons(
    tmp_path: Path, flows_dir: Path, shared_db: str, nodes: dict[str, AsteriskNode]
) -> Iterator[dict[str, Daemon]]:
    out: dict[str, Daemon] = {}
    try:
        for name, node in nodes.items():
            d = Daemon(
                tmp_path / f"daemon-{name}",
                flows_dir,
                db_url=shared_db,
                agi=False,
                ari_url=node.ari_url,
                extra_config=(
                    f'[node]\nname = "{name}"\n'
                    f'[ami]\nhost = "{node.ip}"\n'
                    f'[cdr]\nfile = "{node.cdr_file}"\npoll_interval = 0.5\nsettle = 3.0\n'
                ),
            )
            out[name] = d  # stopped at the end even if its start fails
            d.start(wait=False)
            d.wait_connected(timeout=60)  # two nodes, a migration: slow on a loaded machine
        yield out
    finally:
        codes = {name: d.stop() for name, d in out.items()}
        for name, d in out.items():
            assert "Traceback" not in d.log(), d.log()[-4000:]
            assert codes[name] == 0, f"{name}'s daemon exit code {codes[name]}\n{d.log()[-3000:]}"


def _calls(db: str) -> dict[str, dict[str, Any]]:
    rows = _pg(db, "SELECT id, outcome, detail, answered FROM calls")
    return {r["id"]: dict(r) for r in rows}


def _node_of(call_id: str) -> str:
    """The node a call ran on: each node's systemname prefixes its channel ids."""
    return call_id.split("-", 1)[0]


def _call(bench: Bench, kamailio: Kamailio, ip: str = "127.0.0.1", **sets: str) -> None:
    """One patient call to the practice's number through Kamailio, to its end (SIPp: 0)."""
    p = bench.patient("100", ip=ip, to=kamailio.address, **sets)
    assert p.wait(60) == 0, p.log()


def _wait_ended(db: str, n: int, timeout: float = 60) -> dict[str, dict[str, Any]]:
    wait_until(
        lambda: sum(c["outcome"] is not None for c in _calls(db).values()) >= n,
        timeout,
        f"{n} calls with an outcome in the shared database",
    )
    return _calls(db)


def test_calls_through_kamailio_reach_both_nodes_into_one_log_and_report(
    tmp_path: Path,
    nodes: dict[str, AsteriskNode],
    kamailio: Kamailio,
    daemons: dict[str, Daemon],
    shared_db: str,
) -> None:
    bench = Bench(tmp_path)
    try:
        wait_until(
            lambda: all(kamailio.up(n) for n in nodes.values()),
            10 * PING_INTERVAL,
            f"Kamailio's probes to find both nodes up: {kamailio.states()}",
        )
        accueil = bench.peer("accueil", "uas-answer.xml", keep_running="1", hangup_ms="1000")
        placed = 0
        # Calls are spread by a hash of their Call-ID: call until both nodes have had some
        # (the chance that 16 calls all hash to one node is 1 in 32,768).
        while placed < 16 and len({_node_of(c) for c in _calls(shared_db)}) < 2:
            _call(bench, kamailio, digits="1", wait_ms="800")
            placed += 1
            _wait_ended(shared_db, placed)
        calls = _wait_ended(shared_db, placed)
        assert accueil.proc.poll() is None, accueil.log()
    finally:
        bench.close()

    # Every call placed is in the one log, once, answered by the secretariat, by its node.
    assert len(calls) == placed, calls
    assert {c["outcome"] for c in calls.values()} == {"answered"}, calls
    by_node = {name: [c for c in calls if _node_of(c) == name] for name in nodes}
    assert all(by_node.values()), f"a node had no call in {placed}: {by_node}"
    # ...and each where Kamailio sent it.
    sent = list(kamailio.dispatched().values())
    for name, node in nodes.items():
        assert sent.count(node.ip) == len(by_node[name]), (sent, by_node)
        # That node's daemon logged its calls; the other's saw none of them.
        other = next(d for n, d in daemons.items() if n != name)
        for call_id in by_node[name]:
            assert f"call={call_id}" in daemons[name].log()
            assert f"call={call_id}" not in other.log()

    # The monthly report, from either node, counts the calls of both.
    month = datetime.now(ZoneInfo("Europe/Paris")).strftime("%Y-%m")
    for d in daemons.values():
        out = d.cli("report", "--month", month, "--format", "json").stdout
        report = json.loads(out)
        assert _total_calls(report) == placed, out


def test_a_phone_calling_through_kamailio_is_known_as_the_phone(
    tmp_path: Path,
    nodes: dict[str, AsteriskNode],
    kamailio: Kamailio,
    daemons: dict[str, Daemon],
    shared_db: str,
) -> None:
    wait_until(
        lambda: any(kamailio.up(n) for n in nodes.values()),
        10 * PING_INTERVAL,
        f"Kamailio's probes to find a node up: {kamailio.states()}",
    )
    bench = Bench(tmp_path)
    try:
        # The secretariat's phone (127.0.0.11) and a patient call the practice, both
        # through Kamailio: the node sees both come from Kamailio's address.
        _call(bench, kamailio, ip="127.0.0.11", hold_ms="2000")
        _call(bench, kamailio, hold_ms="2000")
        _wait_ended(shared_db, 2)
    finally:
        bench.close()
    rows = _pg(shared_db, "SELECT caller FROM calls ORDER BY started")
    # The phone was identified by X-Callflow-Source (its endpoint's caller id, 200); the
    # patient, by Kamailio's address, as a trunk call (the number it sent).
    assert [r["caller"] for r in rows] == ["200", "0600000001"], rows


def _total_calls(report: dict[str, Any]) -> int:
    """The month's number of calls in the quality report (JSON), all flows together."""
    return int(report["months"][0]["figures"]["*"]["calls"])  # "*": every flow


def test_a_dead_node_calls_go_to_the_other_and_its_call_is_logged_failed(
    tmp_path: Path,
    nodes: dict[str, AsteriskNode],
    kamailio: Kamailio,
    daemons: dict[str, Daemon],
    shared_db: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bench = Bench(tmp_path)
    try:
        wait_until(
            lambda: all(kamailio.up(n) for n in nodes.values()),
            10 * PING_INTERVAL,
            f"Kamailio's probes to find both nodes up: {kamailio.states()}",
        )
        # A patient in the menu (no key; its two rounds take 17 s): the node that has the
        # call dies, the other survives.
        victim = bench.patient("100", to=kamailio.address, hold_ms="30000")
        wait_until(lambda: len(kamailio.dispatched()) == 1, 20, "the dispatch")
        (ip,) = kamailio.dispatched().values()
        dead = next(n for n in nodes.values() if n.ip == ip)
        alive = next(n for n in nodes.values() if n is not dead)
        daemons[dead.name].wait_log(r"step=hours kind=schedule result=open next=menu", 30)
        (victim_id,) = _calls(shared_db)
        assert _node_of(victim_id) == dead.name
        dead.crash()
        crashed = time.time()

        accueil = bench.peer("accueil", "uas-answer.xml", keep_running="1", hangup_ms="1000")
        # Calls placed at once, before a probe noticed: Kamailio sends those that hash to
        # the dead node to the other after NODE_TIMEOUT (ds_next_dst): every one gets there.
        for _ in range(3):
            _call(bench, kamailio, digits="1", wait_ms="800")
        # The probes (or a failover) mark the dead node down; new calls go straight to the
        # other.
        wait_until(lambda: not kamailio.up(dead), 10 * PING_INTERVAL, f"{dead.name} down")
        down_at = kamailio.marked_down()[0]  # the first: a call or a probe
        seen = len(_dispatch_lines(kamailio))
        for _ in range(2):
            _call(bench, kamailio, digits="1", wait_ms="800")
        assert accueil.proc.poll() is None, accueil.log()
        victim.stop()
    finally:
        bench.close()
    with capsys.disabled():
        how = "a failed call" if "did not answer" in kamailio.log() else "a probe"
        print(f"\n{dead.name} marked down {down_at - crashed:.2f} s after its crash, by {how}")

    # Every call placed after the crash was answered, on the other node.
    calls = _wait_ended(shared_db, 5)
    new = {c: v for c, v in calls.items() if c != victim_id}
    assert len(new) == 5, calls
    assert {_node_of(c) for c in new} == {alive.name}, new
    assert {v["outcome"] for v in new.values()} == {"answered"}, new
    # Those placed once the dead node was marked down went straight to the other.
    late = _dispatch_lines(kamailio)[seen:]
    assert len(late) == 2 and all(alive.ip in line for line in late), late
    assert not any("failover" in line for line in late), late

    # The call the dead node had waits, unended, while that node's Asterisk is down (its
    # daemon cannot tell a dead PBX from a websocket that will reconnect). Asterisk comes
    # back (systemd's Restart=); the daemon reconnects, finds the channel gone, and logs
    # the call once, failed ("call lost"): never a normal hangup, never a caller who gave up.
    assert calls[victim_id]["outcome"] is None, calls[victim_id]
    dead.start()
    daemons[dead.name].wait_connected(count=2, timeout=60)
    wait_until(lambda: _calls(shared_db)[victim_id]["outcome"] is not None, 60, "its end")
    ended = _calls(shared_db)[victim_id]
    assert ended["outcome"] == "failed", ended
    assert ended["detail"].startswith("call lost: channel"), ended
    assert len(_calls(shared_db)) == 6
    wait_until(lambda: kamailio.up(dead), 10 * PING_INTERVAL, f"{dead.name} back up")


def _dispatch_lines(kamailio: Kamailio) -> list[str]:
    return [line for line in kamailio.log().splitlines() if "dispatch: INVITE" in line]


def test_an_override_set_on_one_node_holds_on_the_other(
    tmp_path: Path,
    nodes: dict[str, AsteriskNode],
    kamailio: Kamailio,
    daemons: dict[str, Daemon],
    shared_db: str,
) -> None:
    wait_until(
        lambda: all(kamailio.up(n) for n in nodes.values()),
        10 * PING_INTERVAL,
        f"Kamailio's probes to find both nodes up: {kamailio.states()}",
    )
    tomorrow = datetime.now(ZoneInfo("Europe/Paris")) + timedelta(days=1)
    body = {"state": "closed", "until": tomorrow.strftime("%Y-%m-%dT%H:%M")}
    status, text = daemons["node1"].http(
        "/api/calendars/bench/always/override", method="POST", body=body
    )
    assert status == 200, text

    def closed_on_node2() -> bool:
        status, text = daemons["node2"].http("/api/calendars")
        assert status == 200, text
        cals = json.loads(text)["calendars"]
        return any(c["key"] == "bench/always" and c["state"] == "closed" for c in cals)

    wait_until(closed_on_node2, 10, "node1's override in node2's calendars")

    # Calls through Kamailio, until one ran on node2: each took the "closed" way.
    bench = Bench(tmp_path)
    try:
        placed = 0
        while placed < 16 and not any(_node_of(c) == "node2" for c in _calls(shared_db)):
            _call(bench, kamailio, hold_ms="3000")
            placed += 1
            _wait_ended(shared_db, placed)
    finally:
        bench.close()
    rows = _pg(shared_db, "SELECT call_id, result FROM call_steps WHERE step = 'hours'")
    by_call = {r["call_id"]: r["result"] for r in rows}
    assert any(_node_of(c) == "node2" for c in by_call), by_call
    assert set(by_call) == set(_calls(shared_db)), by_call
    assert set(by_call.values()) == {"closed"}, by_call
    # Each call is tagged with the node that ran it.
    tags = _pg(shared_db, "SELECT id, node FROM calls")
    assert all(r["node"] == _node_of(r["id"]) for r in tags), tags
