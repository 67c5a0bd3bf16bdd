"""Write a crypto-agile TCG event log: the router's log of its own extends (swtpm, PCR 23).

The output is what firmware writes (TCG PC Client Platform Firmware Profile, section 10): a
SHA-1 format EV_NO_ACTION "Spec ID Event03" header naming the banks, then TCG_PCR_EVENT2
events with one digest per bank. Appending to a firmware log (``base``) keeps its header and
banks, so the result still parses as one log, and replays as the firmware's plus ours.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

from ..errors import EventLogError
from ._constants import ALGORITHM_IDS, DIGEST_SIZES, EV_NO_ACTION, digest, hasher
from ._parse import SPEC_ID_SIGNATURE, parse_event_log

__all__ = ["EventLogWriter"]


def spec_id_event(banks: tuple[str, ...]) -> bytes:
    """The TCG_EfiSpecIDEvent data for ``banks``: platform class 0 (client), version 2.0, UINTN of 8 bytes."""
    data = SPEC_ID_SIGNATURE + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, len(banks))
    data += b"".join(struct.pack("<HH", ALGORITHM_IDS[bank], DIGEST_SIZES[bank]) for bank in banks)
    return data + b"\x00"  # no vendor info


class EventLogWriter:
    """Builds a log event by event; :meth:`to_bytes` is the log so far.

    ``banks`` are the digest algorithms of every event (each one :mod:`hashlib` computes).
    ``base`` is an existing log to append to (a machine's firmware log); the banks are then its own.
    """

    def __init__(
        self, banks: tuple[str, ...] = ("sha1", "sha256", "sha384"), *, base: bytes | None = None
    ) -> None:
        if base is not None:
            log = parse_event_log(base)
            self._sha1_format = log.format == "sha1"
            self.banks: tuple[str, ...] = log.banks
            self._parts = [bytes(base)]
        else:
            if not banks or len(set(banks)) != len(banks):
                raise ValueError("an event log needs one or more distinct banks")
            self._sha1_format = False
            self.banks = tuple(banks)
            self._check_banks()
            header = spec_id_event(self.banks)
            self._parts = [struct.pack("<II20sI", 0, EV_NO_ACTION, bytes(20), len(header)) + header]
        self._check_banks()

    def _check_banks(self) -> None:
        unknown = [bank for bank in self.banks if bank not in ALGORITHM_IDS or hasher(bank) is None]
        if unknown:
            raise EventLogError(
                f"cannot write digests of {', '.join(unknown)}", code="eventlog_unknown_algorithm"
            )

    def add(
        self, pcr: int, event_type: int, data: bytes, digests: Mapping[str, bytes] | None = None
    ) -> dict[str, bytes]:
        """Append one event and return its digest per bank: what to extend into ``pcr`` of each bank.

        ``digests`` default to H_bank(``data``) (zeros for EV_NO_ACTION, which extends nothing);
        given, they must cover exactly the log's banks with digests of the right sizes.
        """
        if digests is None:
            if event_type == EV_NO_ACTION:
                digests = {bank: bytes(DIGEST_SIZES[bank]) for bank in self.banks}
            else:
                digests = {bank: digest(bank, data) for bank in self.banks}
        if set(digests) != set(self.banks):
            raise ValueError(f"digests must be for exactly the banks {', '.join(self.banks)}")
        for bank in self.banks:
            if len(digests[bank]) != DIGEST_SIZES[bank]:
                raise ValueError(f"a {bank} digest has {DIGEST_SIZES[bank]} bytes, not {len(digests[bank])}")
        if self._sha1_format:
            self._parts.append(struct.pack("<II20sI", pcr, event_type, digests["sha1"], len(data)) + data)
        else:
            values = b"".join(struct.pack("<H", ALGORITHM_IDS[bank]) + digests[bank] for bank in self.banks)
            self._parts.append(
                struct.pack("<III", pcr, event_type, len(self.banks))
                + values
                + struct.pack("<I", len(data))
                + data
            )
        return {bank: bytes(digests[bank]) for bank in self.banks}

    def to_bytes(self) -> bytes:
        """The log: header (or ``base``) and every event added so far."""
        return b"".join(self._parts)
