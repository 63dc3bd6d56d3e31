"""Loading a folder of flow files into a consistent set, and finding the flow of a number."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

from ..errors import Diagnostic, FlowError, UserError
from ..schedule import Calendar, FeedBook
from . import schema
from .loader import Document, load_file
from .parse import parse_document
from .validate import validate_flow

FLOW_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class LoadedFlow:
    """One valid flow, ready to run; immutable, so a reload never changes a running call."""

    spec: schema.FlowFile
    file: str
    version: str
    tz: ZoneInfo
    calendars: dict[str, Calendar]
    doc: Document = field(repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.spec.flow


@dataclass(frozen=True)
class FlowSet:
    flows: dict[str, LoadedFlow]
    by_number: dict[str, LoadedFlow]

    def for_number(self, dialed: str) -> LoadedFlow | None:
        return self.by_number.get(dialed)

    def feed_locations(self) -> list[str]:
        """Every iCal feed the calendars of these flows read, in first-seen order."""
        return list(
            dict.fromkeys(
                loc
                for f in self.flows.values()
                for cal in f.calendars.values()
                for loc, _ in cal.feed_locations
            )
        )


def compile_document(
    doc: Document, feeds: FeedBook | None = None, *, language: str = "en"
) -> LoadedFlow:
    """A checked flow; its calendars read their iCal feeds from ``feeds`` (none: no feed
    event counts), relative feed paths being relative to the flow file, and name holidays
    in ``language`` ("fr" or "en")."""
    spec = parse_document(doc)
    diags = validate_flow(spec, doc)
    if diags:
        raise FlowError(diags)
    tz = ZoneInfo(spec.timezone)
    base = Path(doc.file).parent
    calendars = {
        name: Calendar(name, cal, tz, feeds, base, language=language)
        for name, cal in spec.calendars.items()
    }
    return LoadedFlow(spec, doc.file, doc.digest, tz, calendars, doc)


def flow_files(paths: Iterable[Path]) -> list[Path]:
    """The flow files named by ``paths`` (files, or folders searched non-recursively)."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(f for f in p.iterdir() if f.suffix in FLOW_SUFFIXES and f.is_file()))
        elif p.exists():
            out.append(p)
        else:
            raise UserError(f"{p}: no such file or folder")
    return out


def load_flows(
    paths: Sequence[Path], feeds: FeedBook | None = None, *, language: str = "en"
) -> FlowSet:
    """Load and check every flow file; raise ``FlowError`` listing all problems of all files."""
    files = flow_files(paths)
    if not files:
        raise UserError(f"no flow files (*.yaml) in {', '.join(map(str, paths))}")
    diags: list[Diagnostic] = []
    loaded: list[LoadedFlow] = []
    for f in files:
        try:
            loaded.append(compile_document(load_file(f), feeds, language=language))
        except FlowError as exc:
            diags.extend(exc.diagnostics)
    flows: dict[str, LoadedFlow] = {}
    by_number: dict[str, LoadedFlow] = {}
    for lf in loaded:
        if lf.name in flows:
            first = flows[lf.name]
            m = first.doc.locate(("flow",))
            diags.append(
                lf.doc.diagnostic(
                    ("flow",), f"flow '{lf.name}' is already defined in {first.file}:{m.line}"
                )
            )
            continue
        flows[lf.name] = lf
        for i, number in enumerate(lf.spec.numbers):
            if number in by_number:
                other = by_number[number]
                where = other.doc.locate(("numbers", other.spec.numbers.index(number)))
                diags.append(
                    lf.doc.diagnostic(
                        ("numbers", i),
                        f"number '{number}' is already claimed by flow '{other.name}' "
                        f"({other.file}:{where.line})",
                    )
                )
            else:
                by_number[number] = lf
    if diags:
        raise FlowError(diags)
    return FlowSet(flows, by_number)
