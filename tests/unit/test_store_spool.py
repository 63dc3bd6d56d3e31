"""The spool on its own: line format, damage detection, segments, failed appends, the lock."""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import pytest

from callflow.errors import UserError
from callflow.store.spool import Spool, decode_line, encode_line


def test_a_line_round_trips() -> None:
    rec = {"t": "step", "call_id": "c1", "seq": 3, "duration": 0.1, "detail": "é → 1"}
    line = encode_line(rec)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode_line(line) == rec


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (encode_line({"t": "call", "id": "c1"}).replace(b"c1", b"c2"), "checksum mismatch"),
        (encode_line({"t": "call", "id": "c1"})[:-5], "truncated"),
        (b"{not json\n", "not JSON"),
        (b"\xff\xfe\n", "not JSON"),
        (b'{"crc": 1}\n', "not a spool record"),
        (b"[]\n", "not a spool record"),
    ],
)
def test_damage_is_detected(line: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        decode_line(line)


def test_segments_are_sealed_and_replayed_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_records=3)
    spool.open()
    spool.append([{"n": i} for i in range(2)])
    spool.append([{"n": i} for i in range(2, 5)])  # 5 lines: sealed at 3 or more
    spool.append([{"n": 5}])
    assert spool.size == 6
    assert [p.name for p in sorted(tmp_path.glob("segment-*"))] == [
        "segment-000000000001.jsonl",
        "segment-000000000002.jsonl",
    ]
    seen = []
    while (seg := spool.oldest()) is not None:
        while True:
            batch = spool.read_batch(seg, 2)
            seen += [r["n"] for r in batch.records]
            spool.advance(seg, batch)
            if batch.last:
                break
        spool.done(seg)
    assert seen == list(range(6)) and spool.size == 0 and spool.empty
    assert list(tmp_path.glob("segment-*")) == []
    spool.close()


def test_the_active_segment_is_sealed_before_it_is_replayed(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.open()
    spool.append([{"n": 1}])
    seg = spool.oldest()
    assert seg is not None
    spool.append([{"n": 2}])  # goes to a new segment, not into the one being replayed
    assert spool.read_batch(seg, 10).records == [{"n": 1}]
    spool.done(seg)
    assert spool.size == 1
    spool.close()


def test_a_partial_read_resumes_where_it_stopped(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.open()
    spool.append([{"n": i} for i in range(5)])
    seg = spool.oldest()
    assert seg is not None
    first = spool.read_batch(seg, 2)
    assert first.records == [{"n": 0}, {"n": 1}] and not first.last
    spool.advance(seg, first)  # written
    second = spool.read_batch(seg, 2)
    assert second.records == [{"n": 2}, {"n": 3}]  # not written (the database failed)
    assert spool.size == 3
    again = spool.read_batch(seg, 10)
    assert [r["n"] for r in again.records] == [2, 3, 4] and again.last
    spool.close()


def test_a_failed_append_leaves_no_half_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path)
    spool.open()
    spool.append([{"n": 1}])
    [path] = tmp_path.glob("segment-*")
    size = path.stat().st_size

    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError):
        spool.append([{"n": 2}, {"n": 3}])
    monkeypatch.undo()
    assert path.stat().st_size == size and spool.size == 1
    spool.append([{"n": 4}])
    seg = spool.oldest()
    assert seg is not None
    assert [r["n"] for r in spool.read_batch(seg, 10).records] == [1, 4]
    spool.close()


def test_a_restart_finds_the_segments(tmp_path: Path) -> None:
    first = Spool(tmp_path)
    first.open()
    first.append([{"n": 1}, {"n": 2}])
    first.close()
    second = Spool(tmp_path)
    second.open()
    assert second.size == 2
    second.append([{"n": 3}])
    assert len(list(tmp_path.glob("segment-*"))) == 2  # never appends to an old segment
    second.close()


def test_one_process_per_spool(tmp_path: Path) -> None:
    a, b = Spool(tmp_path), Spool(tmp_path)
    a.open()
    with pytest.raises(UserError, match="in use by another callflow process"):
        b.open()
    a.close()
    b.open()
    b.close()


def _replay_all(spool: Spool, read: str, n: int) -> list[tuple[list[dict[str, object]], int, int]]:
    """Every batch of the oldest segment as (records, offset, line_no), without advancing
    the spool's own position."""
    seg = spool.oldest()
    assert seg is not None
    out = []
    offset, line_no = seg.offset, seg.line_no
    while True:
        batch = spool.memo_batch(seg, n) if read == "memo" else spool.read_batch(seg, n)
        assert batch is not None
        out.append((batch.records, batch.offset, batch.line_no))
        seg.offset, seg.line_no = batch.offset, batch.line_no
        if batch.last:
            break
    seg.offset, seg.line_no = offset, line_no
    return out


def test_the_replay_from_memory_gives_what_the_file_gives(tmp_path: Path) -> None:
    recs = [{"t": "step", "call_id": f"c{i}", "seq": i, "detail": "é" * i} for i in range(7)]
    spool = Spool(tmp_path)
    spool.open()
    spool.append(recs[:3])
    spool.append(recs[3:])
    from_memory = _replay_all(spool, "memo", 3)
    spool.close()
    assert [r for batch, _, _ in from_memory for r in batch] == recs
    again = Spool(tmp_path)  # a restart: nothing in memory, the file is read and checked
    again.open()
    seg = again.oldest()
    assert seg is not None and again.memo_batch(seg, 3) is None
    assert _replay_all(again, "file", 3) == from_memory  # same records, offsets, line numbers


def test_the_memory_for_the_replay_is_bounded(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_records=4, memo_limit=6)
    spool.open()
    spool.append([{"n": i} for i in range(4)])  # segment 1: in memory (4 of 6)
    spool.append([{"n": i} for i in range(4, 8)])  # segment 2: would pass 6: from its file
    spool.append([{"n": 8}])  # segment 3: room again (4 held, segment 2 let go)
    first = spool.oldest()
    assert first is not None and spool.memo_batch(first, 10) is not None
    second, third = spool._segments[1], spool._segments[2]
    assert spool.memo_batch(second, 10) is None
    assert spool.memo_batch(third, 10) is not None  # 4 + 1 <= 6
    # The segment read from its file replays all the same, in order.
    replayed = []
    while (seg := spool.oldest()) is not None:
        batch = spool.read_batch(seg, 10)
        replayed += batch.records
        assert batch.last
        spool.advance(seg, batch)
        spool.done(seg)
    assert replayed == [{"n": i} for i in range(9)]
    assert spool._memo_size == 0  # the memory is given back
    spool.append([{"n": 9}])
    seg = spool.oldest()
    assert seg is not None and spool.memo_batch(seg, 10) is not None


def old_line(rec: dict[str, object]) -> bytes:
    """A line as an older version wrote it: the checksum of the record's sorted JSON."""
    body = json.dumps(rec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    crc = zlib.crc32(body.encode("utf-8"))
    return f'{{"crc":{crc},"rec":{body}}}\n'.encode()


def test_a_line_checksums_the_bytes_of_its_record() -> None:
    rec = {"t": "call", "id": "c1", "caller": "é"}
    line = encode_line(rec)
    head, body = line.split(b',"rec":', 1)
    assert head.startswith(b'{"crc32":') and body.endswith(b"}\n")
    assert int(head[len(b'{"crc32":') :]) == zlib.crc32(body[:-2])
    assert json.loads(line) == {"crc32": zlib.crc32(body[:-2]), "rec": rec}  # still JSON


def test_an_older_versions_line_still_decodes() -> None:
    rec = {"t": "step", "seq": 2, "detail": "é → 1", "at": "2026-03-02T09:00:00+00:00"}
    assert decode_line(old_line(rec)) == rec
    with pytest.raises(ValueError, match="checksum mismatch"):
        decode_line(old_line(rec).replace(b'seq":2', b'seq":3'))


def test_any_flipped_byte_of_a_line_is_refused() -> None:
    line = encode_line({"t": "step", "call_id": "c1", "seq": 3, "detail": "é"})
    for i in range(len(line)):
        for mask in (0x01, 0x20, 0x80):
            damaged = line[:i] + bytes([line[i] ^ mask]) + line[i + 1 :]
            with pytest.raises(ValueError):
                decode_line(damaged)


@pytest.mark.parametrize(
    "line",
    [
        b'{"crc32":12,"rec":{}\n',  # no closing brace
        b'{"crc32":x1,"rec":{}}\n',  # not a number
        b'{"crc32":1"rec":{}}\n',  # no record
        b'{"crc32":%d,"rec":[]}\n' % zlib.crc32(b"[]"),  # not an object
        b'{"crc32":%d,"rec":{x}}\n' % zlib.crc32(b"{x}"),  # not JSON, right checksum
    ],
)
def test_a_damaged_crc32_line_is_refused(line: bytes) -> None:
    with pytest.raises(ValueError):
        decode_line(line)


def test_a_segment_of_old_and_new_lines_replays_whole(tmp_path: Path) -> None:
    """A spool left by the previous version, then appended to by this one, replays in order
    from its file (the state after a restart)."""
    old = [{"t": "call", "n": i} for i in range(3)]
    (tmp_path / "segment-000000000001.jsonl").write_bytes(b"".join(map(old_line, old)))
    spool = Spool(tmp_path)
    spool.open()
    spool.append([{"t": "call", "n": 3}])  # a new segment, after the old one
    seen = []
    while (seg := spool.oldest()) is not None:
        while True:
            batch = spool.read_batch(seg, 10)
            seen += [r["n"] for r in batch.records]
            spool.advance(seg, batch)
            if batch.last:
                break
        assert not seg.bad_lines
        spool.done(seg)
    spool.close()
    assert seen == [0, 1, 2, 3]
    spool = Spool(tmp_path)  # and the new form is read from a file too, after a restart
    spool.open()
    spool.append([{"t": "call", "n": 4}])
    spool.close()
    spool.open()
    seg = spool.oldest()
    assert seg is not None and seg.memo is None
    assert spool.read_batch(seg, 10).records == [{"t": "call", "n": 4}]
    spool.close()


def counting_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The file descriptors fsync'd from now on (the real fsync still runs)."""
    done: list[int] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        done.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return done


def test_write_hands_records_to_the_kernel_and_the_sync_job_fsyncs_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path, segment_records=3)
    spool.open()
    fsyncs = counting_fsyncs(monkeypatch)
    spool.write([{"n": 1}, {"n": 2}])
    # In the file (another process reads them: a kill of this one loses nothing), unsynced.
    [first] = tmp_path.glob("segment-*")
    assert [decode_line(line)["n"] for line in first.read_bytes().splitlines(True)] == [1, 2]
    assert fsyncs == [] and spool.unsynced
    job = spool.take_sync()
    assert job is not None and not spool.unsynced and spool.take_sync() is None
    assert job.directory == tmp_path  # the new segment's name is fsync'd with it
    job.run()
    assert len(fsyncs) == 2  # the segment, then the folder
    spool.write([{"n": 3}, {"n": 4}])  # the first segment fills (3) and is sealed
    sealed = next(iter(spool._sealed_unsynced))
    assert not sealed.closed  # closed by the job, after its fsync (a thread may be in it)
    job = spool.take_sync()
    assert job is not None and job.sealed == [sealed] and job.directory is None
    job.run()
    assert sealed.closed and len(fsyncs) == 3
    assert spool.size == 4
    spool.close()
    assert len(fsyncs) == 3  # nothing was owed any more


def test_close_fsyncs_what_is_owed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = Spool(tmp_path)
    spool.open()
    fsyncs = counting_fsyncs(monkeypatch)
    spool.write([{"n": 1}])
    spool.close()
    assert len(fsyncs) == 2  # the segment and the folder


def test_a_clean_segment_sealed_is_closed_without_an_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path)
    spool.open()
    spool.write([{"n": 1}])
    job = spool.take_sync()
    assert job is not None
    job.run()
    active = spool._active
    assert active is not None
    fsyncs = counting_fsyncs(monkeypatch)
    assert spool.oldest() is not None  # the replay reaches it: sealed, nothing owed
    spool.close()
    assert active.closed and fsyncs == []  # closing the spool fsyncs nothing on the loop


def test_a_failed_fsync_still_fsyncs_the_rest_and_closes_the_sealed_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path, segment_records=1)
    spool.open()
    spool.write([{"n": 1}])  # sealed at once (one record a segment)
    spool.write([{"n": 2}])
    job = spool.take_sync()
    assert job is not None and len(job.sealed) == 2
    tried: list[int] = []

    def failing(fd: int) -> None:
        tried.append(fd)
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(OSError, match="Input/output"):
        job.run()
    assert len(tried) == 3  # both segments, then the folder, despite the first failure
    assert all(f.closed for f in job.sealed)
    monkeypatch.undo()
    spool.close()
