"""REST over the events websocket, against the real Asterisk 22: the same call served with
``[ari] transport`` = websocket, auto (Asterisk 22.10 answers over the socket) and http, and
over the websocket with three REST lanes beside it; the metrics say which way every REST
request went."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import Bench, Daemon, ari, wait_event_filter

LANES = 3


@pytest.fixture(params=["websocket", "auto", "http", "lanes"])
def transport_daemon(
    request: pytest.FixtureRequest, tmp_path: Path, flows_dir: Path, asterisk: None
) -> Iterator[tuple[Daemon, str]]:
    mode: str = request.param
    d = Daemon(tmp_path, flows_dir)
    ari_keys = f'transport = "{mode}"\n'
    if mode == "lanes":
        ari_keys = f'transport = "websocket"\nrest_lanes = {LANES}\n'
    d.config.write_text(d.config.read_text().replace("[flows]", f"{ari_keys}[flows]"))
    d.start()
    yield d, mode
    code = d.stop()  # the process has exited: its log is complete
    log = d.log()
    assert "Traceback" not in log, log[-4000:]
    assert code == 0, f"daemon exit code {code}\n{log[-3000:]}"


def sent(metrics: str, transport: str) -> float:
    m = re.search(rf'callflow_ari_requests_total{{transport="{transport}"}} (\S+)', metrics)
    assert m is not None, metrics
    return float(m.group(1))


def test_a_call_served_over_each_transport(
    transport_daemon: tuple[Daemon, str], bench: Bench
) -> None:
    daemon, mode = transport_daemon
    expected = "http" if mode == "http" else "websocket"
    daemon.wait_log(rf"ARI events: connected \(app callflow; REST over {expected}\)")
    if mode == "lanes":
        # Each lane is a websocket of an application of its own, which no channel enters.
        for n in range(1, LANES + 1):
            daemon.wait_log(rf"ARI REST: lane {n} open \(application callflow-rest{n}\)")
        apps = {a["name"]: a for a in ari("GET", "/applications")}
        for n in range(1, LANES + 1):
            assert apps[f"callflow-rest{n}"]["channel_ids"] == []
    # Asterisk sends only what the daemon reads, and the call below still goes through.
    wait_event_filter()

    accueil = bench.peer("accueil", "uas-answer.xml", hangup_ms="1500")
    patient = bench.patient("100", digits="1", wait_ms="1500", hold_ms="8000")
    assert accueil.wait(40) == 0, accueil.log()
    assert patient.wait(40) == 0, patient.log()
    out = daemon.wait_outcome()
    assert (out["outcome"], out["destination"]) == ("answered", "secretariat")
    steps = daemon.steps(out["call"])
    assert [(s["step"], s["result"]) for s in steps[:3]] == [
        ("welcome", "played"),
        ("hours", "open"),
        ("menu", "pressed"),
    ]

    status, metrics = daemon.http("/metrics", token=False)
    assert status == 200
    assert f'callflow_ari_transport{{transport="{expected}"}} 1.0' in metrics
    other = "websocket" if expected == "http" else "http"
    # Answer, prompts, originate, bridge, hangups: every request went the chosen way.
    assert sent(metrics, expected) >= 6
    assert sent(metrics, other) == 0
    # The default: one lane, the emergency lines' own; none over HTTP.
    lanes = {"lanes": LANES, "http": 0}.get(mode, 1)
    assert f"callflow_ari_rest_lanes_open {lanes}.0" in metrics
