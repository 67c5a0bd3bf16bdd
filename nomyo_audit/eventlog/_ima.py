"""Linux IMA measurement lists: parse (binary and ASCII), replay to PCR 10, match a quote.

The kernel appends one entry per measurement and extends PCR 10 (or the policy's ``pcr=``) with
it. In the SHA-1 bank it extends the entry's template hash; in every other bank (Linux >= 5.8)
``H_bank`` of the same bytes (:func:`._ima_templates.hash_input`); a *violation* (a file
measured while open for write, or opened for write while being measured) is listed with an
all-zero template hash but extends all-``0xFF`` of the bank's size.

We replay from the template data, not the listed hash: an entry whose data was changed after the
fact then fails to replay, so nothing the quote does not prove is ever read as proven. The list
read after a quote is usually longer than what the quote covers: a ``prefix`` match is normal.

Pure logic; :func:`iter_ima_log` reads a stream of any size with bounded memory.
"""

from __future__ import annotations

import hashlib
import io
import re
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import BinaryIO, Literal, TypedDict

from ..errors import EventLogError
from ._constants import DIGEST_SIZES, MAX_EVENT_DATA, MAX_EVENTS, MAX_IMA_LOG_BYTES, digest, hasher
from ._ima_templates import (
    NAME_LEN_MAX,
    NO_FIELDS,
    ascii_template_data,
    decode_template_data,
    hash_input,
    template_fields,
)
from ._replay import LogMatch, PcrMatch, match_pcr

__all__ = [
    "ImaEntry",
    "ImaLog",
    "ImaSummary",
    "iter_ima_log",
    "match_ima_log",
    "parse_ima_log",
    "replay_ima_log",
    "summarize_ima",
]

Format = Literal["auto", "binary", "ascii"]
_TEMPLATE_HASH_SIZE = 20
_MAX_PCR = 23
#: Longest template name we read (the kernel's IMA_TEMPLATE_NAME_LEN_MAX is 15).
_MAX_TEMPLATE_NAME = 64
#: Longest ASCII line: hex doubles the largest template data, plus the fixed columns.
_MAX_LINE = 2 * MAX_EVENT_DATA + 1024
_TEMPLATE_NAME = re.compile(rb"[A-Za-z0-9_.+|-]{1,64}")
#: Template hash size -> the bank it belongs to (the first bank of each size: sha256, not sm3_256).
_HASH_BANKS = {size: bank for bank, size in reversed(DIGEST_SIZES.items())}


@dataclass(frozen=True)
class ImaEntry:
    """One measurement of the list, with its template's fields decoded when the template is known."""

    number: int
    """0-based position in the list."""
    pcr: int
    template_hash: bytes
    """As listed: SHA-1 in ``binary_runtime_measurements``; all zeros for a violation."""
    template_name: str
    template_data: bytes
    """As in the binary list (rebuilt, little-endian, from an ASCII line)."""
    digest_algorithm: str | None
    file_digest: bytes | None
    path: str | None
    """The file name (for ``ima-buf`` the buffer's name, e.g. ``.ima`` or ``kexec-cmdline``)."""
    signature: bytes | None
    buffer: bytes | None
    replayable: bool = True
    """False only for an ASCII line of a template we do not know: its template data cannot be
    rebuilt, so it replays only in the bank of its listed template hash."""

    @property
    def violation(self) -> bool:
        """The kernel could not measure the file reliably (listed template hash all zeros)."""
        return not any(self.template_hash)

    def measurement(self, bank: str) -> bytes | None:
        """What the kernel extended into ``bank`` for this entry (None: not computable here)."""
        size = DIGEST_SIZES[bank]
        if self.violation:
            return b"\xff" * size
        if self.replayable:
            return digest(bank, hash_input(self.template_name, self.template_data))
        if _HASH_BANKS.get(len(self.template_hash)) == bank:
            return self.template_hash
        return None


@dataclass(frozen=True)
class ImaLog:
    """A parsed measurement list: its entries in list order, and what identifies its bytes."""

    entries: tuple[ImaEntry, ...]
    sha256: bytes
    """SHA-256 of the list's bytes (caches and audit blobs key on it)."""
    format: Literal["binary", "ascii"]


class ImaSummary(TypedDict, total=False):
    """JSON-ready facts about a list the quote proved (in part)."""

    log_sha256: str
    bank: str
    entries: int
    proven: int
    violations: int


def _error(code: str, message: str) -> EventLogError:
    return EventLogError(message, code=code)


class _Reader:
    """Exact reads from a stream, with a look-ahead for the format and byte-order checks."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._pending = b""

    def peek(self, size: int) -> bytes:
        while len(self._pending) < size:
            chunk = self._stream.read(size - len(self._pending))
            if not chunk:
                break
            self._pending += chunk
        return self._pending[:size]

    def read(self, size: int, what: str, number: int) -> bytes:
        data = self.peek(size)
        self._pending = self._pending[len(data) :]
        if len(data) != size:
            raise _error("ima_truncated", f"IMA entry {number}: the list ends inside its {what}")
        return data

    def at_end(self) -> bool:
        return not self.peek(1)

    def readline(self, number: int) -> bytes:
        line = self._pending + self._stream.readline(_MAX_LINE + 1 - len(self._pending))
        self._pending = b""
        if len(line) > _MAX_LINE:
            raise _error("ima_too_large", f"IMA line {number + 1} is longer than {_MAX_LINE} bytes")
        return line


def _entry(
    number: int,
    pcr: int,
    template_hash: bytes,
    name: str,
    data: bytes,
    order: str,
    *,
    replayable: bool = True,
) -> ImaEntry:
    if pcr > _MAX_PCR:
        raise _error("ima_malformed", f"IMA entry {number}: PCR {pcr} is not a TPM PCR (0-{_MAX_PCR})")
    try:
        fields = decode_template_data(name, data, order) if replayable else NO_FIELDS
    except EventLogError as exc:
        raise _error("ima_malformed", f"IMA entry {number} ({name}): {exc.message}") from None
    return ImaEntry(number, pcr, template_hash, name, data, *fields, replayable=replayable)


def _layout(head: bytes) -> tuple[str, int]:
    """Byte order and template hash size of a binary list, from its first entry.

    ``binary_runtime_measurements`` lists SHA-1 template hashes; the per-bank lists of newer
    kernels (``binary_runtime_measurements_sha256`` ...) the bank's. The size is the one after
    which a plausible template name length and a printable template name follow.
    """
    order = "<" if len(head) < 4 or struct.unpack_from("<I", head)[0] <= 0xFFFF else ">"
    for size in sorted(_HASH_BANKS):
        if len(head) >= 8 + size:
            (name_len,) = struct.unpack_from(order + "I", head, 4 + size)
            name = head[8 + size : 8 + size + name_len]
            if 1 <= name_len <= _MAX_TEMPLATE_NAME and _TEMPLATE_NAME.fullmatch(name):
                return order, size
    return order, _TEMPLATE_HASH_SIZE


def _binary_entries(reader: _Reader) -> Iterator[ImaEntry]:
    order, hash_size = _layout(reader.peek(8 + 64 + _MAX_TEMPLATE_NAME))
    number = 0
    while not reader.at_end():
        (pcr,) = struct.unpack(order + "I", reader.read(4, "PCR", number))
        template_hash = reader.read(hash_size, "template hash", number)
        (name_len,) = struct.unpack(order + "I", reader.read(4, "template name length", number))
        if not 1 <= name_len <= _MAX_TEMPLATE_NAME:
            raise _error("ima_malformed", f"IMA entry {number}: template name length {name_len}")
        raw_name = reader.read(name_len, "template name", number)
        if not _TEMPLATE_NAME.fullmatch(raw_name):
            raise _error("ima_malformed", f"IMA entry {number}: the template name is not printable")
        name = raw_name.decode("ascii")
        if name == "ima":
            data = reader.read(_TEMPLATE_HASH_SIZE + 4, "digest and name length", number)
            (size,) = struct.unpack(order + "I", data[-4:])
            if size > NAME_LEN_MAX:
                raise _error("ima_malformed", f"IMA entry {number}: an 'ima' name of {size} bytes (max 255)")
            data += reader.read(size, "file name", number)
        else:
            (size,) = struct.unpack(order + "I", reader.read(4, "template data length", number))
            if size > MAX_EVENT_DATA:
                raise _error("ima_too_large", f"IMA entry {number}: template data of {size} bytes")
            data = reader.read(size, "template data", number)
        yield _entry(number, pcr, template_hash, name, data, order)
        number += 1


def _ascii_entry(number: int, line: bytes) -> ImaEntry:
    columns = line.split(b" ", 3)
    if len(columns) < 3 or not columns[0].isdigit() or len(columns[0]) > 2:
        raise _error("ima_malformed", f"IMA line {number + 1}: not '<pcr> <template-hash> <template> ...'")
    try:
        template_hash = bytes.fromhex(columns[1].decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise _error("ima_malformed", f"IMA line {number + 1}: the template hash is not hex") from None
    if len(template_hash) not in _HASH_BANKS:
        raise _error("ima_malformed", f"IMA line {number + 1}: a template hash of {len(template_hash)} bytes")
    if not _TEMPLATE_NAME.fullmatch(columns[2]):
        raise _error("ima_malformed", f"IMA line {number + 1}: the template name is not printable")
    name, rest = columns[2].decode("ascii"), columns[3] if len(columns) > 3 else b""
    if template_fields(name) is None:
        return _entry(number, int(columns[0]), template_hash, name, b"", "<", replayable=False)
    try:
        data = ascii_template_data(name, rest)
    except EventLogError as exc:
        raise _error("ima_malformed", f"IMA line {number + 1} ({name}): {exc.message}") from None
    return _entry(number, int(columns[0]), template_hash, name, data, "<")


def _ascii_entries(reader: _Reader) -> Iterator[ImaEntry]:
    number = 0
    while line := reader.readline(number):
        line = line.rstrip(b"\n").removesuffix(b"\r")
        if line.strip():
            yield _ascii_entry(number, line)
            number += 1


def iter_ima_log(stream: BinaryIO, format: Format = "auto") -> Iterator[ImaEntry]:
    """The entries of a measurement list read from ``stream``, one at a time (any size).

    ``format="auto"`` reads an ASCII list when the stream starts with a digit (a binary list
    starts with a little-endian PCR index, whose first byte is never one). A binary list's byte
    order is taken from its first PCR index: the kernel writes host order unless booted with
    ``ima_canonical_fmt`` (then little-endian); an index read as more than 0xFFFF is big-endian.
    Raises :class:`~nomyo_audit.errors.EventLogError` (``ima_truncated``, ``ima_malformed``,
    ``ima_too_large``) at the first entry that cannot be read.
    """
    reader = _Reader(stream)
    if format == "auto":
        format = "ascii" if reader.peek(1).isdigit() else "binary"
    if format == "ascii":
        return _ascii_entries(reader)
    if format == "binary":
        return _binary_entries(reader)
    raise ValueError(f"unknown IMA list format {format!r}")


def parse_ima_log(data: bytes, format: Format = "auto") -> ImaLog:
    """Parse a whole measurement list (at most ``MAX_IMA_LOG_BYTES`` and ``MAX_EVENTS`` entries)."""
    if len(data) > MAX_IMA_LOG_BYTES:
        raise _error("ima_too_large", f"the IMA list is {len(data)} bytes (max {MAX_IMA_LOG_BYTES})")
    if format == "auto":
        format = "ascii" if data[:1].isdigit() else "binary"
    entries: list[ImaEntry] = []
    for entry in iter_ima_log(io.BytesIO(data), format):
        if len(entries) >= MAX_EVENTS:
            raise _error("ima_too_large", f"the IMA list has more than {MAX_EVENTS} entries")
        entries.append(entry)
    return ImaLog(tuple(entries), hashlib.sha256(data).digest(), "ascii" if format == "ascii" else "binary")


def _pcr_entries(log: ImaLog) -> dict[int, list[ImaEntry]]:
    by_pcr: dict[int, list[ImaEntry]] = {}
    for entry in log.entries:
        by_pcr.setdefault(entry.pcr, []).append(entry)
    return by_pcr


def replay_ima_log(log: ImaLog, bank: str) -> dict[int, bytes]:
    """The value each PCR the list extends replays to in ``bank``.

    Raises ``eventlog_unknown_algorithm`` for a bank this Python cannot hash, and
    ``ima_unknown_template`` when an ASCII entry of an unknown template cannot be replayed in it.
    """
    if hasher(bank) is None:
        raise _error("eventlog_unknown_algorithm", f"cannot replay an IMA list in bank {bank!r}")
    values: dict[int, bytes] = {}
    for entry in log.entries:
        measurement = entry.measurement(bank)
        if measurement is None:
            raise _error(
                "ima_unknown_template",
                f"IMA entry {entry.number}: template {entry.template_name!r} replays only in its listed bank",
            )
        current = values.get(entry.pcr, bytes(DIGEST_SIZES[bank]))
        values[entry.pcr] = digest(bank, current + measurement)
    return values


def match_ima_log(log: ImaLog, quoted: Mapping[str, Mapping[int, bytes]]) -> LogMatch:
    """Compare the list with verified quoted PCR values ``{bank: {pcr: value}}``.

    Every quoted bank this Python can hash is compared, for each PCR the list extends; a bank in
    which some entry of that PCR cannot be replayed (an unknown template read from ASCII) is left
    out for that PCR. ``prefix`` (the quote proves the first entries only) is the normal result
    for a list read after the quote.
    """
    by_pcr = _pcr_entries(log)
    matches: list[PcrMatch] = []
    numbers: set[int] = set()
    covered: set[int] = set()
    for bank in DIGEST_SIZES:
        if bank not in quoted or hasher(bank) is None:
            continue
        for pcr, entries in sorted(by_pcr.items()):
            value = quoted[bank].get(pcr)
            steps = [(entry.number, entry.measurement(bank)) for entry in entries]
            if value is None or any(measurement is None for _, measurement in steps):
                continue
            covered.add(pcr)
            ready = [(number, measurement) for number, measurement in steps if measurement is not None]
            match, proven = match_pcr(bank, pcr, bytes(DIGEST_SIZES[bank]), ready, bytes(value))
            matches.append(match)
            numbers.update(entry.number for entry in entries[:proven])
    unquoted = tuple(pcr for pcr in sorted(by_pcr) if pcr not in covered)
    return LogMatch(tuple(matches), unquoted, frozenset(numbers))


def summarize_ima(log: ImaLog, match: LogMatch) -> ImaSummary:
    """Counts a report can show: entries listed, entries the quote proves, proven violations."""
    proven = match.proven_numbers()
    banks = [pcr_match.bank for pcr_match in match.pcrs if pcr_match.status != "mismatch"]
    bank = "sha256" if "sha256" in banks else (banks[0] if banks else "")
    return ImaSummary(
        log_sha256=log.sha256.hex(),
        bank=bank,
        entries=len(log.entries),
        proven=sum(1 for entry in log.entries if entry.number in proven),
        violations=sum(1 for entry in log.entries if entry.violation and entry.number in proven),
    )
