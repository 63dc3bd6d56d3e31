"""Recorded AMI traces (tests/unit/ami_traces) through panoramisk's parser to TrunkHealth."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from panoramisk.actions import Action
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message

from callflow.ami.manager import AmiMessage
from callflow.ami.qualify import (
    aor_of_contact,
    parse_contact_list,
    parse_contact_status,
    parse_endpoint_list,
)
from callflow.trunks import ContactUpdate, HealthChange, TrunkHealth, TrunkState

TRACES = Path(__file__).resolve().parent / "ami_traces"
R, U, X = TrunkState.REACHABLE, TrunkState.UNKNOWN, TrunkState.UNREACHABLE
NOW = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)


def wire(name: str, action_id: str = "trace") -> bytes:
    """A trace as Asterisk writes it: CRLF line ends, the given ActionID."""
    text = (TRACES / name).read_text(encoding="utf-8")
    return text.replace("ActionID: trace", f"ActionID: {action_id}").replace("\n", "\r\n").encode()


def messages(name: str) -> list[AmiMessage]:
    """The trace cut into messages and parsed by ``panoramisk.message.Message``."""
    out = []
    for block in wire(name).decode().split("\r\n\r\n"):
        parsed = Message.from_line(block.strip())
        if parsed is not None:
            out.append(AmiMessage.of(parsed))
    return out


def listed() -> list[ContactUpdate]:
    return [c for c in map(parse_contact_list, messages("pjsip_show_contacts.ami")) if c]


def endpoint_aors() -> dict[str, list[str]]:
    return dict(p for p in map(parse_endpoint_list, messages("pjsip_show_endpoints.ami")) if p)


def test_contact_list_as_asterisk_22_sends_it() -> None:
    msgs = messages("pjsip_show_contacts.ami")
    assert msgs[0].get("EventList") == "start" and msgs[0].ok
    assert msgs[-1].name == "ContactListComplete" and msgs[-1].get("ListItems") == "6"
    assert msgs[1].get("ViaAddr") == "" and "viaaddr" in msgs[1]  # empty values are kept
    contacts = listed()
    assert contacts == [
        ContactUpdate("trunk-a", "sip:sip.operateur-a.example:5060", R, 23.817, ""),
        ContactUpdate("accueil", "sip:accueil@192.168.10.21:5060;ob", R, 1.84, "accueil"),
        ContactUpdate("trunk-b", "sip:sbc1.operateur-b.example:5060", X, None, ""),
        ContactUpdate("trunk-b", "sip:sbc2.operateur-b.example:5060", R, 41.266, ""),
        ContactUpdate("trunk-c-sbc", "sip:10.20.0.5:5060", U, None, ""),
        ContactUpdate("dr-a", "sip:dr-a@192.168.10.31:5060;ob", X, None, "dr-a"),
    ]


def test_endpoint_list_tells_each_trunk_its_aors() -> None:
    assert endpoint_aors() == {
        "accueil": ["accueil"],
        "dr-a": ["dr-a"],
        "trunk-a": ["trunk-a"],
        "trunk-b": ["trunk-b"],
        "trunk-c": ["trunk-c-sbc"],
    }


def test_aor_of_a_contact_id() -> None:
    assert aor_of_contact("trunk-a@@96b93383706400b148dd73a1450b85f4") == "trunk-a"
    assert aor_of_contact("accueil;@b385a6d8feff2ffa3e59b0fe926b94d9") == "accueil"
    assert aor_of_contact("odd") == "odd"


class _Factory:
    """What panoramisk's protocol calls back: collects the events it dispatches."""

    forgetable_actions = ("ping", "login")
    save_stream = None

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.awaiting_actions: list[Any] = []

    def dispatch(self, message: Any) -> None:
        self.events.append(message)


class _Transport:
    def __init__(self) -> None:
        self.written = b""

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        pass


async def _feed(data: bytes, cuts: list[int]) -> tuple[Any, list[Any], bytes]:
    protocol = AMIProtocol()
    protocol.connection_made(_Transport())
    factory = _Factory()
    protocol.factory = factory
    protocol.encoding = "utf8"
    action = Action({"Action": "PJSIPShowContacts"}, as_list=None)
    future = protocol.send(action, as_list=None)
    answer = data.replace(b"ActionID: trace", f"ActionID: {action.id}".encode())
    stream = b"Asterisk Call Manager/9.0.0\r\n" + answer + wire("contact_status.ami")
    position = 0
    for cut in [*cuts, len(stream)]:
        protocol.data_received(stream[position : position + cut])
        position += cut
        if position >= len(stream):
            break
    return await asyncio.wait_for(future, 1), factory.events, protocol.transport.written


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=300), max_size=40))
def test_the_listing_through_panoramisk_whatever_the_tcp_chunks(cuts: list[int]) -> None:
    result, events, written = asyncio.run(_feed(wire("pjsip_show_contacts.ami"), cuts))
    assert written.startswith(b"Action: PJSIPShowContacts\r\nActionID: ")
    assert isinstance(result, list)  # a list answer, gathered up to ContactListComplete
    items = [AmiMessage.of(m) for m in result]
    assert items[0].get("Response") == "Success"
    assert items[-1].name == "ContactListComplete"
    assert [c for c in map(parse_contact_list, items) if c] == listed()
    # The ContactStatus events that follow are dispatched as events, in order.
    names = [AmiMessage.of(e).name for e in events]
    assert names == [m.name for m in messages("contact_status.ami")]


def test_no_contacts_found_as_asterisk_writes_it() -> None:
    # astman_send_error(s, m, "No Contacts found\n"): a bare LF before the CRLFs.
    raw = b"Response: Error\r\nActionID: trace\r\nMessage: No Contacts found\n\r\n\r\n"
    result, _, _ = asyncio.run(_feed(raw, []))
    msg = AmiMessage.of(result)
    assert not msg.ok and msg.get("Message") == "No Contacts found"
    assert [AmiMessage.of(Message.from_line(wire("no_contacts.ami").decode().strip()))][0].get(
        "Message"
    ) == "No Contacts found"


def test_contact_status_events_drive_the_health_model() -> None:
    health = TrunkHealth(["trunk-a", "trunk-b", "trunk-c"], clock=lambda: NOW)
    changes: list[HealthChange] = []
    health.subscribe(changes.append)
    health.resync(listed(), aors=endpoint_aors())
    assert [health.state(t) for t in health.trunks] == [R, R, U]
    assert health.rtt_ms("trunk-a") == 23.817
    assert health.rtt_ms("trunk-b") == 41.266
    assert health.contacts("trunk-c") == [ContactUpdate("trunk-c-sbc", "sip:10.20.0.5:5060", U)]
    changes.clear()

    states = []
    for event in messages("contact_status.ami"):
        update = parse_contact_status(event)
        if event.name != "ContactStatus":
            assert update is None  # PeerStatus and the like
            continue
        assert update is not None
        health.apply(update)
        states.append((health.state("trunk-a"), health.state("trunk-b")))
    assert states == [
        (R, R),  # trunk-b's sbc1 back (sbc2 already was)
        (X, R),  # trunk-a lost
        (X, R),  # a phone's contact removed: not a trunk
        (R, R),  # trunk-a back
        (R, R),  # trunk-b's sbc2 lost, sbc1 still up
        (R, X),  # trunk-b's sbc1 lost too
    ]
    assert changes == [
        HealthChange("trunk-b", R, R, 38.121, recovered=True),
        HealthChange("trunk-a", R, X, None, recovered=False),
        HealthChange("trunk-a", X, R, 25.102, recovered=True),
        HealthChange("trunk-b", R, X, None, recovered=False),
    ]
    history = health.history("trunk-a")
    assert [(h.old, h.new, h.source) for h in history] == [
        (U, R, "resync"),
        (R, X, "qualify"),
        (X, R, "qualify"),
    ]


def test_contact_status_words() -> None:
    def event(status: str, rtt: str = "1500", **extra: str) -> AmiMessage:
        fields = {
            "Event": "ContactStatus",
            "URI": "sip:x",
            "ContactStatus": status,
            "AOR": "trunk-a",
            "EndpointName": "trunk-a",
            "RoundtripUsec": rtt,
            **extra,
        }
        return AmiMessage.of(fields)

    assert parse_contact_status(event("Reachable")) == ContactUpdate(
        "trunk-a", "sip:x", R, 1.5, "trunk-a"
    )
    assert parse_contact_status(event("Reachable", "junk")) == ContactUpdate(
        "trunk-a", "sip:x", R, None, "trunk-a"
    )
    for word in ("Unknown", "NonQualified", "Unqualified", "Created", "Sideways"):
        update = parse_contact_status(event(word))
        assert update is not None and update.state is U and update.rtt_ms is None
    removed = parse_contact_status(event("Removed"))
    assert removed is not None and removed.removed
    assert parse_contact_status(event("Updated")) is None  # a registration refresh
    assert parse_contact_status(event("Reachable", AOR="")) is None
    assert parse_contact_status(AmiMessage.of({"Event": "PeerStatus"})) is None
