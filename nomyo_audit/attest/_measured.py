"""What an attester extends, and the logs that explain it.

A quote proves PCR values; a log says what was measured to reach them. Whatever the router
extends goes through :class:`MeasurementLog`, which extends the TPM and appends the same event to
a TCG crypto-agile event log (every bank the TPM has) or, for PCR 10, to an IMA measurement list,
so that a verifier can replay the log to the quoted values (docs/serving-stack.md). The attester's
lock serialises extends and quotes: a quote never covers an extend its log lacks.

On a device TPM the firmware already keeps a log (``binary_bios_measurements``): the router's
events are appended to a copy of it, and PCR 10 belongs to the kernel, whose IMA list is attached
as the kernel keeps it, read after each quote.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError, EventLogError
from ..eventlog import MAX_EVENT_LOG_BYTES, MAX_IMA_LOG_BYTES, EventLogWriter, ImaLogWriter
from ..eventlog._constants import DIGEST_SIZES
from ..eventlog._constants import digest as bank_digest
from ..tpm._evidence import parse_pcr_banks
from ..tpm._structures import HASH_NAMES

__all__ = [
    "FIRMWARE_LOG_PATH",
    "IMA_LIST_PATH",
    "IMA_PCR",
    "MeasurementLog",
    "firmware_log",
    "read_bounded_file",
]

FIRMWARE_LOG_PATH = Path("/sys/kernel/security/tpm0/binary_bios_measurements")
IMA_LIST_PATH = Path("/sys/kernel/security/ima/binary_runtime_measurements")
#: The PCR IMA extends (CONFIG_IMA_MEASURE_PCR_IDX)
IMA_PCR = 10
_DEFAULT_BANKS = ("sha1", "sha256", "sha384")
KERNEL_PCR = "PCR 10 belongs to the kernel's IMA on this TPM: the router extends nothing into it"

logger = logging.getLogger("nomyo_audit.router")


def read_bounded_file(path: Path, limit: int, what: str, *, warn: bool = True) -> bytes | None:
    """The bytes of ``path`` when it has at most ``limit`` of them; None, with a warning that says
    why, when it is missing, unreadable or larger (evidence then goes without it, never truncated)."""
    reason = None
    try:
        with path.open("rb") as stream:
            data = stream.read(limit + 1)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
    else:
        if len(data) <= limit:
            return data
        reason = f"larger than {limit} bytes"
    if warn:
        logger.warning("%s %s not attached: %s", what, path, reason)
    return None


class MeasurementLog:
    """The extends an attester made, as a TCG event log and an IMA measurement list.

    ``source`` is the attester's :class:`~nomyo_audit.attest.QuoteSource` (it must have
    ``extend_digest`` and ``reset``); ``lock`` the attester's, taken by every method here except
    :meth:`evidence_fields`, which the attester calls while it holds the lock around a quote.
    ``firmware_log``: a firmware event log to append to (a device TPM). ``kernel_ima``: the path of
    the kernel's IMA list, attached instead of one of our own; then the router extends no PCR 10.
    """

    def __init__(
        self,
        source: Any,
        lock: threading.Lock,
        *,
        firmware_log: bytes | None = None,
        kernel_ima: Path | None = None,
    ) -> None:
        self._source = source
        self._lock = lock
        self._kernel_ima = kernel_ima
        tpm_banks = tuple(HASH_NAMES[a] for a in getattr(source, "banks", ()) if a in HASH_NAMES)
        self._events: EventLogWriter | None = None
        if firmware_log is not None:
            try:
                self._events = EventLogWriter(base=firmware_log)
            except (EventLogError, ValueError) as exc:
                logger.warning("the firmware event log is not attached: %s", exc)
        self._has_base = self._events is not None
        self._event_banks = tpm_banks or _DEFAULT_BANKS
        self._ima = ImaLogWriter(tpm_banks or _DEFAULT_BANKS)
        self._tpm_banks = frozenset(tpm_banks or _DEFAULT_BANKS)
        self._extended: set[int] = set()
        self._event_count = 0
        self._ima_count = 0
        self._event_b64: str | None = None
        self._ima_b64: str | None = None
        self._kernel_ima_cache: tuple[bytes, str] | None = None if kernel_ima is None else (b"", "")

    def _writer(self) -> EventLogWriter:
        if self._events is None:
            self._events = EventLogWriter(self._event_banks)
        return self._events

    def extend_event(
        self, pcr: int, event_type: int, data: bytes, digests: Mapping[str, bytes] | None = None
    ) -> dict[str, bytes]:
        """Extend a TCG event into ``pcr`` in every bank the log and the TPM both have, and log it.

        ``digests`` (bank -> digest) default to the hash of ``data`` in each bank, as most event
        types are measured; an image or a firmware blob gives its own. Returns the digests logged.
        Raises ConfigurationError when the TPM refuses (the log is then left without the event).
        """
        if pcr == IMA_PCR and self._kernel_ima is not None:
            raise ConfigurationError(KERNEL_PCR)
        with self._lock:
            writer = self._writer()
            given = dict(digests or {})
            values = {bank: given.get(bank) or bank_digest(bank, data) for bank in writer.banks}
            for bank, value in values.items():  # checked before any bank is extended: a PCR half
                if len(value) != DIGEST_SIZES[bank]:  # extended is one no log explains
                    raise ConfigurationError(f"a {bank} digest of {len(value)} bytes cannot be extended")
            self._extend(pcr, values)
            logged = writer.add(pcr, event_type, data, values)
            self._event_count += 1
            self._event_b64 = None
            return logged

    def extend_ima_file(self, path: str, file_digest: bytes, algorithm: str = "sha256") -> dict[str, bytes]:
        """Append an ima-ng entry for ``path`` to our IMA list and extend its template hash into PCR 10."""
        with self._lock:
            self._own_ima()
            return self._extend_ima(self._ima.add_file(path, file_digest, algorithm))

    def extend_ima_boot_aggregate(self, bank: str = "sha256") -> dict[str, bytes]:
        """Append IMA's ``boot_aggregate`` (over PCRs 0-9 of ``bank``, read now) and extend it into PCR 10."""
        with self._lock:
            self._own_ima()
            values = self._source.read(parse_pcr_banks(f"{bank}:" + ",".join(map(str, range(10)))))
            return self._extend_ima(self._ima.add_boot_aggregate(dict(enumerate(values)), bank))

    def reset(self, pcr: int) -> None:
        """TPM2_PCR_Reset of ``pcr`` (23 or 16), before any event of ours is in it: a log cannot say
        that a PCR was reset after its events, so that is refused (ConfigurationError)."""
        with self._lock:
            if pcr in self._extended:
                raise ConfigurationError(f"PCR {pcr} holds logged events: a reset would orphan them")
            try:
                self._source.reset(pcr)
            except ValueError as exc:  # the software TPM's refusal
                raise ConfigurationError(str(exc)) from None

    def evidence_fields(self) -> dict[str, str]:
        """``event_log_b64`` and ``ima_log_b64`` for a quote made now (the caller holds the lock):
        the base64 is made once per change of a log."""
        fields: dict[str, str] = {}
        if self._events is not None and (self._event_count or self._has_base):
            if self._event_b64 is None:
                self._event_b64 = base64.b64encode(self._events.to_bytes()).decode()
            fields["event_log_b64"] = self._event_b64
        if self._ima_count:
            if self._ima_b64 is None:
                self._ima_b64 = base64.b64encode(self._ima.to_bytes()).decode()
            fields["ima_log_b64"] = self._ima_b64
        return fields

    def kernel_ima_field(self) -> dict[str, str]:
        """The kernel's IMA list as ``ima_log_b64``, read now (after the quote: the list may only have
        grown, which a verifier accepts as entries the quote does not prove yet); {} without one."""
        if self._kernel_ima is None:
            return {}
        data = read_bounded_file(
            self._kernel_ima,
            MAX_IMA_LOG_BYTES,
            "the kernel's IMA list",
            warn=self._kernel_ima_cache is not None,
        )
        if not data:  # said once when it stops being attached, not on every reply
            self._kernel_ima_cache = None
            return {}
        cached = self._kernel_ima_cache
        if cached is None or cached[0] != data:
            cached = self._kernel_ima_cache = (data, base64.b64encode(data).decode())
        return {"ima_log_b64": cached[1]}

    def _own_ima(self) -> None:
        if self._kernel_ima is not None:
            raise ConfigurationError(KERNEL_PCR)

    def _extend_ima(self, digests: dict[str, bytes]) -> dict[str, bytes]:
        self._extend(IMA_PCR, digests)
        self._ima_count += 1
        self._ima_b64 = None
        return digests

    def _extend(self, pcr: int, digests: Mapping[str, bytes]) -> None:
        for bank, digest in digests.items():
            if bank in self._tpm_banks:
                self._source.extend_digest(bank, pcr, digest)
        self._extended.add(pcr)


def firmware_log(path: Path = FIRMWARE_LOG_PATH) -> bytes | None:
    """The firmware's TCG event log of this machine, bounded by ``MAX_EVENT_LOG_BYTES``, or None."""
    return read_bounded_file(path, MAX_EVENT_LOG_BYTES, "the firmware event log")
