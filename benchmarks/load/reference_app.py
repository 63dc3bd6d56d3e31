"""The load benchmark's reference: the same IVR as a minimal ARI application (aiohttp).

Answer, play the prompt, hang up on the key 1: what any ARI app must do, nothing more
(no call log, no metrics, no shedding).  Run by benchmarks/load.py:
    reference_app.py URL USER PASSWORD
"""

import asyncio
import json
import sys

import aiohttp


async def main(url: str, user: str, password: str) -> None:
    headers = {"Authorization": aiohttp.encode_basic_auth(user, password)}
    async with aiohttp.ClientSession(url, headers=headers) as http:

        async def send(*requests: tuple[str, str]) -> None:
            for method, path in requests:  # in order: the prompt plays once answered
                async with http.request(method, path) as resp:
                    await resp.read()

        async with http.ws_connect("/ari/events?app=bench-ref") as ws:
            print("connected", flush=True)
            tasks: set[asyncio.Task[None]] = set()
            async for msg in ws:
                event = json.loads(msg.data)
                channel = f"/ari/channels/{event.get('channel', {}).get('id')}"
                if event["type"] == "StasisStart":
                    play = f"{channel}/play?media=sound:vm-intro"
                    job = send(("POST", f"{channel}/answer"), ("POST", play))
                elif event["type"] == "ChannelDtmfReceived" and event["digit"] == "1":
                    job = send(("DELETE", channel))
                else:
                    continue
                task = asyncio.create_task(job)
                tasks.add(task)
                task.add_done_callback(tasks.discard)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
