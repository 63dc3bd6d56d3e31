"""The daemon's AMI account (manager.conf) against the real Asterisk: trunk health works,
and nothing that could run a call or a command does (least privilege, issue 13)."""

from __future__ import annotations

import asyncio

import pytest

from callflow.ami.manager import AmiClient, AmiConfig
from callflow.ami.messages import AmiActionError, AmiMessage
from callflow.ami.qualify import live_snapshot

from .harness import Bench


def bench_ami() -> AmiClient:
    # tests/integration/asterisk/manager_callflow.conf: the shipped account's rights, bench secret
    return AmiClient(AmiConfig(username="callflow", secret="callflow-test", action_timeout=10))


async def test_the_daemon_account_watches_trunks_but_cannot_originate_or_run_commands(
    bench: Bench,
) -> None:
    status_event = asyncio.Event()

    def heard(message: AmiMessage) -> None:
        status_event.set()

    async with bench_ami() as ami:
        ami.on_event("ContactStatus", heard)
        await ami.connect()
        await ami.ping()

        async def trunk_a_becomes(state: str) -> None:
            async with asyncio.timeout(60):  # qualify runs every 2 s on the bench's trunks
                while True:
                    [a] = await live_snapshot(ami, ["trunk-a"])
                    if str(a.state) == state:
                        return
                    await asyncio.sleep(0.5)

        # Trunk health: the PJSIP listings answer (write = system), and qualify's events
        # reach us (read = system). A status event comes only with a change, so the trunk
        # is seen down first (no peer yet; an earlier test's may still be known), then up.
        await trunk_a_becomes("unreachable")
        status_event.clear()
        bench.peer("trunk-a", "uas-answer.xml")
        await trunk_a_becomes("reachable")
        async with asyncio.timeout(60):
            await status_event.wait()
        # What an attacker holding the secret would try: refused by Asterisk itself.
        with pytest.raises(AmiActionError, match="Permission denied"):
            await ami.action(
                "Originate",
                {
                    "Channel": "Local/200@callflow-internal-fallback",
                    "Application": "System",
                    "Data": "touch /tmp/callflow-pwned",
                },
            )
        with pytest.raises(AmiActionError, match="Permission denied"):
            await ami.action("Command", {"Command": "core show version"})
        with pytest.raises(AmiActionError, match="Permission denied"):  # config class
            await ami.action(
                "UpdateConfig",
                {
                    "SrcFilename": "extensions.conf",
                    "DstFilename": "extensions.conf",
                    "Action-000000": "Append",
                    "Cat-000000": "callflow-from-internal",
                    "Var-000000": "exten",
                    "Value-000000": "666,1,System(touch /tmp/callflow-pwned)",
                },
            )
        # Residual risk, documented in manager.conf: Asterisk 22 registers GetConfig as
        # "system or config", and the PJSIP listings need "system", so this account can
        # read the configuration files. Shown here so that a change is noticed.
        answer = await ami.action("GetConfig", {"Filename": "rtp.conf"})
        assert answer.ok
