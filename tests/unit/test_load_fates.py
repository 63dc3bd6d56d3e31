"""The load benchmark's account of the calls callflow shed: where the dialplan fallback left
each, read from the sandbox's CDR file after the run (benchmarks/load.py ``fates_of``)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.bench_module import bench_module

load = bench_module("load")


def cdr(uid: str, fallback: str, hangup: str) -> str:
    line = {
        "uniqueid": uid,
        "linkedid": uid,
        "start": 1_780_000_000.0,
        "end": 1_780_000_020.0,
        "callflow_dialed": "903",
        "callflow_fallback": fallback,
        "callflow_hangup": hangup,
    }
    return json.dumps(line) + "\n"


def test_the_shed_calls_fates_from_the_cdrs_written_during_the_run(tmp_path: Path) -> None:
    path = tmp_path / "callflow-cdr.json"
    before = cdr("s1", "shed", "caller")  # an earlier run's CDR of the same id: not read
    path.write_text(before)
    path.write_text(
        before
        + cdr("s1", "secretariat dial=ANSWER", "peer")
        + cdr("s2", "secretariat dial=CANCEL", "caller")
        + cdr("served", "", "pbx")  # a call the daemon served: not asked about
        + '{"uniqueid": "s3", "start": 1780000000.0'  # a line being written: not read yet
    )
    got = load.fates_of({"s1", "s2", "s3"}, path, len(before), timeout=0.2)
    assert got == {"secretariat": 1, "abandoned": 1, "no CDR": 1}
    row = load.Run("callflow", 200, 3, logged=3, shed_fates=got).row()
    assert "(shed, then: abandoned 1, no CDR 1, secretariat 1)" in row
