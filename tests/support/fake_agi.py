"""A fake Asterisk on the other end of a FastAGI connection.

It connects to the listener as Asterisk's ``AGI(agi://...)`` would, sends the request
headers, then answers each command the way Asterisk 22's res_agi does, from a script: the
keys the caller presses, what each ``Dial`` gives, when the caller hangs up.  It records
every command, so a test can check what the daemon asked of Asterisk.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

DEAD = "511 Command Not Permitted on a dead channel or intercept routine"


@dataclass
class Dialed:
    """What one ``EXEC Dial`` gives: its DIALSTATUS, ring time, and (for a confirmed leg)
    whether the callee pressed the key."""

    status: str = "ANSWER"
    ring_ms: int = 1500
    talk_ms: int = 4000
    accepted: bool = True
    caller_hangs_up: bool = False  # the caller ends the conversation


@dataclass
class FakeAgiAsterisk:
    port: int
    extension: str = "100"
    script: str = ""  # agi://host/SCRIPT
    caller: str = "0612345678"
    uniqueid: str = "1733200000.1"
    arg: str | None = None  # agi_arg_1
    keys: Iterable[str] = ()  # what the caller presses, one per GET OPTION / WAIT FOR DIGIT
    dials: Iterable[Dialed] = ()
    hangup_on: str | None = None  # the caller hangs up during the first command starting so
    drop_on: str | None = None  # the connection breaks during the first command starting so
    commands: list[str] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)
    hung_up: bool = False
    closed_by_daemon: bool = False

    def __post_init__(self) -> None:
        self._keys = deque(self.keys)
        self._dials = deque(self.dials)

    def headers(self) -> bytes:
        lines = {
            "agi_network": "yes",
            "agi_network_script": self.script,
            "agi_request": f"agi://127.0.0.1/{self.script}",
            "agi_channel": "PJSIP/patient-00000001",
            "agi_language": "fr",
            "agi_type": "PJSIP",
            "agi_uniqueid": self.uniqueid,
            "agi_version": "22.10.1",
            "agi_callerid": self.caller,
            "agi_calleridname": "unknown",
            "agi_context": "callflow-from-trunk-agi",
            "agi_extension": self.extension,
            "agi_priority": "2",
            "agi_enhanced": "0.0",
            "agi_accountcode": "",
            "agi_threadid": "140000000000",
        }
        if self.arg is not None:
            lines["agi_arg_1"] = self.arg
        return "".join(f"{k}: {v}\n" for k, v in lines.items()).encode() + b"\n"

    async def run(self) -> None:
        """One call: connect, send the request, answer commands until the daemon closes."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(self.headers())
            await writer.drain()
            while True:
                line = await reader.readline()
                if not line:
                    self.closed_by_daemon = True
                    return
                command = line.decode().rstrip("\n")
                self.commands.append(command)
                if self.drop_on is not None and command.startswith(self.drop_on):
                    writer.transport.abort()  # Asterisk gone in the middle of a command
                    return
                for out in self.answer(command):
                    writer.write(out.encode() + b"\n")
                await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _key(self) -> str:
        key = self._keys.popleft() if self._keys else ""
        return str(ord(key)) if key else "0"

    def answer(self, command: str) -> list[str]:
        if self.hung_up and not command.startswith(("GET VARIABLE", "SET VARIABLE")):
            return [DEAD]  # res_agi still runs these two on a dead channel
        if self.hangup_on is not None and command.startswith(self.hangup_on):
            self.hung_up = True
            return ["200 result=-1 endpos=0", "HANGUP"]
        words = command.split(" ")
        verb = " ".join(words[:2])
        if verb == "SET VARIABLE":
            name, value = re.findall(r'"([^"]*)"', command)
            self.variables[name] = value
            return ["200 result=1"]
        if verb == "GET VARIABLE":
            name = re.findall(r'"([^"]*)"', command)[0]
            if name in self.variables:
                return [f"200 result=1 ({self.variables[name]})"]
            return ["200 result=0"]
        if verb in ("STREAM FILE",):
            keys = re.findall(r'"([^"]*)"', command)[1]
            return [f"200 result={self._key() if keys else 0} endpos=8000"]
        if verb in ("GET OPTION", "WAIT FOR"):
            return [f"200 result={self._key()}" + (" endpos=8000" if verb == "GET OPTION" else "")]
        if verb == "EXEC Dial":
            return self._dial(command)
        if verb.startswith("SET ") or command == "ANSWER":
            return ["200 result=0"]
        if command == "CHANNEL STATUS":
            return ["200 result=6"]
        if command == "HANGUP":
            self.hung_up = True
            return ["200 result=1", "HANGUP"]
        return ["510 Invalid or unknown command"]

    def _dial(self, command: str) -> list[str]:
        d = self._dials.popleft() if self._dials else Dialed("CHANUNAVAIL")
        self.variables["DIALSTATUS"] = d.status
        answered = d.status == "ANSWER"
        talk = d.talk_ms if answered else 0
        self.variables["DIALEDTIME_MS"] = str(d.ring_ms + talk)
        self.variables["ANSWEREDTIME_MS"] = str(talk)
        if answered and "U(" in command:
            self.variables["CALLFLOW_CONFIRM"] = "accepted" if d.accepted else "declined"
        if d.caller_hangs_up:
            self.hung_up = True
            return ["HANGUP", "200 result=-1"]  # the notice may come first
        return ["200 result=0"]

    @property
    def dials_made(self) -> list[str]:
        return [c for c in self.commands if c.startswith("EXEC Dial")]

    @property
    def context(self) -> tuple[str | None, str | None]:
        """Where the daemon sent the caller in the dialplan (context, extension)."""
        ctx = ext = None
        for c in self.commands:
            if c.startswith("SET CONTEXT"):
                ctx = c.split('"')[1]
            elif c.startswith("SET EXTENSION"):
                ext = c.split('"')[1]
        return ctx, ext
