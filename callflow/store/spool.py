"""An append-only local spool: records wait here, on disk, while the database is away.

The spool is a folder of segments, ``segment-<n>.jsonl``, replayed in order of ``n``.  Each
line is one record: ``{"crc32": <crc32 of the bytes of "rec">, "rec": {...}}`` (an older
version wrote ``{"crc": <crc32 of "rec" re-encoded with sorted keys>, ...}``: still read).
``append`` writes and fsyncs before it returns: the records survive a crash of the daemon
or of the machine.  ``write`` only hands them to the kernel (no thread, no disk wait: cheap
enough for the event loop), which a kill of the daemon cannot lose; ``take_sync`` then
gives the fsync of everything written so far as a ``SyncJob`` to run in a thread, so that
a group commit costs no thread wake-up and the fsyncs come once in a while (the recorder's
``sync_interval``), as Redis's ``appendfsync everysec`` does.  New records go to the newest (active)
segment; a segment is *sealed* (no longer written to) when it reaches ``segment_records``
lines or when the replay comes to it, so a segment being replayed is never being written.

A line that cannot be read back (torn by a crash, bad JSON, wrong checksum, unknown record)
is skipped: the rest of the segment replays, and the segment is then moved to
``corrupt/`` instead of being deleted, with an error naming the bad lines, so nothing is
lost silently.

One process at a time: the spool takes an exclusive lock (``.lock``) for its lifetime.

The records a segment received in this process are also kept in memory (up to
``memo_limit`` records in all), so that the replay feeds the database from them instead of
reading back, decoding and checksumming what it has just written: the file is the journal
a crash replays, the memory only spares the running daemon that work.  A segment found at
start, or begun while the memory was full (a long database outage), is read from its file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..errors import UserError

log = logging.getLogger("callflow.store")

_PREFIX = "segment-"
_SUFFIX = ".jsonl"
_APPEND = os.O_WRONLY | os.O_CREAT | os.O_APPEND


# One encoder for every line: ``json.dumps`` with options builds a new one per call.
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode
_HEAD = b'{"crc32":'  # a line's start since the checksum covers its body's bytes
_REC = b',"rec":'


def encode_line(rec: dict[str, Any]) -> bytes:
    """``{"crc32":<crc32 of the body>,"rec":<body>}``: the checksum covers the body's bytes
    as written, so reading the line back checks them without encoding the record again."""
    body = _ENCODE(rec).encode("utf-8")
    return b"%s%d%s%s}\n" % (_HEAD, zlib.crc32(body), _REC, body)


def decode_line(line: bytes) -> dict[str, Any]:
    """The record of one spool line; ``ValueError`` when the line is damaged.  Reads both
    forms: ``crc32`` (the body's bytes) and the older ``crc`` (the record's sorted JSON)."""
    if not line.endswith(b"\n"):
        raise ValueError("truncated line (no end of line)")
    if line.startswith(_HEAD):
        return _decode_crc32(line)
    try:
        outer = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(outer, dict) or not isinstance(outer.get("rec"), dict):
        raise ValueError("not a spool record")
    rec: dict[str, Any] = outer["rec"]
    body = json.dumps(rec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if zlib.crc32(body.encode("utf-8")) != outer.get("crc"):
        raise ValueError("checksum mismatch")
    return rec


def _decode_crc32(line: bytes) -> dict[str, Any]:
    end = line.find(_REC, len(_HEAD))
    if end < 0 or not line.endswith(b"}\n"):
        raise ValueError("not a spool record")
    digits = line[len(_HEAD) : end]
    if not digits.isdigit():
        raise ValueError("not a spool record")
    body = line[end + len(_REC) : -2]
    if zlib.crc32(body) != int(digits):
        raise ValueError("checksum mismatch")
    try:
        rec = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(rec, dict):
        raise ValueError("not a spool record")
    return rec


@dataclass
class Segment:
    number: int
    path: Path
    records: int  # lines in the file (counted when found, then as appended)
    bad_lines: list[int] = field(default_factory=list)  # 1-based line numbers
    offset: int = 0  # bytes already replayed (in this process)
    line_no: int = 0  # lines already replayed
    # Every record of the file with its line's length, when all were appended in this
    # process and the memory had room: the replay reads them here, not from the file.
    memo: list[tuple[dict[str, Any], int]] | None = None


@dataclass(frozen=True)
class SyncJob:
    """The fsyncs that make what ``Spool.write`` wrote survive a power loss: run it in a
    thread (``run`` blocks on the disk), and touch the spool again only once it is done
    (the recorder's one writer task awaits it).  It closes the sealed files it owns."""

    files: list[IO[bytes]]  # fsync'd
    sealed: list[IO[bytes]]  # closed at the end (fsync'd first when also in ``files``)
    directory: Path | None  # fsync'd too when a segment was created in it

    def run(self) -> None:
        """Every fsync is tried, even after one failed; the first error is raised."""
        error: OSError | None = None
        for f in self.files:
            try:
                os.fsync(f.fileno())
            except OSError as exc:
                error = error or exc
        if self.directory is not None:
            _fsync_dir(self.directory)
        for f in self.sealed:
            with contextlib.suppress(OSError):
                f.close()
        if error is not None:
            raise error


@dataclass(frozen=True)
class Batch:
    records: list[dict[str, Any]]
    offset: int  # where the segment's replay stands once these records are written
    line_no: int
    last: bool  # nothing follows in the segment


class Spool:
    def __init__(
        self, directory: Path, *, segment_records: int = 10_000, memo_limit: int = 20_000
    ) -> None:
        self.dir = directory
        self.segment_records = segment_records
        self.memo_limit = memo_limit  # records kept in memory for the replay, in all
        self._memo_size = 0
        self.corrupt_dir = directory / "corrupt"
        self._lock: IO[bytes] | None = None
        self._segments: list[Segment] = []
        self._active: IO[bytes] | None = None  # the open newest segment, when not sealed
        # What ``write`` left to fsync (``take_sync``): the active segment's new bytes,
        # sealed segments still open, a segment file created in the folder.
        self._active_unsynced = False
        self._sealed_unsynced: list[IO[bytes]] = []
        self._sealed_synced: list[IO[bytes]] = []  # only to close
        self._dir_unsynced = False

    # -- lifetime ------------------------------------------------------------------------

    def open(self) -> None:
        """Lock the folder and find the segments left by a previous run."""
        try:
            # Records hold caller numbers: the folder and its files are the owner's only.
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            if self.dir.stat().st_mode & 0o077:
                os.chmod(self.dir, 0o700)
            lock = os.fdopen(os.open(self.dir / ".lock", _APPEND, 0o600), "ab")
        except OSError as exc:
            raise UserError(f"spool {self.dir}: {exc.strerror}") from None
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            raise UserError(
                f"spool {self.dir} is in use by another callflow process: "
                "each daemon needs its own [database] spool_dir"
            ) from None
        self._lock = lock
        found = []
        for p in self.dir.glob(f"{_PREFIX}*{_SUFFIX}"):
            try:
                n = int(p.name[len(_PREFIX) : -len(_SUFFIX)])
            except ValueError:
                continue
            if p.stat().st_mode & 0o077:  # left by an older version: narrow it
                os.chmod(p, 0o600)
            found.append(Segment(n, p, _count_lines(p)))
        self._segments = sorted(found, key=lambda s: s.number)
        if self._segments:
            log.warning(
                "spool %s: %d records in %d segments wait to be written to the database",
                self.dir,
                self.size,
                len(self._segments),
            )

    def close(self) -> None:
        self.seal()
        job = self.take_sync()
        if job is not None:
            with contextlib.suppress(OSError):  # the records are in the file, only unsynced
                job.run()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # -- state ---------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Records in the spool not yet replayed."""
        return sum(s.records - s.line_no for s in self._segments)

    @property
    def empty(self) -> bool:
        return not self._segments

    # -- writing -------------------------------------------------------------------------

    @property
    def unsynced(self) -> bool:
        """Something written is not fsync'd yet (``take_sync`` has work)."""
        return self._active_unsynced or bool(self._sealed_unsynced) or self._dir_unsynced

    def append(self, records: list[dict[str, Any]]) -> None:
        """Append and fsync; ``OSError`` (e.g. disk full) leaves the spool as it was."""
        self._put(records, sync=True)
        job = self.take_sync()  # the folder, when a segment was created, and sealed files
        if job is not None:
            job.run()

    def write(self, records: list[dict[str, Any]]) -> None:
        """Append without fsync (the kernel has them: a kill of the process loses nothing;
        ``take_sync`` makes them survive a power loss); ``OSError`` (e.g. disk full)
        leaves the spool as it was."""
        self._put(records, sync=False)

    def take_sync(self) -> SyncJob | None:
        """The fsyncs owed for what was written so far, or None: run the job in a thread."""
        files, self._sealed_unsynced = self._sealed_unsynced, []
        sealed = [*files, *self._sealed_synced]
        self._sealed_synced = []
        if self._active is not None and self._active_unsynced:
            files = [*files, self._active]
        directory = self.dir if self._dir_unsynced else None
        self._active_unsynced = self._dir_unsynced = False
        if not sealed and not files and directory is None:
            return None
        return SyncJob(files, sealed, directory)

    def _put(self, records: list[dict[str, Any]], *, sync: bool) -> None:
        if not records:
            return
        lines = [encode_line(r) for r in records]
        data = b"".join(lines)
        f, seg = self._writable()
        pos = f.tell()
        try:
            f.write(data)
            f.flush()
            if sync:
                os.fsync(f.fileno())
            else:
                self._active_unsynced = True
        except OSError:
            # Do not leave half a record behind: cut the file back to where it was.
            with contextlib.suppress(OSError):
                f.truncate(pos)
                f.seek(pos)
            raise
        seg.records += len(records)
        if seg.memo is not None:
            if self._memo_size + len(records) <= self.memo_limit:
                seg.memo.extend(zip(records, map(len, lines), strict=True))
                self._memo_size += len(records)
            else:  # memory full (the database is away): this segment replays from its file
                self._forget(seg)
        if seg.records >= self.segment_records:
            self.seal()

    def _writable(self) -> tuple[IO[bytes], Segment]:
        if self._active is not None:
            return self._active, self._segments[-1]
        n = self._segments[-1].number + 1 if self._segments else 1
        path = self.dir / f"{_PREFIX}{n:012d}{_SUFFIX}"
        f = os.fdopen(os.open(path, _APPEND, 0o600), "ab")
        self._dir_unsynced = True  # the new file's name: fsync'd with its first records
        seg = Segment(n, path, 0, memo=[] if self._memo_size < self.memo_limit else None)
        self._segments.append(seg)
        self._active = f
        return f, seg

    def seal(self) -> None:
        """Stop appending to the active segment (the next append starts a new one).  Its
        file is closed by the next ``SyncJob`` (after its fsync if it has unsynced bytes),
        not here: a job running in a thread may hold it."""
        if self._active is not None:
            owed = self._sealed_unsynced if self._active_unsynced else self._sealed_synced
            owed.append(self._active)
            self._active = None
            self._active_unsynced = False

    # -- replay --------------------------------------------------------------------------

    def oldest(self) -> Segment | None:
        if not self._segments:
            return None
        if self._active is not None and self._segments[0] is self._segments[-1]:
            self.seal()
        return self._segments[0]

    def memo_batch(self, seg: Segment, n: int) -> Batch | None:
        """``read_batch`` from memory (no disk, no decoding: cheap enough for the event
        loop), or None when ``seg``'s records are not all in memory."""
        if seg.memo is None:
            return None
        chunk = seg.memo[seg.line_no : seg.line_no + n]
        line_no = seg.line_no + len(chunk)
        offset = seg.offset + sum(size for _, size in chunk)
        return Batch([rec for rec, _ in chunk], offset, line_no, line_no >= len(seg.memo))

    def read_batch(self, seg: Segment, n: int) -> Batch:
        """Up to ``n`` records of ``seg`` from where its replay stands.  Damaged lines are
        noted in ``seg.bad_lines`` (and logged once) and skipped.  Once the records are in
        the database, ``advance(seg, batch)``; a batch not advanced over is read again."""
        memo = self.memo_batch(seg, n)
        if memo is not None:
            return memo
        records: list[dict[str, Any]] = []
        line_no, offset = seg.line_no, seg.offset
        with seg.path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(offset)
            while len(records) < n:
                raw = f.readline()
                if not raw:
                    break
                line_no += 1
                offset += len(raw)
                try:
                    records.append(decode_line(raw))
                except ValueError as exc:
                    if line_no not in seg.bad_lines:
                        seg.bad_lines.append(line_no)
                        log.error(
                            "spool %s line %d is damaged (%s): skipped, kept in %s",
                            seg.path.name,
                            line_no,
                            exc,
                            self.corrupt_dir,
                        )
        return Batch(records, offset, line_no, offset >= size)

    def advance(self, seg: Segment, batch: Batch) -> None:
        seg.offset, seg.line_no = batch.offset, batch.line_no

    def done(self, seg: Segment) -> None:
        """``seg`` is entirely in the database: delete it (or keep it aside if damaged)."""
        assert self._segments and self._segments[0] is seg
        if seg.bad_lines:
            self.corrupt_dir.mkdir(mode=0o700, exist_ok=True)
            target = self.corrupt_dir / seg.path.name
            os.replace(seg.path, target)
            _fsync_dir(self.corrupt_dir)
            log.error(
                "spool %s replayed except damaged lines %s: the segment is kept as %s",
                seg.path.name,
                ", ".join(map(str, seg.bad_lines)),
                target,
            )
        else:
            seg.path.unlink()
        _fsync_dir(self.dir)
        self._segments.pop(0)
        self._forget(seg)

    def _forget(self, seg: Segment) -> None:
        if seg.memo is not None:
            self._memo_size -= len(seg.memo)
            seg.memo = None


def _count_lines(path: Path) -> int:
    n = 0
    with path.open("rb") as f:
        for _ in f:
            n += 1
    return n


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


__all__ = ["Batch", "Segment", "Spool", "SyncJob", "decode_line", "encode_line"]
