"""Retention for what the journal leaves beside the database: records the database refused
(``rejected.jsonl``) and segments set aside as corrupt (``corrupt/``).  They hold caller
numbers like the call log does, so the same retention period applies to them."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ..files import write_private

log = logging.getLogger("callflow.store")

REJECTED = "rejected.jsonl"
CORRUPT = "corrupt"


@dataclass(frozen=True)
class LeftoversPurged:
    rejected: int  # lines dropped from rejected.jsonl
    corrupt: int  # segments removed from corrupt/


def _line_time(line: str, fallback: datetime) -> datetime:
    try:
        at = datetime.fromisoformat(json.loads(line)["at"])
    except (ValueError, KeyError, TypeError):
        return fallback  # a line of an older release: as old as the file
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def purge_leftovers(spool_dir: Path, cutoff: datetime) -> LeftoversPurged:
    """Drop rejected records written before ``cutoff`` and corrupt segments last touched
    before it.  The rejected file is rewritten whole (owner-only) and swapped in atomically."""
    dropped = removed = 0
    rejected = spool_dir / REJECTED
    if rejected.exists():
        mtime = datetime.fromtimestamp(rejected.stat().st_mtime, UTC)
        lines = rejected.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
        kept = [ln for ln in lines if ln.strip() and _line_time(ln, mtime) >= cutoff]
        dropped = sum(1 for ln in lines if ln.strip()) - len(kept)
        if dropped:
            write_private(rejected, "".join(kept))
    corrupt = spool_dir / CORRUPT
    if corrupt.is_dir():
        for seg in corrupt.iterdir():
            if seg.is_file() and datetime.fromtimestamp(seg.stat().st_mtime, UTC) < cutoff:
                seg.unlink()
                removed += 1
    if dropped or removed:
        log.info("purge: %d rejected record(s), %d corrupt segment(s) removed", dropped, removed)
    return LeftoversPurged(dropped, removed)


__all__ = ["CORRUPT", "REJECTED", "LeftoversPurged", "purge_leftovers"]
