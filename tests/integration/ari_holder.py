"""A program that takes the ARI application ``callflow`` from the daemon (Asterisk gives
an application to the newest websocket that asks for it) and holds the calls that enter
it, unanswered: calls in ``Stasis()`` that the daemon never sees.

    python ari_holder.py ARI_URL USER OUT      (the password on standard input)

It writes to OUT ``ready`` once connected, then ``call <channel id>`` for each call that
enters, a line each, and ends when Asterisk closes the websocket."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import aiohttp


async def hold(url: str, user: str, password: str, out: Path) -> None:
    headers = {"Authorization": aiohttp.encode_basic_auth(user, password)}
    events = url.replace("http", "ws", 1) + "/ari/events"
    async with (
        aiohttp.ClientSession(headers=headers) as session,
        session.ws_connect(events, params={"app": "callflow"}) as ws,
    ):
        say(out, "ready")
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            event = json.loads(msg.data)
            if event.get("type") == "StasisStart":
                say(out, f"call {event['channel']['id']}")


def say(out: Path, line: str) -> None:
    with out.open("a") as f:
        f.write(line + "\n")


if __name__ == "__main__":
    asyncio.run(hold(sys.argv[1], sys.argv[2], sys.stdin.readline().strip(), Path(sys.argv[3])))
