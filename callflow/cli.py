"""The ``callflow`` command: check, simulate, calendar (and, later, run, db, report)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TextIO

from .errors import FlowError, UserError
from .flow.engine import Engine
from .flow.events import Outcome
from .flow.registry import FlowSet, LoadedFlow, flow_files, load_flows
from .flow.services import InOrder, MemoryCallbacks, Services
from .schedule import OverrideStore, format_timeline, timeline
from .simulate import Scenario, SimulatedCall, Transcript


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args, sys.stdout)
        return code
    except FlowError as exc:
        for d in exc.diagnostics:
            print(d, file=sys.stderr)
        n = len(exc.diagnostics)
        print(f"{n} error{'s' if n != 1 else ''}", file=sys.stderr)
        return 1
    except UserError as exc:
        print(f"callflow: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="callflow", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser("check", help="validate flow files or folders")
    c.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    c.set_defaults(func=cmd_check)

    s = sub.add_parser("simulate", help="play a simulated call through a flow")
    s.add_argument("file", type=Path, metavar="FILE", help="a flow file (or a folder of flows)")
    s.add_argument("--at", required=True, help="local time of the call, 'YYYY-MM-DD HH:MM'")
    s.add_argument("--caller", default="0612345678", help="caller number (default %(default)s)")
    s.add_argument("--number", help="dialed number (default: the flow's first number)")
    s.add_argument("--digits", default="", help="keys pressed in turn, one per prompt: 1,2")
    s.add_argument(
        "--no-answer",
        action="append",
        default=[],
        metavar="NAME",
        help="destination that rings out (repeatable)",
    )
    s.add_argument(
        "--busy",
        action="append",
        default=[],
        metavar="NAME",
        help="destination that is busy (repeatable)",
    )
    s.add_argument(
        "--decline",
        action="append",
        default=[],
        metavar="NAME",
        help="on-call person who answers but does not confirm (repeatable)",
    )
    s.add_argument(
        "--down",
        action="append",
        default=[],
        metavar="TRUNK",
        help="trunk that is down (repeatable)",
    )
    s.add_argument(
        "--hangup-after", type=int, metavar="N", help="the caller hangs up after N prompts"
    )
    s.add_argument("--json", action="store_true", help="print the result as JSON")
    s.set_defaults(func=cmd_simulate)

    r = sub.add_parser("run", help="run the daemon: attach to Asterisk and run the flows")
    r.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="settings file (TOML); every key can be overridden by CALLFLOW_* env",
    )
    r.set_defaults(func=cmd_run)

    k = sub.add_parser("calendar", help="show when each calendar of a flow is open, and why")
    k.add_argument("file", type=Path, metavar="FILE")
    k.add_argument("--from", dest="start", default=None, help="first day, YYYY-MM-DD (today)")
    k.add_argument("--days", type=int, default=7)
    k.add_argument("--calendar", help="only this calendar")
    k.set_defaults(func=cmd_calendar)
    return p


# -- run ------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    from .app import Daemon, setup_logging
    from .settings import load_settings

    settings = load_settings(args.config)
    setup_logging(settings)
    daemon = Daemon(settings)
    return asyncio.run(daemon.run())


# -- check ----------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace, out: TextIO) -> int:
    files = flow_files(args.paths)
    flows = load_flows(args.paths)
    out.write(
        f"{len(files)} file{'s' if len(files) != 1 else ''} OK: {', '.join(sorted(flows.flows))}\n"
    )
    return 0


# -- simulate -------------------------------------------------------------------------------


def _pick_flow(flows: FlowSet, number: str | None) -> LoadedFlow:
    if number is not None:
        flow = flows.for_number(number)
        if flow is None:
            if len(flows.flows) == 1:
                return next(iter(flows.flows.values()))
            raise UserError(f"no flow claims number {number!r}")
        return flow
    if len(flows.flows) != 1:
        raise UserError("several flows: say which with --number")
    return next(iter(flows.flows.values()))


_YEARS = (1900, 2999)  # year 1 or 9999 overflows when converted to UTC or given days
_YEARS_HELP = f"the year must be between {_YEARS[0]} and {_YEARS[1]}"


def parse_local(text: str, flow: LoadedFlow) -> datetime:
    try:
        naive = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UserError(f"invalid time {text!r}: expected 'YYYY-MM-DD HH:MM'") from None
    if not _YEARS[0] <= naive.year <= _YEARS[1]:
        raise UserError(f"invalid time {text!r}: {_YEARS_HELP}")
    if naive.tzinfo is not None:
        return naive
    return naive.replace(tzinfo=flow.tz)


def _check_names(flow: LoadedFlow, names: list[str], what: str, known: Sequence[str]) -> None:
    for n in names:
        if n not in known:
            raise UserError(f"unknown {what} '{n}' in flow '{flow.name}': {', '.join(known)}")


def cmd_simulate(args: argparse.Namespace, out: TextIO) -> int:
    flows = load_flows([args.file])
    flow = _pick_flow(flows, args.number)
    at = parse_local(args.at, flow)
    dests = list(flow.spec.destinations)
    trunks = sorted({t for route in flow.spec.routes.values() for t in route})
    _check_names(flow, args.no_answer + args.busy + args.decline, "destination", dests)
    _check_names(flow, args.down, "trunk", trunks)
    digits = [d.strip() for d in args.digits.split(",") if d.strip()] if args.digits else []
    scenario = Scenario(
        digits=digits,
        no_answer=set(args.no_answer),
        busy=set(args.busy),
        decline=set(args.decline),
        down=set(args.down),
        hangup_after_prompts=args.hangup_after,
    )
    dialed = args.number or flow.spec.numbers[0]
    transcript, outcome = asyncio.run(
        simulate(flow, scenario, at, caller=args.caller, dialed=dialed)
    )
    if args.json:
        json.dump(_as_json(transcript, outcome), out, ensure_ascii=False)
        out.write("\n")
        return 0
    local = at.astimezone(flow.tz)
    out.write(
        f"call {args.caller} → {dialed}, {local:%a %Y-%m-%d %H:%M} ({flow.spec.timezone}), "
        f"flow {flow.name} [{flow.version}]\n"
    )
    for r in transcript.steps:
        label = r.step if r.kind not in ("attempt", "fallback") else f"  {r.step} ({r.kind})"
        detail = f" ({r.detail})" if r.detail else ""
        nxt = f" → {r.next}" if r.next else ""
        out.write(f"  {label}: {r.result}{detail}{nxt}\n")
    out.write(f"outcome: {describe(outcome)}\n")
    return 0


async def simulate(
    flow: LoadedFlow, scenario: Scenario, at: datetime, *, caller: str, dialed: str
) -> tuple[Transcript, Outcome]:
    transcript = Transcript()
    services = Services(
        clock=lambda: at.astimezone(UTC),
        overrides=OverrideStore(),
        trunks=InOrder(),
        callbacks=MemoryCallbacks(),
        observer=transcript,
    )
    call = SimulatedCall(flow, scenario, caller=caller, dialed=dialed)
    outcome = await Engine(services).run(flow, call)
    return transcript, outcome


def describe(o: Outcome) -> str:
    text = str(o.kind)
    if o.destination:
        text += f" to {o.destination}"
    if o.trunk:
        text += f" via {o.trunk}"
    if o.tier is not None:
        text += f" (tier {o.tier})"
    if o.step:
        text += f" at step '{o.step}'"
    if o.detail and o.kind in ("failed", "abandoned", "callback"):
        text += f": {o.detail}"
    return text


def _as_json(t: Transcript, o: Outcome) -> dict[str, object]:
    return {
        "path": t.path,
        "outcome": str(o.kind),
        "destination": o.destination,
        "trunk": o.trunk,
        "tier": o.tier,
        "step": o.step,
        "detail": o.detail,
        "steps": [
            {
                "step": r.step,
                "kind": r.kind,
                "result": r.result,
                "detail": r.detail,
                "next": r.next,
            }
            for r in t.steps
        ],
    }


# -- calendar -------------------------------------------------------------------------------


def cmd_calendar(args: argparse.Namespace, out: TextIO) -> int:
    flows = load_flows([args.file])
    flow = _pick_flow(flows, None)
    if args.start:
        try:
            first = date.fromisoformat(args.start)
        except ValueError:
            raise UserError(f"invalid date {args.start!r}: expected YYYY-MM-DD") from None
        if not _YEARS[0] <= first.year <= _YEARS[1]:
            raise UserError(f"invalid date {args.start!r}: {_YEARS_HELP}")
    else:
        first = datetime.now(flow.tz).date()
    if not 1 <= args.days <= 366:
        raise UserError("--days must be between 1 and 366")
    names = [args.calendar] if args.calendar else list(flow.calendars)
    _check_names(flow, names, "calendar", list(flow.calendars))
    start = datetime(first.year, first.month, first.day, tzinfo=flow.tz)
    end = start + timedelta(days=args.days)
    for name in names:
        cal = flow.calendars[name]
        out.write(f"calendar {name} ({flow.spec.timezone})\n")
        out.write(format_timeline(timeline(cal, start, end)))
        out.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
