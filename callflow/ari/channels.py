"""Who owns which channel: the event router's map from a channel id to its handler."""

from __future__ import annotations

from typing import Any, Protocol

Event = dict[str, Any]


class ChannelOwner(Protocol):
    def on_event(self, event: Event) -> None:
        """Take one ARI event about a channel this owner registered; must not block."""
        ...


class ChannelRegistry:
    def __init__(self) -> None:
        self._owners: dict[str, ChannelOwner] = {}

    def register(self, channel_id: str, owner: ChannelOwner) -> None:
        self._owners[channel_id] = owner

    def unregister(self, channel_id: str) -> None:
        self._owners.pop(channel_id, None)

    def owner(self, channel_id: str) -> ChannelOwner | None:
        return self._owners.get(channel_id)

    def __contains__(self, channel_id: object) -> bool:
        return channel_id in self._owners

    def __len__(self) -> int:
        return len(self._owners)


def event_channel_id(event: Event) -> str | None:
    """The channel an event is about: the channel, a playback's target, a dial's peer."""
    channel = event.get("channel")
    if isinstance(channel, dict) and isinstance(channel.get("id"), str):
        return str(channel["id"])
    playback = event.get("playback")
    if isinstance(playback, dict):
        target = playback.get("target_uri", "")
        if isinstance(target, str) and target.startswith("channel:"):
            return target[len("channel:") :]
    peer = event.get("peer")
    if isinstance(peer, dict) and isinstance(peer.get("id"), str):
        return str(peer["id"])
    return None
