"""Replay a log to PCR values, and say which of its events a quote proves (shared by TCG and IMA).

The rule (design of issue 14): a PCR's events are extended one by one from its initial value
(zeros; for PCR 0 the StartupLocality). The quote proves the first ``k`` of them when the replay
of those ``k`` equals the quoted value: ``match`` when ``k`` is all of them, ``prefix`` when fewer
(events logged after the quote: normal for IMA, a failure for a firmware log), ``mismatch`` when
no ``k >= 1`` does. An event whose PCR no quoted bank covers proves nothing (``unquoted``).
"""

# No ``from __future__ import annotations``: the named tuples' fields stay real types for pdoc.

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Literal, NamedTuple

from ..errors import EventLogError
from ._constants import EV_NO_ACTION, digest, hasher
from ._parse import Event, EventLog

__all__ = ["LogMatch", "PcrMatch", "match_event_log", "match_pcr", "replay_event_log"]

#: go-attestation's PCR 5 workarounds (attest/eventlog_workarounds.go): firmware that extends the
#: ExitBootServices EV_EFI_ACTION events without logging them. Tried in this order when PCR 5
#: does not replay; the injected events are constants, so every logged event stays proven.
_EBS_INVOCATION = b"Exit Boot Services Invocation"
_EBS_SUCCESS = b"Exit Boot Services Returned with Success"
_EBS_FAILURE = b"Exit Boot Services Returned with Failure"
EBS_WORKAROUNDS: tuple[tuple[bytes, ...], ...] = (
    (_EBS_INVOCATION, _EBS_SUCCESS),
    (_EBS_INVOCATION, _EBS_FAILURE),
    (_EBS_INVOCATION, _EBS_FAILURE, _EBS_SUCCESS),
)


class PcrMatch(NamedTuple):
    """How one quoted PCR of one bank compares with the log's replay of it."""

    bank: str
    pcr: int
    status: Literal["match", "prefix", "mismatch"]
    proven: int
    """How many of this PCR's extending events the quote proves."""
    total: int
    """This PCR's extending events in the log."""
    diverges_at: int | None
    """The number of the first event the quote does not prove (None when all are proven)."""
    replayed: bytes
    """The value the whole log replays to."""
    quoted: bytes


class LogMatch(NamedTuple):
    """A log against a quote: one :class:`PcrMatch` per (bank, PCR) both quoted and extended."""

    pcrs: tuple[PcrMatch, ...]
    unquoted: tuple[int, ...]
    """PCRs the log extends that no compared bank quotes: their events prove nothing."""
    numbers: frozenset[int] = frozenset()
    """The event numbers the quote proves (see :meth:`proven_numbers`)."""

    @property
    def ok(self) -> bool:
        """Every compared PCR replays to exactly its quoted value."""
        return all(match.status == "match" for match in self.pcrs)

    def proven_numbers(self) -> frozenset[int]:
        """The numbers of the events the quote proves: those of a matched PCR, or of a proven prefix."""
        return self.numbers


def _extend(bank: str, value: bytes, measurement: bytes) -> bytes:
    return digest(bank, value + measurement)


def _extender(bank: str) -> Callable[[bytes, bytes], bytes]:
    """:func:`_extend` for ``bank`` with the hash looked up once (not per event, as :func:`digest` does);
    for a bank without one, :func:`_extend` itself, which raises at its first use as before."""
    make = hasher(bank)
    if make is None:
        return functools.partial(_extend, bank)

    def extend(value: bytes, measurement: bytes) -> bytes:
        result: bytes = make(value + measurement).digest()
        return result

    return extend


def _initial(log_locality: int, pcr: int, size: int) -> bytes:
    return bytes(size - 1) + bytes([log_locality if pcr == 0 else 0])


def _extending(log: EventLog) -> Iterable[Event]:
    return (event for event in log.events if event.type != EV_NO_ACTION)


def replay_event_log(log: EventLog, bank: str) -> dict[int, bytes]:
    """The value each PCR the log extends replays to in ``bank`` (PCRs without events are left out).

    Raises :class:`~nomyo_audit.errors.EventLogError` ``eventlog_unknown_algorithm`` when the log
    has no digests of ``bank`` or this Python cannot compute it.
    """
    if bank not in log.banks or hasher(bank) is None:
        raise EventLogError(f"the log has no {bank} digests to replay", code="eventlog_unknown_algorithm")
    size = len(digest(bank, b""))
    extend = _extender(bank)
    values: dict[int, bytes] = {}
    for event in _extending(log):
        current = values.get(event.pcr, _initial(log.startup_locality, event.pcr, size))
        values[event.pcr] = extend(current, event.digests[bank])
    return values


def match_pcr(
    bank: str, pcr: int, initial: bytes, steps: Sequence[tuple[int, bytes]], quoted: bytes
) -> tuple[PcrMatch, int]:
    """Compare the replay of ``steps`` ((event number, digest) in log order) with ``quoted``.

    Returns the :class:`PcrMatch` and how many leading steps the quote proves. For IMA
    (H2) and TCG alike.
    """
    extend = _extender(bank)
    value, proven = initial, 0
    for index, (_, measurement) in enumerate(steps, start=1):
        value = extend(value, measurement)
        if value == quoted:
            proven = index
    total = len(steps)
    if proven == total:
        status: Literal["match", "prefix", "mismatch"] = "match"
    else:
        status = "prefix" if proven else "mismatch"
    diverges_at = steps[proven][0] if proven < total else None
    return PcrMatch(bank, pcr, status, proven, total, diverges_at, value, quoted), proven


def _ebs_workaround(bank: str, match: PcrMatch) -> PcrMatch | None:
    for actions in EBS_WORKAROUNDS:
        value = match.replayed
        for action in actions:
            value = _extend(bank, value, digest(bank, action))
        if value == match.quoted:
            return match._replace(status="match", proven=match.total, diverges_at=None, replayed=value)
    return None


def match_event_log(log: EventLog, quoted: Mapping[str, Mapping[int, bytes]]) -> LogMatch:
    """Compare a TCG log with verified quoted PCR values ``{bank: {pcr: value}}``.

    Only banks the log has digests for (and this Python can hash) are compared. PCR 5 gets
    go-attestation's ExitBootServices workaround (:data:`EBS_WORKAROUNDS`).
    """
    extended: dict[int, list[Event]] = {}
    for event in _extending(log):
        extended.setdefault(event.pcr, []).append(event)
    matches: list[PcrMatch] = []
    numbers: set[int] = set()
    covered: set[int] = set()
    for bank in log.banks:
        if bank not in quoted or hasher(bank) is None:
            continue
        size = len(digest(bank, b""))
        for pcr in sorted(extended):
            value = quoted[bank].get(pcr)
            if value is None:
                continue
            covered.add(pcr)
            events = extended[pcr]
            steps = [(event.number, event.digests[bank]) for event in events]
            match, proven = match_pcr(
                bank, pcr, _initial(log.startup_locality, pcr, size), steps, bytes(value)
            )
            if match.status != "match" and pcr == 5:
                match = _ebs_workaround(bank, match) or match
                proven = match.proven
            matches.append(match)
            numbers.update(event.number for event in events[:proven])
    unquoted = tuple(pcr for pcr in sorted(extended) if pcr not in covered)
    return LogMatch(tuple(matches), unquoted, frozenset(numbers))
