"""Read a TCG PC Client event log: the SHA-1 format and the crypto-agile format, streaming and bounded.

A log is evidence from the network (or a file of any size), so nothing is allocated before it is
bounded: an event's data size is checked against :data:`MAX_EVENT_DATA` and its digest count
against the algorithms the Spec ID header declares before either is read, and digest sizes come
from the header, never from the event. :func:`iter_event_log` reads a stream one event at a time
(memory bounded by one event); :func:`parse_event_log` reads a whole log of at most
:data:`MAX_EVENT_LOG_BYTES` and :data:`MAX_EVENTS` events.

Formats (TCG PC Client Platform Firmware Profile, section 10): every log starts with a
TCG_PCClientPCREvent (SHA-1 format). When that first event is an EV_NO_ACTION whose data is a
TCG_EfiSpecIDEvent ("Spec ID Event03"), the rest are TCG_PCR_EVENT2 with one digest per algorithm
the header declares (crypto-agile); otherwise every event is in the SHA-1 format. A first
EV_NO_ACTION that is not a Spec ID (a StartupLocality event, go-attestation's
``short_no_action_eventlog``) therefore starts a SHA-1 format log, as go-attestation reads it.
"""

from __future__ import annotations

import hashlib
import io
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO, Literal

from ..errors import EventLogError
from ._constants import ALGORITHMS, EV_NO_ACTION, MAX_EVENT_DATA, MAX_EVENT_LOG_BYTES, MAX_EVENTS, type_name

__all__ = ["Event", "EventLog", "iter_event_log", "parse_event_log"]

SPEC_ID_SIGNATURE = b"Spec ID Event03\x00"
STARTUP_LOCALITY_SIGNATURE = b"StartupLocality\x00"
#: More digest algorithms than any TPM has banks: a header declaring more is not a log.
_MAX_ALGORITHMS = 16
_SHA1_HEADER = struct.Struct("<II20sI")
_EVENT2_HEADER = struct.Struct("<III")
_SPEC_ID_HEADER = struct.Struct("<16sIBBBBI")


@dataclass(frozen=True)
class Event:
    """One event of a log, as read: nothing in it is trusted until a quote proves its PCR."""

    number: int
    """0-based position in the log; the first (header) event is 0."""
    pcr: int
    type: int
    digests: Mapping[str, bytes]
    """Bank name ("sha1", "sha256", ...) -> the digest the event extended into that bank."""
    data: bytes
    offset: int
    """Byte offset of the event in the log."""

    @property
    def type_name(self) -> str:
        """``"EV_SEPARATOR"``, or ``"0x%08x"`` for a type this package does not name."""
        return type_name(self.type)


@dataclass(frozen=True)
class EventLog:
    """A whole parsed log. ``events`` holds every event, the header and EV_NO_ACTION included."""

    format: Literal["sha1", "crypto-agile"]
    banks: tuple[str, ...]
    """The digest algorithms of its events (the Spec ID header's, or ``("sha1",)``)."""
    events: tuple[Event, ...]
    sha256: bytes
    """SHA-256 of the log's bytes: caches and audit blobs key on it."""
    startup_locality: int = 0
    """The locality of an EV_NO_ACTION StartupLocality event in PCR 0 (PCR 0 starts at it), else 0."""


@dataclass
class _Header:
    format: Literal["sha1", "crypto-agile"] = "sha1"
    algorithms: list[tuple[int, str, int]] = field(default_factory=list)  # (alg id, bank, size)


def startup_locality(event: Event) -> int | None:
    """The locality an EV_NO_ACTION StartupLocality event in PCR 0 gives, else None (as go-attestation)."""
    if (
        event.type == EV_NO_ACTION
        and event.pcr == 0
        and len(event.data) == 17
        and event.data.startswith(STARTUP_LOCALITY_SIGNATURE)
    ):
        return event.data[16]
    return None


class _Reader:
    """Exact reads from a stream; a short read is ``eventlog_truncated`` naming the event."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.offset = 0

    def read(self, size: int, what: str, *, eof_ok: bool = False) -> bytes | None:
        chunk = self._stream.read(size) if size else b""
        if chunk is None:  # a non-blocking stream with nothing to give
            chunk = b""
        if eof_ok and not chunk:
            return None
        while len(chunk) < size:
            more = self._stream.read(size - len(chunk))
            if not more:
                raise EventLogError(
                    f"log truncated at byte {self.offset + len(chunk)}: {what} needs {size} bytes,"
                    f" {len(chunk)} left",
                    code="eventlog_truncated",
                )
            chunk += more
        self.offset += size
        return chunk

    def need(self, size: int, what: str) -> bytes:
        chunk = self.read(size, what)
        assert chunk is not None
        return chunk


def _event_data(reader: _Reader, size: int, number: int) -> bytes:
    if size > MAX_EVENT_DATA:
        raise EventLogError(
            f"event {number} declares {size} bytes of data (at most {MAX_EVENT_DATA})",
            code="eventlog_too_large",
        )
    return reader.need(size, f"event {number}'s data")


def _spec_id(data: bytes) -> list[tuple[int, str, int]] | None:
    """The algorithms of a TCG_EfiSpecIDEvent, or None when ``data`` is not one (then: a SHA-1 log)."""
    if not data.startswith(SPEC_ID_SIGNATURE):
        return None
    if len(data) < _SPEC_ID_HEADER.size:
        raise EventLogError("the Spec ID Event03 header is cut short", code="eventlog_bad_header")
    _, _, minor, major, _, _, count = _SPEC_ID_HEADER.unpack_from(data)
    if major != 2:
        raise EventLogError(
            f"Spec ID Event03 of version {major}.{minor}, not 2.x", code="eventlog_bad_header"
        )
    if not 0 < count <= _MAX_ALGORITHMS:
        raise EventLogError(
            f"the Spec ID header declares {count} digest algorithms (1 to {_MAX_ALGORITHMS})",
            code="eventlog_bad_header",
        )
    end = _SPEC_ID_HEADER.size + 4 * count
    if len(data) < end + 1 or len(data) != end + 1 + data[end]:
        raise EventLogError(
            "the Spec ID header's size does not match its algorithms and vendor info",
            code="eventlog_bad_header",
        )
    algorithms: list[tuple[int, str, int]] = []
    for index in range(count):
        alg, size = struct.unpack_from("<HH", data, _SPEC_ID_HEADER.size + 4 * index)
        known = ALGORITHMS.get(alg)
        if known is None:
            raise EventLogError(
                f"the Spec ID header declares digest algorithm 0x{alg:04x}, unknown to this verifier",
                code="eventlog_unknown_algorithm",
            )
        if size != known[1]:
            raise EventLogError(
                f"the Spec ID header declares {known[0]} digests of {size} bytes (they have {known[1]})",
                code="eventlog_bad_digest",
            )
        if any(a == alg for a, _, _ in algorithms):
            raise EventLogError(f"the Spec ID header declares {known[0]} twice", code="eventlog_bad_header")
        algorithms.append((alg, known[0], size))
    return algorithms


def _events(stream: BinaryIO, header: _Header, max_events: int | None) -> Iterator[Event]:
    reader = _Reader(stream)
    first = reader.read(_SHA1_HEADER.size, "the first event's header", eof_ok=True)
    if first is None:
        raise EventLogError("the event log is empty", code="eventlog_truncated")
    pcr, event_type, sha1, size = _SHA1_HEADER.unpack(first)
    data = _event_data(reader, size, 0)
    if event_type == EV_NO_ACTION:
        algorithms = _spec_id(data)
        if algorithms is not None:
            header.format, header.algorithms = "crypto-agile", algorithms
    yield Event(0, pcr, event_type, {"sha1": sha1}, data, 0)
    by_id = {alg: (bank, size) for alg, bank, size in header.algorithms}
    number = 1
    while True:
        offset = reader.offset
        what = f"event {number}'s header"
        if header.format == "sha1":
            raw = reader.read(_SHA1_HEADER.size, what, eof_ok=True)
            if raw is None:
                return
            pcr, event_type, sha1, size = _SHA1_HEADER.unpack(raw)
            digests: dict[str, bytes] = {"sha1": sha1}
        else:
            raw = reader.read(_EVENT2_HEADER.size, what, eof_ok=True)
            if raw is None:
                return
            pcr, event_type, count = _EVENT2_HEADER.unpack(raw)
            if count != len(by_id):
                raise EventLogError(
                    f"event {number} carries {count} digests; the Spec ID header has {len(by_id)} algorithms",
                    code="eventlog_bad_digest",
                )
            digests = {}
            for _ in range(count):
                (alg,) = struct.unpack("<H", reader.need(2, f"event {number}'s digest algorithm"))
                if alg not in by_id:
                    raise EventLogError(
                        f"event {number} has a digest of algorithm 0x{alg:04x}, not in the Spec ID header",
                        code="eventlog_unknown_algorithm",
                    )
                bank, digest_size = by_id[alg]
                if bank in digests:
                    raise EventLogError(
                        f"event {number} carries two {bank} digests", code="eventlog_bad_digest"
                    )
                digests[bank] = reader.need(digest_size, f"event {number}'s {bank} digest")
            (size,) = struct.unpack("<I", reader.need(4, f"event {number}'s data size"))
        if max_events is not None and number >= max_events:
            raise EventLogError(f"the log has more than {max_events} events", code="eventlog_too_many_events")
        yield Event(number, pcr, event_type, digests, _event_data(reader, size, number), offset)
        number += 1


def iter_event_log(stream: BinaryIO, *, max_events: int | None = None) -> Iterator[Event]:
    """The events of a log read from ``stream``, one at a time, for logs of any size.

    Memory stays bounded by one event (:data:`MAX_EVENT_DATA`); the same checks as
    :func:`parse_event_log` apply to every event, and ``max_events`` (default: none) caps the
    count. Raises :class:`~nomyo_audit.errors.EventLogError` at the first event that cannot be read.
    """
    return _events(stream, _Header(), max_events)


def parse_event_log(data: bytes) -> EventLog:
    """Parse a whole log (at most :data:`MAX_EVENT_LOG_BYTES`, :data:`MAX_EVENTS` events).

    Raises :class:`~nomyo_audit.errors.EventLogError` with a stable code: ``eventlog_too_large``,
    ``eventlog_truncated``, ``eventlog_too_many_events``, ``eventlog_bad_header``,
    ``eventlog_bad_digest``, ``eventlog_unknown_algorithm``.
    """
    if len(data) > MAX_EVENT_LOG_BYTES:
        raise EventLogError(
            f"the event log has {len(data)} bytes (at most {MAX_EVENT_LOG_BYTES})", code="eventlog_too_large"
        )
    header = _Header()
    events = tuple(_events(io.BytesIO(bytes(data)), header, MAX_EVENTS))
    banks = tuple(bank for _, bank, _ in header.algorithms) if header.format == "crypto-agile" else ("sha1",)
    locality = next((loc for loc in map(startup_locality, events) if loc is not None), 0)
    return EventLog(header.format, banks, events, hashlib.sha256(data).digest(), locality)
