"""The fault matrix under load (issue #12): runs tests/integration/test_crash.py and prints
its table, fault x placed / served / logged / without outcome / duplicated.

    unshare --net bash -c 'ip link set lo up && .venv/bin/python benchmarks/fault_matrix.py'
    ... benchmarks/fault_matrix.py --rate 10 --seconds 6     # another load
    ... benchmarks/fault_matrix.py --update-readme            # refresh the README's table
    .venv/bin/python benchmarks/fault_matrix.py --rows FILE  # the table of rows already run

As root, in a network namespace of its own (every sandbox uses the same ports): it starts
the throwaway PostgreSQL (scripts/postgres) and the Asterisk sandbox, runs the tests with
``CALLFLOW_FAULT_RATE`` / ``CALLFLOW_FAULT_SECONDS`` and ``CALLFLOW_FAULT_MATRIX_FILE`` set
(each test appends its row: tests/integration/load.py), and stops both.  A failed test still
leaves its row (written before the assertions); the exit code is pytest's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
README = REPO / "tests" / "integration" / "README.md"
BEGIN, END = "<!-- fault-matrix:begin -->", "<!-- fault-matrix:end -->"
COLUMNS = ("placed", "served", "logged", "without_outcome", "duplicated", "refused")
HEADER = (
    "| fault | calls/s | placed | served | logged | without outcome | duplicated "
    "| refused by Asterisk | outcomes |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


def table(rows: list[dict[str, Any]]) -> str:
    dates = sorted({str(r["date"]) for r in rows})
    machines = sorted({str(r["machine"]) for r in rows})
    lines = [
        f"Measured {', '.join(dates)} on {'; '.join(machines)} (Asterisk sandbox, SIPp, the "
        "daemon and other jobs on the same host).",
        "",
        HEADER,
    ]
    for r in rows:
        outcomes = ", ".join(f"{k} {n}" for k, n in r["outcomes"].items())
        cells = " | ".join(str(r.get(c, 0)) for c in COLUMNS)
        lines.append(f"| {r['fault']} | {r['rate']:g} | {cells} | {outcomes} |")
    return "\n".join(lines)


def update_readme(text: str) -> None:
    doc = README.read_text()
    start, end = doc.index(BEGIN) + len(BEGIN), doc.index(END)
    README.write_text(doc[:start] + "\n" + text + "\n" + doc[end:])


def run(rate: float, seconds: float, rows_file: Path, extra: list[str]) -> int:
    pg = subprocess.run(
        [str(REPO / "scripts/postgres"), "up"], capture_output=True, text=True, check=True
    )
    env = dict(
        os.environ,
        CALLFLOW_TEST_PG_URL=pg.stdout.strip().splitlines()[-1],
        CALLFLOW_FAULT_RATE=f"{rate:g}",
        CALLFLOW_FAULT_SECONDS=f"{seconds:g}",
        CALLFLOW_FAULT_MATRIX_FILE=str(rows_file),
    )
    try:
        subprocess.run([str(REPO / "scripts/asterisk-sandbox"), "up"], check=True)
        test = [sys.executable, "-m", "pytest", "-q", "tests/integration/test_crash.py", *extra]
        return subprocess.run(test, cwd=REPO, env=env, check=False).returncode
    finally:
        subprocess.run([str(REPO / "scripts/asterisk-sandbox"), "stop"], check=False)
        subprocess.run([str(REPO / "scripts/postgres"), "stop"], check=False)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rate", type=float, default=20, help="calls per second (default 20)")
    p.add_argument("--seconds", type=float, default=5, help="length of the stream (default 5)")
    p.add_argument("--rows", type=Path, help="print the table of these rows, run nothing")
    p.add_argument("--update-readme", action="store_true", help="write it to the README")
    p.add_argument("pytest_args", nargs="*", help="more pytest arguments (e.g. -k kill)")
    args = p.parse_args()
    code = 0
    with tempfile.TemporaryDirectory(prefix="callflow-faults-") as tmp:
        rows_file = args.rows or Path(tmp) / "rows.jsonl"
        if args.rows is None:
            code = run(args.rate, args.seconds, rows_file, args.pytest_args)
        lines = rows_file.read_text().splitlines() if rows_file.exists() else []
        rows = [json.loads(line) for line in lines if line.strip()]
    if not rows:
        print("no rows: no test of the matrix ran", file=sys.stderr)
        return code or 1
    text = table(rows)
    print(text)
    if args.update_readme:
        update_readme(text)
    return code


if __name__ == "__main__":
    sys.exit(main())
