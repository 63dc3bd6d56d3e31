"""The ``callflow`` command: run the daemon; check, simulate and calendar the flows; the call
log (db, report, export, callbacks); trunks."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TextIO

from .continuity import audit
from .continuity_report import format_report
from .errors import FlowError, UserError
from .flow.events import Outcome, StepKind, StepRecord
from .flow.oncall import on_call_timeline
from .flow.registry import FlowSet, LoadedFlow, flow_files, load_flows
from .schedule import FeedBook, format_timeline, timeline
from .settings import Settings
from .simulate import Scenario, Transcript, simulate


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    # Files the daemon and the CLI create (call log, spool, state, exports) may hold
    # patient numbers: readable by their owner only.
    os.umask(0o077)
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


DISTRIBUTION = "callflow-pbx"  # the name on the package index (pyproject.toml)


def version() -> str:
    """The installed distribution's version (a checkout installed with ``pip -e`` too)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown (not installed)"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="callflow", description=__doc__)
    p.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser(
        "check", help="validate flow files or folders, and with --config the settings too"
    )
    c.add_argument(
        "paths",
        nargs="*",
        type=Path,
        metavar="PATH",
        help="flow files or folders (default: [flows] dir of the settings file)",
    )
    c.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="also validate this settings file (found the usual way when no PATH is given); "
        "its state_dir holds the cached iCal feeds --horizon falls back on",
    )
    c.add_argument(
        "--horizon",
        help="also audit continuity: play every caller path over this span, e.g. 60d "
        "(exit 1 when a caller would reach no one)",
    )
    c.add_argument("--from", dest="start", help="start of the audit, 'YYYY-MM-DD HH:MM' (now)")
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
    _feeds_config(s)
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

    t = sub.add_parser("trunks", help="show each trunk's state, last change and round-trip time")
    t.add_argument("names", nargs="*", metavar="TRUNK", help="only these trunks")
    t.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="settings file (TOML); every key can be overridden by CALLFLOW_* env",
    )
    t.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="where the daemon writes trunks.json (default: [daemon] state_dir)",
    )
    t.add_argument(
        "--live",
        action="store_true",
        help="ask Asterisk over AMI now instead of reading the daemon's snapshot",
    )
    t.add_argument("--json", action="store_true", help="print the result as JSON")
    t.set_defaults(func=cmd_trunks)

    k = sub.add_parser("calendar", help="show when each calendar of a flow is open, and why")
    k.add_argument("file", type=Path, metavar="FILE")
    k.add_argument("--from", dest="start", default=None, help="first day, YYYY-MM-DD (today)")
    k.add_argument("--days", type=int, default=7)
    k.add_argument("--calendar", help="only this calendar")
    _feeds_config(k)
    k.set_defaults(func=cmd_calendar)

    from .api.drill_cli import add_commands as add_drill_commands  # drill: asks the daemon
    from .api.staff import add_commands as add_staff_commands  # account: the admin API's
    from .store.commands import add_commands  # db, export, report, callbacks: the call log

    add_commands(sub)
    add_staff_commands(sub)
    add_drill_commands(sub)
    from .pbxconf import add_commands as add_pbx_commands  # check-asterisk, asterisk-secrets

    add_pbx_commands(sub)
    return p


def _feeds_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="settings file: where the daemon caches the calendars' iCal feeds "
        "([daemon] state_dir), used when a feed cannot be read now",
    )


def _load_with_feeds(paths: Sequence[Path], config: Path | None) -> FlowSet:
    """The flows, their calendars' iCal feeds read once (the daemon's cached copy of a
    feed that is down; a warning on stderr)."""
    from .feeds import read_feeds_once
    from .settings import discover_settings

    book = FeedBook()
    flows = load_flows(paths, book)
    locations = flows.feed_locations()
    if locations:
        settings = discover_settings(config)
        cache = settings.state_dir / "feeds"
        timeout = settings.flows.feed_timeout
        for status in asyncio.run(read_feeds_once(book, locations, cache, timeout=timeout)):
            if not status.up:
                copy = "its cached copy" if status.cached else "no copy: its events are missing"
                print(f"callflow: calendar feed {status.feed} unreadable, {copy}", file=sys.stderr)
    return flows


# -- run ------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    from .app import Daemon, setup_logging
    from .eventloop import LoopKind
    from .eventloop import run as run_on
    from .settings import discover_settings

    settings = discover_settings(args.config, required=True)
    setup_logging(settings)
    daemon = Daemon(settings)
    return run_on(daemon.run(), LoopKind(settings.daemon.event_loop))


# -- trunks ---------------------------------------------------------------------------------


def cmd_trunks(args: argparse.Namespace, out: TextIO) -> int:
    """The daemon's trunk snapshot (``[daemon] state_dir``/trunks.json); without one, or
    with ``--live``, what Asterisk says over AMI now."""
    from .settings import discover_settings
    from .trunks import SNAPSHOT_FILE, read_snapshot

    settings = discover_settings(args.config)
    state_dir = args.state_dir or settings.state_dir
    path = state_dir / SNAPSHOT_FILE
    missing: str | None = None
    if not args.live:
        try:
            data = read_snapshot(path)
        except FileNotFoundError:
            missing = f"no trunk snapshot at {path} (is the daemon running, with this state_dir?)"
        except (OSError, ValueError) as exc:
            raise UserError(f"{path}: cannot read the trunk snapshot: {exc}") from None
        else:
            rows = _pick_rows(data["trunks"], args.names, f"the snapshot {path}")
            if args.json:
                doc = {"source": "snapshot", "path": str(path), **data, "trunks": rows}
                json.dump(doc, out, ensure_ascii=False, indent=2)
                out.write("\n")
                return 0
            out.write(_trunk_table(rows, live=False))
            out.write(_snapshot_footer(data))
            return 0
    try:
        address, rows = _live_trunks(settings, args.names)
    except UserError as exc:
        if missing is None:
            raise
        raise UserError(f"{missing}, and no answer over AMI either: {exc}") from None
    if missing is not None:
        print(f"callflow: {missing}; here is what Asterisk says over AMI", file=sys.stderr)
    if args.json:
        doc = {"source": "live", "ami": address, "trunks": rows}
        json.dump(doc, out, ensure_ascii=False, indent=2)
        out.write("\n")
        return 0
    out.write(_trunk_table(rows, live=True))
    out.write(
        f"live from Asterisk at {address}: last change, failures and breaker are known "
        "to the daemon only\n"
    )
    return 0


def _live_trunks(settings: Settings, names: list[str]) -> tuple[str, list[dict[str, object]]]:
    from .ami import AmiClient, AmiConfig, AmiError, live_snapshot
    from .settings import read_secret

    ami = settings.ami
    if not ami.enabled:
        raise UserError("AMI is disabled ([ami] enabled = false)")
    secret = read_secret(ami.secret_env, ami.secret_file, "[ami] secret", settings.base_dir)
    try:
        config = AmiConfig.from_settings(ami, secret)
    except ValueError as exc:
        raise UserError(f"[ami]: {exc}") from None
    trunks = names or _flow_trunks(settings)

    async def fetch() -> list[dict[str, object]]:
        async with AmiClient(config) as client:
            await client.connect()
            return [s.to_json() for s in await live_snapshot(client, trunks)]

    try:
        rows = asyncio.run(fetch())
    except AmiError as exc:
        raise UserError(str(exc)) from None
    for row in rows:
        row["consecutive_failures"] = None
        row["breaker_open"] = None
    return config.address, rows


def _flow_trunks(settings: Settings) -> list[str]:
    directory = settings.resolve(settings.flows.dir)
    try:
        flows = load_flows([directory])
    except UserError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(
            f"cannot tell which trunks to show: the flows in {directory} do not load "
            f"({first}); name them: callflow trunks TRUNK ..."
        ) from None
    names = [t for f in flows.flows.values() for route in f.spec.routes.values() for t in route]
    if not names:
        raise UserError(f"no flow in {directory} has a route: no trunk to show")
    return list(dict.fromkeys(names))


def _pick_rows(
    rows: list[dict[str, object]], names: list[str], where: str
) -> list[dict[str, object]]:
    if not names:
        return rows
    by_name = {str(r["name"]): r for r in rows}
    for n in names:
        if n not in by_name:
            known = ", ".join(by_name) or "none"
            raise UserError(f"no trunk '{n}' in {where} (trunks: {known})")
    return [by_name[n] for n in dict.fromkeys(names)]


def _trunk_table(rows: list[dict[str, object]], *, live: bool) -> str:
    now = datetime.now(UTC)
    header = ("TRUNK", "STATE", "RTT", "LAST CHANGE", "FAILURES", "BREAKER")
    lines: list[tuple[str, ...]] = [header]
    for r in rows:
        rtt = r.get("rtt_ms")
        changed = r.get("last_change")
        failures = r.get("consecutive_failures")
        breaker = r.get("breaker_open")
        lines.append(
            (
                str(r["name"]),
                str(r.get("state", "unknown")),
                f"{rtt:.1f} ms" if isinstance(rtt, int | float) else "-",
                _when(changed, now) if isinstance(changed, str) else ("unknown" if live else "-"),
                str(failures) if isinstance(failures, int) else "-",
                ("open" if breaker else "closed") if isinstance(breaker, bool) else "-",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ""
    for line in lines:
        text += "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        text += "\n"
    if len(lines) == 1:
        text += "(no trunk)\n"
    return text


def _when(iso: str, now: datetime) -> str:
    try:
        at = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    text = f"{at.astimezone():%Y-%m-%d %H:%M:%S}"
    seconds = (now - at).total_seconds()
    if seconds < 0:
        return text
    if seconds < 60:
        ago = f"{int(seconds)} s"
    elif seconds < 3600:
        ago = f"{int(seconds // 60)} min"
    elif seconds < 86400:
        ago = f"{int(seconds // 3600)} h"
    else:
        ago = f"{int(seconds // 86400)} d"
    return f"{text} ({ago} ago)"


def _snapshot_footer(data: dict[str, object]) -> str:
    written = data.get("written_at")
    when = _when(written, datetime.now(UTC)) if isinstance(written, str) else "at an unknown time"
    pid = data.get("pid")
    feed = "AMI feed live" if data.get("live") else "AMI feed lost: states may be stale"
    text = f"snapshot written {when}"
    text += f" by the daemon (pid {pid}); {feed}\n" if isinstance(pid, int) else f"; {feed}\n"
    if isinstance(pid, int) and not _process_exists(pid):
        text += f"no process {pid} here: the daemon has stopped, this snapshot may be stale\n"
    return text


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # e.g. EPERM: it exists, as another user
    return True


# -- check ----------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace, out: TextIO) -> int:
    paths: list[Path] = args.paths
    default: str | None = None
    settings: Settings | None = None
    if args.config is not None or not paths:
        from .settings import discover_settings
        from .settings_check import cdr_summary, flows_dir, settings_problems

        settings = discover_settings(args.config, required=True)
        problems = settings_problems(settings)
        if problems:
            raise UserError(f"{settings.origin}:\n  " + "\n  ".join(problems))
        out.write(f"settings OK: {settings.origin} (data in {settings.state_dir})\n")
        out.write(cdr_summary(settings) + "\n")
        paths = paths or [flows_dir(settings)]
        default = settings.flows.default
    files = flow_files(paths)
    flows = load_flows(paths) if args.horizon is None else _load_with_feeds(paths, args.config)
    if default is not None and default not in flows.flows:
        known = ", ".join(sorted(flows.flows)) or "none"
        raise UserError(f"[flows] default = {default!r} is not a flow (flows: {known})")
    out.write(
        f"{len(files)} file{'s' if len(files) != 1 else ''} OK: {', '.join(sorted(flows.flows))}\n"
    )
    if args.horizon is None:
        return 0
    horizon = _horizon(args.horizon)
    gaps = 0
    for name in sorted(flows.flows):
        flow = flows.flows[name]
        start = parse_local(args.start, flow) if args.start else datetime.now(flow.tz)
        report = asyncio.run(audit(flow, start, horizon))
        out.write(format_report(report, flow.tz))
        gaps += len(report.gaps)
    stale = _drill_half(settings, flows, out)
    return 1 if gaps or stale else 0


def _drill_half(settings: Settings | None, flows: FlowSet, out: TextIO) -> int:
    """The continuity audit's drill half: legs without a successful drill in
    ``[drills] max_age_days``, from the call log.  Never a silent pass: without the call
    log it says the drill half was not checked."""
    from .drill_audit import format_drill_audit, stale_drills
    from .drills import drill_targets

    legs = sum(len(drill_targets(f.spec)) for f in flows.flows.values())
    if legs == 0:
        out.write("drills: no forwarding destination to drill\n")
        return 0
    if settings is None:
        out.write(
            "drills: NOT CHECKED (no settings: give --config FILE, whose call log holds the "
            "drill results)\n"
        )
        return 0
    from .store.commands import read_drill_successes

    now = datetime.now(UTC)
    max_age = timedelta(days=settings.drills.max_age_days)
    try:  # by node: each node goes out by its own trunks
        successes = read_drill_successes(settings, now - max_age)
    except UserError as exc:
        out.write(f"drills: NOT CHECKED ({exc})\n")
        return 0
    stale = stale_drills(flows.flows.values(), successes, now, max_age)
    out.write(format_drill_audit(stale, legs, max_age, successes))
    return len(stale)


def _horizon(text: str) -> timedelta:
    """``60d``, ``2w``, ``12h``: the span of a continuity audit."""
    units = {"d": 1.0, "w": 7.0, "h": 1 / 24}
    t = text.strip().lower()
    try:
        days = float(t[:-1]) * units[t[-1]]
    except (KeyError, ValueError, IndexError):
        raise UserError(f"invalid horizon {text!r}: expected e.g. 60d, 8w or 48h") from None
    if not 0 < days <= 366:
        raise UserError(f"invalid horizon {text!r}: between 1h and 366d")
    return timedelta(days=days)


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
    flows = _load_with_feeds([args.file], args.config)
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
        out.write(f"  {_step_line(r)}\n")
    out.write(f"outcome: {describe(outcome)}\n")
    return 0


def _step_line(r: StepRecord) -> str:
    """One step of a simulated call, for people, from the record's fields."""
    inside = r.kind in (StepKind.ATTEMPT, StepKind.FALLBACK)
    text = f"  {r.step} ({r.kind}): " if inside else f"{r.step}: "
    text += str(r.result) if r.key is None else f"{r.result} {r.key}"
    if r.score is not None:
        text += f" {r.score}"
    facts = [f"tier {r.tier}"] if r.tier is not None and r.kind is StepKind.ESCALATE else []
    if r.destination is not None:
        facts.append(r.destination if r.trunk is None else f"{r.destination} via {r.trunk}")
    if r.detail:
        facts.append(r.detail)
    if facts:
        text += f" ({'; '.join(facts)})"
    return text + (f" → {r.next}" if r.next else "")


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
        "answered": [
            {"at": a.at.isoformat(), "step": a.step, "destination": a.destination}
            for a in t.answers
        ],
        "steps": [
            {
                "step": r.step,
                "kind": str(r.kind),
                "result": str(r.result),
                "key": r.key,
                "score": r.score,
                "attempt": r.attempt,
                "destination": r.destination,
                "trunk": r.trunk,
                "tier": r.tier,
                "dial_status": None if r.dial_status is None else str(r.dial_status),
                "outcome": None if r.outcome is None else str(r.outcome),
                "detail": r.detail,
                "next": r.next,
            }
            for r in t.steps
        ],
    }


# -- calendar -------------------------------------------------------------------------------


def cmd_calendar(args: argparse.Namespace, out: TextIO) -> int:
    flows = _load_with_feeds([args.file], args.config)
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
    for rotation in flow.spec.oncall if not args.calendar else []:
        out.write(f"on call: {rotation}\n")
        for span in on_call_timeline(flow, rotation, start, end):
            who = ", ".join(span.on_call.people) or "nobody"
            out.write(
                f"  {span.start:%a %Y-%m-%d %H:%M} → {span.end:%a %Y-%m-%d %H:%M}  "
                f"{who} ({span.on_call.shift})\n"
            )
        out.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
