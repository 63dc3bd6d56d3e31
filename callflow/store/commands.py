"""The call log's commands: ``callflow db upgrade|downgrade|current|purge``, ``callflow
export``, ``callflow report`` (registered by ``callflow.cli``)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..errors import UserError
from ..settings import Settings, discover_settings

if TYPE_CHECKING:  # sqlalchemy is imported by the commands that need it, not by `callflow`
    from sqlalchemy.ext.asyncio import AsyncEngine

    from ..flow.registry import FlowSet
    from .callbacks import PendingCallback

T = TypeVar("T")


def add_commands(sub: Any) -> None:
    """Add ``db``, ``export``, ``report`` and ``callbacks`` to the ``callflow`` subcommands."""

    def config(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--config",
            type=Path,
            default=None,
            metavar="FILE",
            help="settings file (TOML); every key can be overridden by CALLFLOW_* env",
        )

    d = sub.add_parser("db", help="the call log's database: schema version and retention")
    dsub = d.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    up = dsub.add_parser("upgrade", help="upgrade the schema (to the newest by default)")
    up.add_argument("--revision", default="head", help="target revision (default: head)")
    config(up)
    up.set_defaults(func=cmd_db_upgrade)
    down = dsub.add_parser("downgrade", help="downgrade the schema (data of newer tables is lost)")
    down.add_argument("--revision", required=True, help="target revision, -1, or base")
    config(down)
    down.set_defaults(func=cmd_db_downgrade)
    cur = dsub.add_parser("current", help="show the schema version")
    config(cur)
    cur.set_defaults(func=cmd_db_current)
    pur = dsub.add_parser(
        "purge", help="delete calls older than [privacy] retention_days, anonymise callbacks"
    )
    config(pur)
    pur.set_defaults(func=cmd_db_purge)
    ret = dsub.add_parser(
        "retire-node",
        help="close the calls a node left open when it went away for good (lost, or the "
        "outcome they had reached)",
    )
    ret.add_argument("node", metavar="NODE", help="the node's [node] name")
    ret.add_argument(
        "--quiet-minutes",
        type=int,
        default=10,
        metavar="N",
        help="refuse if the node took a call in the last N minutes (default 10)",
    )
    ret.add_argument("--by", default=None, help="who retires it (default: the system user)")
    config(ret)
    ret.set_defaults(func=cmd_db_retire_node)

    e = sub.add_parser("export", help="print everything stored about a caller (JSON)")
    e.add_argument(
        "--caller",
        action="append",
        required=True,
        metavar="NUMBER",
        help="the caller's number as the PBX presents it (repeatable: every form they use)",
    )
    config(e)
    e.set_defaults(func=cmd_export)

    r = sub.add_parser(
        "report",
        help="the monthly quality report (default), or --from/--to: calls, missed calls, "
        "answer times, callbacks, volume",
    )
    r.add_argument("--month", help="the quality report of YYYY-MM (default: last month)")
    r.add_argument("--from", dest="start", help="first day, YYYY-MM-DD[ HH:MM]")
    r.add_argument("--to", dest="end", help="last day (included), YYYY-MM-DD")
    r.add_argument("--flow", help="only this flow")
    r.add_argument("--format", choices=("text", "json", "html"), default="text")
    r.add_argument(
        "--timezone", default="Europe/Paris", help="local time of the table (default %(default)s)"
    )
    r.add_argument(
        "--language",
        choices=("fr", "en"),
        help="words of the text and HTML report (default: [daemon] language)",
    )
    config(r)
    r.set_defaults(func=cmd_report)
    _add_callback_commands(sub, config)


# -- helpers ------------------------------------------------------------------------------


def _who() -> str:
    user = os.environ.get("SUDO_USER")
    if not user:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = f"uid {os.getuid()}"
    return f"cli:{user}"


def _settings(args: argparse.Namespace) -> Settings:
    return discover_settings(args.config)


def _run(
    settings: Settings, job: Callable[[AsyncEngine], Awaitable[T]], *, create: bool = False
) -> T:
    """Run ``job`` on the call log.  Only ``create`` (``db upgrade``) may bring a SQLite
    file into being: any other command on a missing file says so instead."""
    from sqlalchemy.exc import DBAPIError

    from . import db

    url = db.database_url(settings)
    missing = db.missing_sqlite_file(url)
    if missing is not None and not create:
        raise UserError(
            f"no call log at {missing} (settings: {settings.origin}): the daemon creates it "
            "on its first start, or run `callflow db upgrade`; is this the daemon's --config?"
        )

    async def main() -> T:
        engine = db.create_engine(url)
        try:
            return await job(engine)
        except (OSError, DBAPIError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UserError(f"database: {first}") from None
        finally:
            await engine.dispose()

    return asyncio.run(main())


def read_drill_successes(
    settings: Settings, since: datetime
) -> dict[str, dict[tuple[str, str, str], datetime]]:
    """When each drill leg last passed, node by node, for each node seen since ``since``
    (``check --horizon``); ``UserError`` when the call log is missing, unreachable or not
    at this callflow's schema."""
    from . import db
    from .drill_log import successes_by_node

    async def job(engine: AsyncEngine) -> dict[str, dict[tuple[str, str, str], datetime]]:
        await db.check_schema(engine)
        return await successes_by_node(engine, since)

    return _run(settings, job)


def _where(settings: Settings) -> str:
    from . import db

    return db.database_url(settings).render_as_string(hide_password=True)


# -- db -----------------------------------------------------------------------------------


def cmd_db_upgrade(args: argparse.Namespace, out: TextIO) -> int:
    from . import db

    settings = _settings(args)

    async def job(engine: AsyncEngine) -> tuple[str | None, str | None]:
        before = await db.current_revision(engine)
        await db.upgrade(engine, args.revision)
        return before, await db.current_revision(engine)

    before, after = _run(settings, job, create=True)
    if before == after:
        out.write(f"{_where(settings)}: schema already at {after}\n")
    else:
        out.write(f"{_where(settings)}: schema upgraded from {before or 'nothing'} to {after}\n")
    return 0


def cmd_db_downgrade(args: argparse.Namespace, out: TextIO) -> int:
    from . import db

    settings = _settings(args)

    async def job(engine: AsyncEngine) -> tuple[str | None, str | None]:
        before = await db.current_revision(engine)
        await db.downgrade(engine, args.revision)
        return before, await db.current_revision(engine)

    before, after = _run(settings, job)
    out.write(f"{_where(settings)}: schema downgraded from {before} to {after or 'nothing'}\n")
    return 0


def cmd_db_current(args: argparse.Namespace, out: TextIO) -> int:
    from . import db

    settings = _settings(args)
    current = _run(settings, db.current_revision)
    head = db.head_revision()
    if current == head:
        state = "up to date"
    elif current is None:
        state = f"empty: run `callflow db upgrade` (to {head})"
    else:
        state = f"this callflow needs {head}: run `callflow db upgrade`"
    out.write(f"{_where(settings)}: {current or 'no schema'} ({state})\n")
    return 0 if current == head else 1


def cmd_db_purge(args: argparse.Namespace, out: TextIO) -> int:
    from . import db
    from .leftovers import purge_leftovers
    from .maintenance import purge

    settings = _settings(args)
    days = settings.privacy.retention_days

    async def job(engine: AsyncEngine) -> Any:
        await db.check_schema(engine)
        erase = settings.privacy.callback_erase_days
        return await purge(engine, datetime.now(UTC), days, callback_erase_days=erase, who=_who())

    r = _run(settings, job)
    left = purge_leftovers(settings.state_path(settings.database.spool_dir), r.cutoff)
    out.write(
        f"purged calls started before {r.cutoff:%Y-%m-%d %H:%M} UTC ({days} days): "
        f"{r.calls} calls, {r.steps} steps deleted; {r.callbacks_anonymised} callback "
        f"requests anonymised ({r.callbacks_cancelled} still pending were cancelled); "
        f"{left.rejected} rejected records and {left.corrupt} corrupt segments removed\n"
    )
    return 0


# -- export -------------------------------------------------------------------------------


def cmd_db_retire_node(args: argparse.Namespace, out: TextIO) -> int:
    from . import db
    from .retire import NodeActive, Retired, retire_node

    settings = _settings(args)
    node = args.node.strip()
    if not node:
        raise UserError("retire-node: give the node's [node] name")
    if node == settings.node.resolved:
        raise UserError(
            f"node {node} is this settings file's own node: its daemon closes its open calls "
            "itself when it starts (give the settings of a node that is still running)"
        )
    if args.quiet_minutes < 0:
        raise UserError("--quiet-minutes must be 0 or more")
    who = args.by or _who()

    async def job(engine: AsyncEngine) -> Retired:
        await db.check_schema(engine)
        return await retire_node(
            engine,
            node,
            by=who,
            now=datetime.now(UTC),
            quiet=timedelta(minutes=args.quiet_minutes),
        )

    try:
        done = _run(settings, job)
    except NodeActive as exc:
        raise UserError(
            f"{exc}, less than {args.quiet_minutes} min ago: is it really gone? Stop it "
            "first, or wait (--quiet-minutes to change the delay)"
        ) from None
    if done.last is None:
        out.write(f"node {node}: no call logged by this node (nothing to close)\n")
        return 0
    out.write(
        f"node {node} retired by {who}: {done.closed} open call(s) closed"
        f" ({done.reached} had reached someone, {done.closed - done.reached} lost);"
        f" its last call was at {done.last.isoformat(timespec='seconds')}\n"
    )
    return 0


def cmd_export(args: argparse.Namespace, out: TextIO) -> int:
    from . import db
    from .maintenance import export_caller
    from .privacy import CallerPrivacy

    settings = _settings(args)
    privacy = CallerPrivacy.from_settings(settings)

    async def job(engine: AsyncEngine) -> dict[str, Any]:
        await db.check_schema(engine)
        return await export_caller(engine, privacy, args.caller, now=datetime.now(UTC), who=_who())

    data = _run(settings, job)
    json.dump(data, out, indent=2, ensure_ascii=False)
    out.write("\n")
    return 0


# -- report -------------------------------------------------------------------------------


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UserError(f"unknown time zone {name!r} (e.g. Europe/Paris)") from None


def parse_bound(text: str, tz: ZoneInfo, *, end: bool) -> datetime:
    """``YYYY-MM-DD`` is a whole local day (``--to`` includes it); a time is exact."""
    text = text.strip()
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise UserError(
            f"invalid date {text!r}: expected YYYY-MM-DD or 'YYYY-MM-DD HH:MM'"
        ) from None
    if not 1900 <= t.year <= 2999:
        raise UserError(f"invalid date {text!r}: the year must be between 1900 and 2999")
    day_only = len(text) == 10
    if t.tzinfo is None:
        t = t.replace(tzinfo=tz)
    if end and day_only:
        # The next local midnight (a calendar day, whatever its length around DST).
        nxt = (t.replace(tzinfo=None) + timedelta(days=1)).replace(tzinfo=tz)
        return nxt
    return t


def parse_month(text: str | None, today: datetime) -> tuple[int, int]:
    """``YYYY-MM``; None: the month before ``today``'s (the last whole month)."""
    if text is None:
        return (today.year, today.month - 1) if today.month > 1 else (today.year - 1, 12)
    try:
        first = datetime.strptime(text.strip(), "%Y-%m")
    except ValueError:
        raise UserError(f"invalid month {text!r}: expected YYYY-MM, e.g. 2026-03") from None
    if not 1900 <= first.year <= 2999:
        raise UserError(f"invalid month {text!r}: the year must be between 1900 and 2999")
    return first.year, first.month


def cmd_report(args: argparse.Namespace, out: TextIO) -> int:
    from . import db
    from .report import RENDERERS, Period, build_report

    settings = _settings(args)
    tz = _zone(args.timezone)
    if args.start is None and args.end is None:
        return _quality_report(args, settings, tz, out)
    if args.start is None or args.end is None or args.month is not None:
        raise UserError("give --from and --to together, or --month (the quality report)")
    start = parse_bound(args.start, tz, end=False)
    end = parse_bound(args.end, tz, end=True)
    if end <= start:
        raise UserError("--to must not be before --from")
    period = Period(start, end, tz, args.flow)

    async def job(engine: AsyncEngine) -> dict[str, Any]:
        await db.check_schema(engine)
        return await build_report(engine, period)

    language = args.language or settings.daemon.language
    out.write(RENDERERS[args.format](_run(settings, job), language))
    return 0


def _quality_report(args: argparse.Namespace, settings: Settings, tz: ZoneInfo, out: TextIO) -> int:
    from . import db
    from .quality import QUALITY_RENDERERS, build_quality

    year, month = parse_month(args.month, datetime.now(tz))

    async def job(engine: AsyncEngine) -> dict[str, Any]:
        await db.check_schema(engine)
        return await build_quality(engine, year, month, tz, args.flow)

    out.write(QUALITY_RENDERERS[args.format](_run(settings, job)))
    return 0


__all__ = ["add_commands", "parse_bound", "parse_month"]


# -- callbacks -------------------------------------------------------------------------------


def _add_callback_commands(sub: Any, config: Callable[[argparse.ArgumentParser], None]) -> None:
    c = sub.add_parser("callbacks", help="the callback queue: list pending requests, mark done")
    csub = c.add_subparsers(dest="callbacks_command", required=True, metavar="ACTION")
    ls = csub.add_parser("list", help="pending callback requests, oldest first")
    ls.add_argument("--queue", help="only this queue")
    ls.add_argument("--json", action="store_true")
    config(ls)
    ls.set_defaults(func=cmd_callbacks_list)
    done = csub.add_parser("done", help="mark a callback request completed")
    done.add_argument("id", type=int)
    done.add_argument("--by", help="who called the patient back (default: this user)")
    done.add_argument("--cancel", action="store_true", help="cancel it instead")
    config(done)
    done.set_defaults(func=cmd_callbacks_done)


def _flows(settings: Settings) -> FlowSet | None:
    from ..flow.registry import load_flows

    try:
        return load_flows([settings.resolve(settings.flows.dir)])
    except UserError:
        return None  # overdue delays fall back to the default; the list still works


def _human(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    return f"{minutes // 60}h{minutes % 60:02d}" if minutes >= 60 else f"{minutes} min"


def cmd_callbacks_list(args: argparse.Namespace, out: TextIO) -> int:
    from . import db
    from .callbacks import pending_callbacks

    settings = _settings(args)
    flows = _flows(settings)
    now = datetime.now(UTC)

    async def job(engine: AsyncEngine) -> list[PendingCallback]:
        await db.check_schema(engine)
        return await pending_callbacks(engine, flows, now, args.queue)

    items = _run(settings, job)
    if args.json:
        rows = [
            {**c.__dict__, "created": c.created.isoformat(), "waiting": c.waiting.total_seconds()}
            for c in items
        ]
        json.dump(rows, out, ensure_ascii=False)
        out.write("\n")
        return 0
    if not items:
        out.write("no pending callback\n")
        return 0
    out.write(f"{'id':>5}  {'queue':<12} {'prio':<7} {'tier':<4} {'caller':<14} waiting\n")
    for c in items:
        late = "  OVERDUE" if c.overdue else ""
        out.write(
            f"{c.id:>5}  {c.queue:<12} {c.priority:<7} {c.tier or '-'!s:<4} "
            f"{c.caller or '?':<14} {_human(c.waiting)}{late}\n"
        )
    return 0


def cmd_callbacks_done(args: argparse.Namespace, out: TextIO) -> int:
    from . import db
    from .maintenance import complete_callback

    settings = _settings(args)
    who = args.by or _who()
    status = "cancelled" if args.cancel else "done"

    async def job(engine: AsyncEngine) -> bool:
        await db.check_schema(engine)
        return await complete_callback(engine, args.id, by=who, at=datetime.now(UTC), status=status)

    if not _run(settings, job):
        raise UserError(f"callback {args.id} is not pending (unknown, or already completed)")
    out.write(f"callback {args.id} {status} by {who}\n")
    return 0
