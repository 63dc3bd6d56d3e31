"""REST over the events websocket, against the real Asterisk 22: the same call served with
``[ari] transport`` = websocket, auto (Asterisk 22.10 answers over the socket) and http, and
the metrics say which way every REST request went."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import Bench, Daemon, wait_event_filter


@pytest.fixture(params=["websocket", "auto", "http"])
def transport_daemon(
    request: pytest.FixtureRequest, tmp_path: Path, flows_dir: Path, asterisk: None
) -> Iterator[tuple[Daemon, str]]:
    mode: str = request.param
    d = Daemon(tmp_path, flows_dir)
    d.config.write_text(d.config.read_text().replace("[flows]", f'transport = "{mode}"\n[flows]'))
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
