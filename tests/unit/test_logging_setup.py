"""The daemon's log lines: the format the admin reads, made without the per-line work that
no format shows (threads, processes, the caller's source line)."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Iterator

import pytest

from callflow.app import setup_logging
from callflow.settings import DaemonSettings, Settings

FLAGS = ("logThreads", "logProcesses", "logMultiprocessing", "_srcfile")


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = [getattr(logging, f) for f in FLAGS], root.handlers[:], root.level
    try:
        yield
    finally:
        for name, value in zip(FLAGS, saved[0], strict=True):
            setattr(logging, name, value)
        root.handlers[:] = saved[1]
        root.setLevel(saved[2])


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_log_lines_keep_their_format_without_thread_process_or_source(
    fmt: str, restored_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = dataclasses.replace(Settings(), daemon=DaemonSettings(log_format=fmt))
    setup_logging(settings)
    logging.getLogger("callflow.call").info("call=%s step=%s", "c1", "menu")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    if fmt == "text":
        assert re.fullmatch(
            r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO    callflow\.call: call=c1 step=menu", line
        )
    else:
        data = json.loads(line)
        assert (data["level"], data["logger"], data["message"]) == (
            "INFO",
            "callflow.call",
            "call=c1 step=menu",
        )
    records: list[logging.LogRecord] = []
    catch = logging.Handler()
    catch.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("callflow.call")
    logger.addHandler(catch)
    try:
        logger.info("once more")
    finally:
        logger.removeHandler(catch)
    (record,) = records
    # Not computed for each line: no format shows them.
    assert record.thread is None and record.process is None
    assert (record.funcName, record.lineno) == ("(unknown function)", 0)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_the_time_of_a_line_is_the_stock_formatter_s(
    fmt: str, restored_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """The date and time are formatted once per second and reused: every line still shows
    its own time, to the millisecond, as the stock formatter would."""
    settings = dataclasses.replace(Settings(), daemon=DaemonSettings(log_format=fmt))
    setup_logging(settings)
    (handler,) = logging.getLogger().handlers
    ours = handler.formatter
    assert ours is not None
    datefmt = "%Y-%m-%dT%H:%M:%S%z" if fmt == "json" else None
    stock = logging.Formatter()
    # Within one second, across a second, back to an earlier one, far away.
    for created in (1764756000.001, 1764756000.999, 1764756001.0, 1764756000.5, 1700000000.25):
        record = logging.makeLogRecord({"msg": "x"})
        record.created, record.msecs = created, (created - int(created)) * 1000
        assert ours.formatTime(record, datefmt) == stock.formatTime(record, datefmt)
