"""The FastAGI wire protocol, bounded: the request headers, one command, its reply.

Asterisk opens a TCP connection per call (``AGI(agi://host:port/FLOW)``), sends
``agi_name: value`` lines ended by an empty line, then waits for one command line at a time
and answers each with ``200 result=N [(data)] [key=value]``.  Errors come as ``510 ...``,
``511 ...`` (the channel is dead) or a ``520-`` block ended by a ``520 `` line.  When the
channel hangs up, Asterisk writes a lone ``HANGUP`` line, at any moment.

Everything a peer sends is bounded: a line may be ``MAX_LINE`` bytes (the stream's limit),
the headers ``MAX_HEADERS`` lines and a 520 block ``MAX_USAGE_LINES``, and every read has a
timeout, so a client that stalls, floods or sends garbage costs one connection and nothing
else.  Arguments we send are checked: a newline or a quote in one would let a flow file or
a caller's data write a second command.

Why not panoramisk's FastAGI server (1.4): its handler reads the request with
``reader.read(100)`` until a blank line, with no bound and no timeout (and spins for ever on
a peer that closes first), routes by the script path in a dict of endpoints, has no
address check, reads replies with no timeout, takes Asterisk's asynchronous ``HANGUP`` line
for a command's reply, and runs each connection as a task of ``asyncio.start_server``'s,
which no part of ours would own.  What callflow needs of the protocol fits in this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass

from ..errors import LinkFault, PbxLinkError, TelephonyError

MAX_LINE = 4096  # bytes per line, the StreamReader's limit
MAX_HEADERS = 64  # agi_* lines in a request (Asterisk sends about 25)
MAX_USAGE_LINES = 64  # lines of a 520 usage block

_HEADER = re.compile(r"^(agi_[a-z0-9_]+):\s?(.*)$")
_REPLY = re.compile(r"^(\d{3})(?:[ -](.*))?$")
_RESULT = re.compile(r"^result=(-?\d+)(?:\s+\((.*)\))?(?:\s+(.*))?$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_()]{0,63}$")
_ARG_FORBIDDEN = re.compile(r'[\x00-\x1f"\\]')


class AgiError(TelephonyError):
    """The AGI session failed: a bad reply, a timeout, the connection gone."""


class AgiProtocolError(AgiError, PbxLinkError):
    """The peer sent something that is not FastAGI (garbage, an overlong line...): in a
    call, the link to the PBX failed, and the call goes to the dialplan fallback."""

    fault = LinkFault.SERVER_ERROR


class AgiClosed(AgiError):
    """The connection ended (Asterisk closes it once the channel is gone)."""


class AgiTimeout(AgiError, PbxLinkError):
    """A command took longer than it may (its reply may still come: the session is over,
    and the call goes to the dialplan fallback when AGI() returns)."""

    fault = LinkFault.TIMEOUT


class AgiDead(AgiError):
    """Asterisk refused a command because the channel has hung up (511)."""


@dataclass(frozen=True)
class AgiRequest:
    """The headers Asterisk sends first, without their ``agi_`` prefix."""

    headers: dict[str, str]

    def get(self, name: str) -> str:
        return self.headers.get(name, "")

    @property
    def channel(self) -> str:
        return self.get("channel")

    @property
    def uniqueid(self) -> str:
        return self.get("uniqueid")

    @property
    def script(self) -> str:
        """The path of ``agi://host/FLOW``: the flow the dialplan names ('' if none)."""
        return self.get("network_script").strip("/")

    @property
    def extension(self) -> str:
        return self.get("extension")

    @property
    def caller(self) -> str:
        number = self.get("callerid")
        return "" if number == "unknown" else number


@dataclass(frozen=True)
class AgiReply:
    code: int
    result: int  # result=N; -1 often means the channel hung up or the command failed
    data: str = ""  # the "(...)" part, e.g. a variable's value
    extra: str = ""  # what follows, e.g. "endpos=1234"

    @property
    def digit(self) -> str:
        """For STREAM FILE / GET OPTION / WAIT FOR DIGIT: the key pressed, '' for none."""
        return chr(self.result) if 0 < self.result < 256 else ""


async def _line(reader: asyncio.StreamReader, timeout: float | None) -> str:
    """One line without its end, bounded in size (the reader's limit) and in time."""
    try:
        raw = await asyncio.wait_for(reader.readuntil(b"\n"), timeout)
    except asyncio.IncompleteReadError as exc:
        where = " in the middle of a line" if exc.partial else ""
        raise AgiClosed(f"the connection closed{where}") from None
    except asyncio.LimitOverrunError:
        raise AgiProtocolError(f"a line longer than {MAX_LINE} bytes") from None
    except ValueError as exc:  # StreamReader reports an overrun this way too
        raise AgiProtocolError(f"a line longer than {MAX_LINE} bytes ({exc})") from None
    except ConnectionError as exc:
        raise AgiClosed(f"the connection failed: {exc}") from None
    except TimeoutError:
        raise AgiTimeout(f"no reply within {timeout} s") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise AgiProtocolError("a line that is not UTF-8") from None
    return text.rstrip("\r\n")


async def read_request(reader: asyncio.StreamReader, timeout: float) -> AgiRequest:
    """The request headers, all within ``timeout`` s; garbage is refused by name."""
    headers: dict[str, str] = {}
    try:
        async with asyncio.timeout(timeout):
            for _ in range(MAX_HEADERS + 1):
                line = await _line(reader, None)
                if not line:
                    if not headers:
                        raise AgiProtocolError("an empty request")
                    return AgiRequest(headers)
                m = _HEADER.match(line)
                if m is None:
                    raise AgiProtocolError(f"not an AGI header: {line[:40]!r}")
                headers[m.group(1).removeprefix("agi_")] = m.group(2)
    except TimeoutError:
        raise AgiTimeout(f"no complete request within {timeout} s") from None
    raise AgiProtocolError(f"more than {MAX_HEADERS} header lines")


def parse_reply(line: str) -> AgiReply:
    """A ``200 result=...`` line (codes other than 200 are raised by ``AgiSession``)."""
    m = _REPLY.match(line)
    if m is None:
        raise AgiProtocolError(f"not an AGI reply: {line[:40]!r}")
    code, rest = int(m.group(1)), m.group(2) or ""
    if code != 200:
        return AgiReply(code, -1, rest)
    r = _RESULT.match(rest.strip())
    if r is None:
        raise AgiProtocolError(f"a 200 reply without a result: {line[:40]!r}")
    return AgiReply(200, int(r.group(1)), r.group(2) or "", r.group(3) or "")


def quote(arg: str) -> str:
    """One command argument, quoted; refuses what could end the command or start another."""
    if _ARG_FORBIDDEN.search(arg):
        raise AgiError(f"refused AGI argument {arg[:20]!r}: control character, quote or backslash")
    return f'"{arg}"'


def check_name(name: str) -> str:
    """A channel variable (or function) name we may send as is."""
    if not _NAME.match(name):
        raise AgiError(f"refused AGI variable name {name[:20]!r}")
    return name


class AgiSession:
    """One FastAGI connection: send a command, read its reply; notes the HANGUP line.

    Commands are strictly one at a time (the protocol has no request ids): the lock makes
    a second caller wait instead of reading the first one's reply.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        command_timeout: float,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.command_timeout = command_timeout
        self.hung_up = False  # Asterisk said HANGUP (or refused a command with 511)
        self.closed = False
        self._lock = asyncio.Lock()

    async def command(self, line: str, *, timeout: float | None = None) -> AgiReply:
        """Send ``line`` and return its 200 reply.  ``timeout``: how long the command may
        take (a prompt, a dial); default ``command_timeout``.  Raises ``AgiDead`` (511),
        ``AgiError`` (510, 520, a timeout), ``AgiClosed``, ``AgiProtocolError``."""
        if "\n" in line or "\r" in line or len(line) >= MAX_LINE:
            raise AgiError("refused AGI command: a newline in it, or too long")
        if self.closed:
            raise AgiClosed("the AGI session is closed")
        wait = self.command_timeout if timeout is None else timeout
        async with self._lock:
            try:
                self.writer.write(line.encode() + b"\n")
                await asyncio.wait_for(self.writer.drain(), self.command_timeout)
            except (ConnectionError, TimeoutError) as exc:
                self.closed = True
                raise AgiClosed(f"cannot send to Asterisk: {exc or 'timeout'}") from None
            try:
                return await self._reply(wait)
            except (AgiTimeout, AgiProtocolError, AgiClosed, asyncio.CancelledError):
                # After a timeout, garbage or a cancelled wait the next line read could be
                # this command's late reply: the session cannot be trusted any more.
                self.closed = True
                raise

    async def _reply(self, timeout: float) -> AgiReply:
        try:
            return await asyncio.wait_for(self._read_reply(), timeout)
        except TimeoutError:
            raise AgiTimeout(f"no reply from Asterisk within {timeout} s") from None

    async def _read_reply(self) -> AgiReply:
        while True:
            line = await _line(self.reader, None)
            if line == "HANGUP":
                self.hung_up = True
                continue
            reply = parse_reply(line)
            if reply.code == 200:
                return reply
            if reply.code == 520:
                if line.startswith("520-"):
                    await self._skip_usage()
                raise AgiError(f"Asterisk: invalid command syntax ({reply.data[:60]})")
            if reply.code == 511:
                self.hung_up = True
                raise AgiDead("the channel has hung up")
            raise AgiError(f"Asterisk replied {reply.code} {reply.data[:60]}")

    async def _skip_usage(self) -> None:
        for _ in range(MAX_USAGE_LINES):
            if (await _line(self.reader, None)).startswith("520 "):
                return
        raise AgiProtocolError(f"a 520 block longer than {MAX_USAGE_LINES} lines")

    async def close(self) -> None:
        """End the session: Asterisk's AGI() returns and the dialplan goes on."""
        self.closed = True
        if self.writer.is_closing():
            return
        self.writer.close()
        with contextlib.suppress(ConnectionError, TimeoutError):
            await asyncio.wait_for(self.writer.wait_closed(), self.command_timeout)
