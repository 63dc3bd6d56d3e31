"""The continuity audit, as text for the IT admin (``callflow check --horizon``)."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from .continuity import ContinuityReport


def format_report(report: ContinuityReport, tz: ZoneInfo) -> str:
    days = (report.end - report.start).total_seconds() / 86400
    lines = [
        f"continuity of flow {report.flow}: {report.start.astimezone(tz):%Y-%m-%d %H:%M} "
        f"to {report.end.astimezone(tz):%Y-%m-%d %H:%M} ({days:g} days, {report.slots} slots, "
        f"{report.situations} calendar situations)"
    ]
    if not report.gaps:
        lines.append("  no gap: in every slot, every caller path reaches someone")
    for gap in report.gaps:
        lines.append(
            f"  GAP {gap.start.astimezone(tz):%a %Y-%m-%d %H:%M} → "
            f"{gap.end.astimezone(tz):%a %Y-%m-%d %H:%M}: {gap.path.describe()}"
        )
    if report.truncated:
        lines.append("  (some menus were too deep or had too many paths: not every path played)")
    return "\n".join(lines) + "\n"
