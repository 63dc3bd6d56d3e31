"""Trunk health from AMI: Asterisk's PJSIP contact listings and events → ``TrunkHealth``.

What Asterisk 22 sends (``res/res_pjsip/pjsip_options.c``, ``main/stasis_endpoints.c``):

* ``PJSIPShowContacts`` answers ``Response: Success`` / ``EventList: start``, then one
  ``ContactList`` event per contact, then ``ContactListComplete`` (or ``Response: Error``
  / ``Message: No Contacts found`` when there is none).  A ``ContactList`` event holds the
  contact's sorcery fields: ``ObjectName`` is its id, ``<aor>@@<md5>`` for a static
  contact (``contact=`` of an AOR: a trunk) or ``<aor>;@<md5>`` for a registered one;
  ``Endpoint`` is empty for a static contact; ``Uri``; then ``Status`` (``Reachable``,
  ``Unreachable``, ``NonQualified`` when qualify is off, ``Unknown``) and
  ``RoundtripUsec`` (microseconds, ``N/A`` unless reachable).
* ``PJSIPShowEndpoints`` lists ``EndpointList`` events whose ``Aor`` is the endpoint's
  ``aors`` setting: it tells which AORs (hence contacts) make up a trunk.
* ``ContactStatus`` (class system) is raised when a contact's status *changes*:
  ``URI``, ``ContactStatus`` (the same words, or ``Removed``; older versions also sent
  ``Created`` and ``Updated``), ``AOR``, ``EndpointName`` (once per endpoint using the
  AOR), ``RoundtripUsec``.

``AmiTrunkMonitor`` resynchronises ``TrunkHealth`` after every login (and at
``FullyBooted`` when that failed, e.g. ``res_pjsip`` was not loaded yet), then applies
``ContactStatus`` events.  Events that arrive while a listing is on its way are held: those
older than the listing are dropped (the listing supersedes them), the newer ones are applied
after it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Self

from callflow.ami.manager import AmiClient, AmiMessage
from callflow.ami.messages import AmiActionError, AmiError
from callflow.tasks import Tasks
from callflow.trunks import ContactUpdate, TrunkHealth, TrunkSnapshot, TrunkState

__all__ = [
    "AmiTrunkMonitor",
    "aor_of_contact",
    "list_contacts",
    "list_endpoint_aors",
    "live_snapshot",
    "parse_contact_list",
    "parse_contact_status",
    "parse_endpoint_list",
]

log = logging.getLogger("callflow.trunks.ami")

_STATES: Mapping[str, TrunkState] = {
    "reachable": TrunkState.REACHABLE,
    "unreachable": TrunkState.UNREACHABLE,
    "unknown": TrunkState.UNKNOWN,
    "nonqualified": TrunkState.UNKNOWN,
    "unqualified": TrunkState.UNKNOWN,
    "created": TrunkState.UNKNOWN,
}


def aor_of_contact(object_name: str) -> str:
    """The AOR of a contact id: ``trunk-a@@<md5>`` (static) or ``aor;@<md5>`` (registered)."""
    for separator in (";@", "@@"):
        aor, found, _ = object_name.partition(separator)
        if found:
            return aor
    return object_name


def _rtt_ms(state: TrunkState, usec: str) -> float | None:
    if state is not TrunkState.REACHABLE:
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1000.0 if value >= 0 else None


def _state(word: str, what: str) -> TrunkState:
    state = _STATES.get(word.lower())
    if state is None:
        log.debug("%s: unknown contact status %r, taken as unknown", what, word)
        return TrunkState.UNKNOWN
    return state


def parse_contact_list(event: AmiMessage) -> ContactUpdate | None:
    """A ``ContactList`` event as a ``ContactUpdate`` (None when it is not a contact)."""
    object_name = event.get("ObjectName")
    uri = event.get("Uri")
    if event.name.lower() != "contactlist" or not object_name or not uri:
        return None
    aor = event.get("Aor") or aor_of_contact(object_name)
    state = _state(event.get("Status"), "ContactList")
    return ContactUpdate(
        aor=aor,
        uri=uri,
        state=state,
        rtt_ms=_rtt_ms(state, event.get("RoundtripUsec")),
        endpoint=event.get("Endpoint"),
    )


def parse_contact_status(event: AmiMessage) -> ContactUpdate | None:
    """A ``ContactStatus`` event as a ``ContactUpdate``; None when it says nothing of the
    contact's reachability (``Updated``: a registration refresh) or is incomplete."""
    aor = event.get("AOR")
    uri = event.get("URI")
    word = event.get("ContactStatus")
    if event.name.lower() != "contactstatus" or not aor or not uri or not word:
        return None
    if word.lower() == "updated":
        return None
    endpoint = event.get("EndpointName")
    if word.lower() == "removed":
        return ContactUpdate(aor=aor, uri=uri, endpoint=endpoint, removed=True)
    state = _state(word, "ContactStatus")
    return ContactUpdate(
        aor=aor,
        uri=uri,
        state=state,
        rtt_ms=_rtt_ms(state, event.get("RoundtripUsec")),
        endpoint=endpoint,
    )


def parse_endpoint_list(event: AmiMessage) -> tuple[str, list[str]] | None:
    """An ``EndpointList`` event as ``(endpoint, [aor, ...])``."""
    name = event.get("ObjectName")
    if event.name.lower() != "endpointlist" or not name:
        return None
    return name, [a.strip() for a in event.get("Aor").split(",") if a.strip()]


async def list_contacts(ami: AmiClient) -> tuple[list[ContactUpdate], int]:
    """Every PJSIP contact (``PJSIPShowContacts``), and the ``seq`` of the answer's end."""
    try:
        answer = await ami.action_list("PJSIPShowContacts")
    except AmiActionError as exc:
        if "no contacts found" in exc.message.lower():
            return [], exc.response.seq
        raise
    contacts = [c for c in map(parse_contact_list, answer.events) if c is not None]
    return contacts, answer.seq


async def list_endpoint_aors(ami: AmiClient) -> dict[str, list[str]]:
    """The AORs of every PJSIP endpoint (``PJSIPShowEndpoints``)."""
    try:
        answer = await ami.action_list("PJSIPShowEndpoints")
    except AmiActionError as exc:
        if "no endpoints found" in exc.message.lower():
            return {}
        raise
    pairs = [p for p in map(parse_endpoint_list, answer.events) if p is not None]
    return dict(pairs)


def parse_contact_status_detail(event: AmiMessage) -> ContactUpdate | None:
    """A ``ContactStatusDetail`` event (of ``PJSIPShowEndpoint``) as a ``ContactUpdate``."""
    aor = event.get("AOR")
    uri = event.get("URI")
    if event.name.lower() != "contactstatusdetail" or not aor or not uri:
        return None
    state = _state(event.get("Status"), "ContactStatusDetail")
    return ContactUpdate(
        aor=aor,
        uri=uri,
        state=state,
        rtt_ms=_rtt_ms(state, event.get("RoundtripUsec")),
        endpoint=event.get("EndpointName"),
    )


async def list_endpoint_contacts(
    ami: AmiClient, trunks: Iterable[str]
) -> tuple[list[ContactUpdate], int]:
    """The contacts of each of ``trunks`` with their qualify status (``PJSIPShowEndpoint``).

    ``PJSIPShowContacts`` lists only contacts that registered: a trunk's fixed contact
    (``contact =`` in its AOR, the usual case) appears only in the endpoint's details.
    """
    contacts: list[ContactUpdate] = []
    seq = 0
    for trunk in trunks:
        try:
            answer = await ami.action_list("PJSIPShowEndpoint", {"Endpoint": trunk})
        except AmiActionError as exc:
            log.debug("PJSIPShowEndpoint %s: %s", trunk, exc.message)
            continue
        contacts.extend(c for c in map(parse_contact_status_detail, answer.events) if c)
        seq = max(seq, answer.seq)
    return contacts, seq


async def _read(
    ami: AmiClient, trunks: Iterable[str]
) -> tuple[dict[str, list[str]] | None, list[ContactUpdate], int]:
    try:
        aors: dict[str, list[str]] | None = await list_endpoint_aors(ami)
    except AmiActionError as exc:
        # Not fatal: each trunk then keeps its AOR of the same name.
        log.warning("trunk health: cannot list endpoints (%s); assuming AOR = endpoint", exc)
        aors = None
    fixed, fixed_seq = await list_endpoint_contacts(ami, trunks)
    registered, seq = await list_contacts(ami)
    # One contact may come from both listings: the contact listing is the later news.
    merged = {(c.aor, c.uri): c for c in [*fixed, *registered]}
    return aors, list(merged.values()), max(seq, fixed_seq)


class AmiTrunkMonitor:
    """Keeps a ``TrunkHealth`` in step with Asterisk over an ``AmiClient``.

    Construct it before ``ami.run()`` starts: it registers its event callbacks and itself
    as a listener.  ``health.live`` is False from a drop of the session until the next
    listing.  ``aclose()`` (or leaving ``async with``) cancels and awaits the listings it
    started by itself (after a reload, at ``FullyBooted``).
    """

    def __init__(self, ami: AmiClient, health: TrunkHealth) -> None:
        self.ami = ami
        self.health = health
        #: Number of listings applied.
        self.resyncs = 0
        self._lock = asyncio.Lock()
        self._held: list[AmiMessage] | None = None
        self._synced = False
        self._tasks = Tasks("trunk monitor", log)
        ami.on_event("ContactStatus", self._on_contact_status)
        ami.on_event("FullyBooted", self._on_fully_booted)
        ami.add_listener(self)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._tasks.aclose()

    # -- AmiListener -----------------------------------------------------------------------

    async def ami_connected(self, ami: AmiClient) -> None:
        await self.resync()

    def ami_disconnected(self, ami: AmiClient, reason: str) -> None:
        self._synced = False
        self.health.set_live(False)

    # -- resync ----------------------------------------------------------------------------

    async def resync(self) -> bool:
        """List endpoints and contacts now and replace the health state with them.

        Returns False (and logs why) when the listing failed; events are then applied as
        they came.
        """
        async with self._lock:
            self._held = []
            try:
                aors, contacts, seq = await _read(self.ami, self.health.trunks)
            except AmiError as exc:
                log.warning("trunk health: cannot list contacts: %s", exc)
                aors, contacts, seq = None, None, 0
            finally:
                held, self._held = self._held, None
            if contacts is None:
                for event in held:
                    self._apply_event(event)
                return False
            if aors is not None:
                for trunk in self.health.trunks:
                    if trunk not in aors:
                        log.warning(
                            "trunk %s: no such PJSIP endpoint in Asterisk: calls over it fail",
                            trunk,
                        )
            # The session may have dropped between the listing and now: then the listing
            # is still the latest news, but the feed is not live.
            self.health.resync(contacts, aors=aors, live=self.ami.connected)
            for event in held:
                if event.seq > seq:
                    self._apply_event(event)
            self.resyncs += 1
            self._synced = self.ami.connected
            log.info(
                "trunk health: %d contact(s) listed; %s",
                len(contacts),
                ", ".join(f"{t} {self.health.state(t)}" for t in self.health.trunks) or "no trunk",
            )
            return True

    def watch(self, trunks: Iterable[str]) -> None:
        """Watch exactly ``trunks`` from now on (after a flow reload) and list again."""
        self.health.set_trunks(trunks)
        if self.ami.connected:
            self._spawn_resync()

    def _spawn_resync(self) -> None:
        self._tasks.spawn(self.resync(), "trunk-resync")

    # -- events ----------------------------------------------------------------------------

    def _on_contact_status(self, event: AmiMessage) -> None:
        if self._held is not None:
            self._held.append(event)
        else:
            self._apply_event(event)

    def _apply_event(self, event: AmiMessage) -> None:
        update = parse_contact_status(event)
        if update is not None:
            self.health.apply(update)

    def _on_fully_booted(self, event: AmiMessage) -> None:
        # Logged in before Asterisk finished booting: the listing may have failed then.
        # (Before the login completes, the listener's own resync follows it anyway.)
        if not self._synced and not self._lock.locked() and self.ami.connected:
            self._spawn_resync()


async def live_snapshot(ami: AmiClient, trunks: Sequence[str]) -> list[TrunkSnapshot]:
    """The state of ``trunks`` as Asterisk lists it now (no history, no breaker)."""
    health = TrunkHealth(trunks, quiet=True)
    aors, contacts, _ = await _read(ami, trunks)
    health.resync(contacts, aors=aors)
    return [
        TrunkSnapshot(
            name=name,
            state=health.state(name),
            rtt_ms=health.rtt_ms(name),
            last_change=None,
            consecutive_failures=0,
            breaker_open=False,
        )
        for name in health.trunks
    ]
