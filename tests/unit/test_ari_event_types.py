"""The ARI event filter cannot drift from the dispatch: every event type the daemon reads
anywhere is among those it asks Asterisk for (``callflow.ari.service.EVENT_TYPES``), and
what it leaves out is ignored.  (That the filter is sent at each connection, and what an
Asterisk that cannot filter does: test_ari_websocket.py.)"""

from __future__ import annotations

import ast
import asyncio
import importlib
import inspect
import pkgutil
from pathlib import Path
from typing import Any

import callflow
import callflow.ari
from callflow.ari.call import AriCall
from callflow.ari.channels import ChannelRegistry
from callflow.ari.client import APP_REPLACED, CLIENT_EVENTS, TRANSPORT_EVENTS
from callflow.ari.service import EVENT_TYPES

PACKAGE = Path(callflow.__file__).resolve().parent

# Every event type of ARI in Asterisk 22 (rest-api/api-docs/events.json, Event's subTypes).
ARI_EVENTS = frozenset(
    {
        "ApplicationMoveFailed",
        "ApplicationRegistered",
        "ApplicationReplaced",
        "ApplicationUnregistered",
        "BridgeAttendedTransfer",
        "BridgeBlindTransfer",
        "BridgeCreated",
        "BridgeDestroyed",
        "BridgeMerged",
        "BridgeVideoSourceChanged",
        "CallBroadcast",
        "CallClaimed",
        "ChannelCallerId",
        "ChannelConnectedLine",
        "ChannelCreated",
        "ChannelDestroyed",
        "ChannelDialplan",
        "ChannelDtmfReceived",
        "ChannelEnteredBridge",
        "ChannelHangupRequest",
        "ChannelHold",
        "ChannelLeftBridge",
        "ChannelStateChange",
        "ChannelTalkingFinished",
        "ChannelTalkingStarted",
        "ChannelToneDetected",
        "ChannelTransfer",
        "ChannelUnhold",
        "ChannelUserevent",
        "ChannelVarset",
        "ContactStatusChange",
        "DeviceStateChanged",
        "Dial",
        "EndpointStateChange",
        "PeerStatusChange",
        "PlaybackContinuing",
        "PlaybackFinished",
        "PlaybackStarted",
        "RecordingFailed",
        "RecordingFinished",
        "RecordingStarted",
        "RESTResponse",
        "StasisEnd",
        "StasisStart",
        "TextMessageReceived",
    }
)


def _ari_modules() -> list[Path]:
    return sorted((PACKAGE / "ari").rglob("*.py"))


def test_every_event_type_named_in_the_ari_adapter_is_asked_for() -> None:
    """A branch on an event type (``kind == "ChannelVarset"``, a handler table's key) that
    the filter left out would never run: each one named in the ARI adapter's code is in it."""
    named: dict[str, set[str]] = {}
    for path in _ari_modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in ARI_EVENTS:
                named.setdefault(str(node.value), set()).add(path.name)
    assert {"StasisStart", "ChannelDtmfReceived", "PlaybackFinished"} <= set(named)  # it reads
    missing = {t: sorted(where) for t, where in named.items() if t not in EVENT_TYPES}
    missing.pop("RESTResponse", None)  # the websocket transport's: TRANSPORT_EVENTS
    assert missing.pop(APP_REPLACED) == ["client.py"]  # the client's own, always asked for
    assert missing == {}
    assert frozenset({"RESTResponse"}) == TRANSPORT_EVENTS
    assert frozenset({"RESTResponse", "ApplicationReplaced"}) == CLIENT_EVENTS


def test_every_channel_owner_s_events_are_asked_for() -> None:
    """Each class that takes events from the router (``on_event``) says which (``EVENTS``),
    and the filter holds them all: a new owner cannot be forgotten."""
    owners: list[type[Any]] = []
    for info in pkgutil.iter_modules(callflow.ari.__path__, "callflow.ari."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and callable(getattr(cls, "on_event", None)):
                owners.append(cls)
    names = {cls.__name__ for cls in owners}
    assert {"AriCall", "BridgeWatch", "TestCallWatch"} <= names
    for cls in owners:
        if cls.__name__ == "ChannelOwner":  # the protocol itself
            continue
        assert isinstance(cls.EVENTS, frozenset) and cls.EVENTS, cls
        assert cls.EVENTS <= EVENT_TYPES, (cls, cls.EVENTS - EVENT_TYPES)


def test_the_filter_leaves_out_what_the_daemon_ignores() -> None:
    # The noisy ones of a call (a varset per variable, a dialplan step per priority...).
    for kind in ("ChannelVarset", "ChannelDialplan", "PlaybackStarted", "ChannelCreated"):
        assert kind not in EVENT_TYPES
    assert set(EVENT_TYPES - ARI_EVENTS) == {"PlaybackFailed"}  # read for safety, never sent


async def test_a_call_ignores_every_event_type_left_out() -> None:
    """What the filter leaves out changes nothing in a call: its waits stay pending."""
    registry = ChannelRegistry()
    call = AriCall(None, registry, {"id": "c1", "state": "Up"}, dialed="100")  # type: ignore[arg-type]
    for kind in sorted(ARI_EVENTS - EVENT_TYPES):
        call.on_event(
            {
                "type": kind,
                "channel": {"id": "c1", "state": "Up"},
                "digit": "1",
                "dialstatus": "ANSWER",
                "playback": {"id": "c1:pb:1", "target_uri": "channel:c1", "state": "done"},
            }
        )
    await asyncio.sleep(0)
    assert not call.gone and call._chan.dtmf.empty() and call._chan.dialstatus is None
