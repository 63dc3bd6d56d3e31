"""The load benchmark's reference: the same IVR as a minimal ARI application (aiohttp).

Answer, play the prompt, hang up on the key 1: what any ARI app must do, nothing more
(no call log, no metrics, no shedding).  Run by benchmarks/load.py:
    reference_app.py URL USER PASSWORD [http|websocket]

``http`` (the default) sends each REST request over HTTP (aiohttp's pool: up to 100
connections, which Asterisk serves in parallel); ``websocket`` sends them as
``RESTRequest`` frames over the events websocket, as callflow does, which Asterisk carries
out one after the other: the transport's own share of a latency, apart from any daemon.
"""

import asyncio
import itertools
import json
import sys
from collections.abc import Awaitable, Callable

import aiohttp

Send = Callable[[str, str], Awaitable[None]]


async def main(url: str, user: str, password: str, transport: str = "http") -> None:
    if transport not in ("http", "websocket"):
        raise SystemExit(f"transport must be http or websocket, not {transport!r}")
    headers = {"Authorization": aiohttp.encode_basic_auth(user, password)}
    async with (
        aiohttp.ClientSession(url, headers=headers) as http,
        http.ws_connect("/ari/events?app=bench-ref") as ws,
    ):
        ids = itertools.count(1)
        waiting: dict[str, asyncio.Future[None]] = {}

        async def over_http(method: str, uri: str) -> None:
            async with http.request(method, f"/ari/{uri}") as resp:
                await resp.read()

        async def over_socket(method: str, uri: str) -> None:
            rid = str(next(ids))
            done = waiting[rid] = asyncio.get_running_loop().create_future()
            frame = {"type": "RESTRequest", "request_id": rid, "method": method, "uri": uri}
            await ws.send_str(json.dumps(frame))
            await done

        send: Send = over_socket if transport == "websocket" else over_http

        async def job(*requests: tuple[str, str]) -> None:
            for method, uri in requests:  # in order: the prompt plays once answered
                await send(method, uri)

        print("connected", flush=True)
        tasks: set[asyncio.Task[None]] = set()
        async for msg in ws:
            event = json.loads(msg.data)
            if event["type"] == "RESTResponse":
                answered = waiting.pop(event["request_id"], None)
                if answered is not None and not answered.done():
                    answered.set_result(None)
                continue
            channel = f"channels/{event.get('channel', {}).get('id')}"
            if event["type"] == "StasisStart":
                play = f"{channel}/play?media=sound:vm-intro"
                work = job(("POST", f"{channel}/answer"), ("POST", play))
            elif event["type"] == "ChannelDtmfReceived" and event["digit"] == "1":
                work = job(("DELETE", channel))
            else:
                continue
            task = asyncio.create_task(work)
            tasks.add(task)
            task.add_done_callback(tasks.discard)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
