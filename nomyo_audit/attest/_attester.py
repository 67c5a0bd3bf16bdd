"""Making evidence: the ``tpm_attestation`` block, from any source of TPM quotes.

A :class:`QuoteSource` is the one small interface behind which the TPM sits:
a real one through tpm2-pytss (:mod:`.tpm2`) or the in-process
:class:`.software.SoftwareTPM`. :class:`TPMAttester` turns its quotes into the
seed document's shape, bound to each response (docs/protocol.md).
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import ConfigurationError
from ..tpm import (
    PCRSelection,
    key_binding,
    parse_credential,
    parse_pcr_banks,
    response_binding,
    response_content_digest,
)
from ..tpm._binding import client_key_binding
from ..tpm._structures import HASH_NAMES, pcr_value_map

if TYPE_CHECKING:
    from ._measured import MeasurementLog

__all__ = ["DEFAULT_PCR_BANKS", "Quote", "QuoteSource", "TPMAttester"]

#: The PCRs a router quotes unless told otherwise: firmware, secure boot policy, IMA
DEFAULT_PCR_BANKS = "sha256:0,7,10"

#: PCRs 0-23: what the TCG PC Client profile gives every TPM our attesters drive.
PC_CLIENT_PCRS = 24


@dataclass(frozen=True)
class Quote:
    """What a :class:`QuoteSource` returns for one quote: the signed bytes, the signature, and the
    PCR values the quote covers."""

    attest: bytes  # TPMS_ATTEST
    signature: bytes  # TPMT_SIGNATURE
    pcr_values: tuple[bytes, ...]  # in selection order, read in the same state the quote covers


class QuoteSource(Protocol):
    """Anything that quotes PCRs with an AIK: the one interface behind which a TPM sits."""

    #: "software", "swtpm" or "tpm-device": said in the evidence, so no report overstates it.
    kind: str
    #: The AIK as a marshalled TPM2B_PUBLIC.
    aik_public: bytes

    def quote(self, selections: tuple[PCRSelection, ...], extra_data: bytes) -> Quote:
        """Quote ``selections`` with ``extra_data`` in the quote's extraData."""
        ...

    def close(self) -> None:
        """Release the TPM (flush the AIK, close the connection)."""
        ...


class TPMAttester:
    """The router's attester: one quote per response over the configured PCRs.

    Thread-safe: quotes (and the extends of :attr:`measurements`) are serialised, because a TPM
    session is not shared between threads and a quote must not cover an extend its log lacks.
    ``firmware_log`` (a device TPM's TCG log, to which the router's events are appended) and
    ``kernel_ima`` (the kernel's IMA list, read after each quote) make every quote carry them.
    Raises :class:`nomyo_audit.errors.ConfigurationError` when ``pcr_banks`` names a PCR or a bank
    the TPM does not have, and :class:`nomyo_audit.errors.EvidenceError` when it is not like
    ``"sha256:0,7,10"``.
    """

    def __init__(
        self,
        source: QuoteSource,
        pcr_banks: str = DEFAULT_PCR_BANKS,
        *,
        firmware_log: bytes | None = None,
        kernel_ima: Path | None = None,
    ) -> None:
        self.source = source
        self._log_sources = (firmware_log, kernel_ima)
        self._measurements: MeasurementLog | None = None
        self.pcr_banks = pcr_banks
        self.selections = parse_pcr_banks(pcr_banks)
        highest = max((i for s in self.selections for i in s.indices), default=0)
        if highest >= PC_CLIENT_PCRS:
            raise ConfigurationError(
                f"--pcrs {pcr_banks}: PCR {highest} does not exist (a PC-client TPM has PCRs 0-23)"
            )
        banks: tuple[int, ...] = getattr(source, "banks", ())  # a source that knows its banks says so
        for selection in self.selections if banks else ():
            if selection.hash_alg not in banks:
                name = HASH_NAMES.get(selection.hash_alg, f"{selection.hash_alg:#06x}")
                raise ConfigurationError(f"--pcrs {pcr_banks}: this TPM has no {name} bank")
        self._lock = threading.Lock()  # TPM sessions are not shared between threads
        self._aik_chain_b64: tuple[str, ...] = ()
        self._platform: Mapping[str, Any] | None = None  # attest._platform: read once at start
        if firmware_log is not None or kernel_ima is not None:
            self.measurements  # noqa: B018 - made now: every quote carries the machine's logs

    def evidence(self, extra_data: bytes) -> dict[str, Any]:
        """A ``tpm_attestation`` block whose quote carries ``extra_data``: the source's errors pass
        through (a :class:`Tpm2QuoteSource` raises ConfigurationError)."""
        measured: dict[str, str] = {}
        with self._lock:
            quote = self.source.quote(self.selections, extra_data)
            if self._measurements is not None:  # the logs as they were when the quote was made
                measured = self._measurements.evidence_fields()
        if self._measurements is not None:
            measured.update(self._measurements.kernel_ima_field())
        block = {
            "is_available": True,
            "pcr_banks": self.pcr_banks,
            "pcr_values": pcr_value_map(self.selections, quote.pcr_values),
            "quote_b64": base64.b64encode(quote.attest).decode(),
            "signature_b64": base64.b64encode(quote.signature).decode(),
            "aik_pubkey_b64": base64.b64encode(self.source.aik_public).decode(),
            "attester": self.source.kind,
            "hardware_rooted": False if self.source.kind == "software" else None,
            "nonce_binding": "nomyo-audit-v1",
        }
        parent = self._parent_qualified_name()
        if parent is not None:
            block["aik_parent_qualified_name_b64"] = parent
        if self._aik_chain_b64:
            block["aik_cert_chain_b64"] = list(self._aik_chain_b64)
        if self._platform is not None:
            block["platform"] = dict(self._platform)
        block.update(measured)
        return block

    @property
    def measurements(self) -> MeasurementLog:
        """The measuring API: extend events (and IMA entries) into this TPM and log them, so every
        later quote carries the logs (``event_log_b64``, ``ima_log_b64``). Made on first use."""
        if self._measurements is None:
            from ._measured import MeasurementLog

            firmware_log, kernel_ima = self._log_sources
            self._measurements = MeasurementLog(
                self.source, self._lock, firmware_log=firmware_log, kernel_ima=kernel_ima
            )
        return self._measurements

    def _parent_qualified_name(self) -> str | None:
        parent: bytes | None = getattr(self.source, "aik_parent_qualified_name", None)
        return None if parent is None else base64.b64encode(parent).decode()

    def aik_public(self) -> bytes:
        """The current AIK as a marshalled TPM2B_PUBLIC (for enrollment, and to notice rotation)."""
        return self.source.aik_public

    def set_aik_certificate_chain(self, chain_der: list[bytes]) -> None:
        """Attach this AK certificate chain (AK certificate first) to every later quote, as
        ``aik_cert_chain_b64``; an empty list stops attaching one."""
        self._aik_chain_b64 = tuple(base64.b64encode(der).decode() for der in chain_der)

    def set_platform(self, platform: Mapping[str, Any] | None) -> None:
        """Attach this ``platform`` object (the cloud's anchor of the AK, :mod:`._platform`) to every
        later quote; None stops attaching one."""
        self._platform = platform

    def endorsement(self) -> dict[str, Any]:
        """The body of ``GET /pki/endorsement``: the EK public area, its certificate and chain from the
        TPM's NV, and the AIK with its parent. Raises LookupError for a source without an EK (software)."""
        read = getattr(self.source, "endorsement", None)
        if read is None:
            raise LookupError(f"a {self.source.kind} attester has no endorsement key")
        with self._lock:
            ek = read()
        certificate = None if ek.certificate is None else base64.b64encode(ek.certificate).decode()
        return {
            "version": 1,
            "ek_public_b64": base64.b64encode(ek.public).decode(),
            "ek_certificate_b64": certificate,
            "ek_chain_b64": [base64.b64encode(der).decode() for der in ek.chain],
            "aik_pubkey_b64": base64.b64encode(self.source.aik_public).decode(),
            "aik_parent_qualified_name_b64": self._parent_qualified_name(),
        }

    def activate_credential(self, id_object: bytes, encrypted_secret: bytes) -> bytes:
        """TPM2_ActivateCredential of a verifier's challenge (TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET)
        with this AIK and the EK: the secret, which only this TPM could recover.

        Raises :class:`nomyo_audit.errors.CredentialError` (an EvidenceError): ``credential_malformed``
        for bytes that are not a credential, ``activation_failed`` when the TPM refuses it (another
        EK, another AIK, an altered blob); LookupError for a source without an EK.
        """
        activate = getattr(self.source, "activate_credential", None)
        if activate is None:
            raise LookupError(f"a {self.source.kind} attester has no endorsement key")
        credential = parse_credential(id_object, encrypted_secret)
        with self._lock:
            secret: bytes = activate(credential.id_object, credential.encrypted_secret)
        return secret

    def attest_response(
        self, payload_id: str, completion: Mapping[str, Any], *, client_key_sha256: bytes | None = None
    ) -> dict[str, Any]:
        """Evidence bound to this response: to ``payload_id`` and to ``completion`` as sent, without
        ``_metadata`` (``nomyo-audit-v1``), and with ``client_key_sha256`` to the client key the
        reply is sealed to (``nomyo-audit-v2``)."""
        content = response_content_digest(completion)
        if client_key_sha256 is None:
            return self.evidence(response_binding(payload_id, content))
        block = self.evidence(client_key_binding(payload_id, content, client_key_sha256))
        block["nonce_binding"] = "nomyo-audit-v2"
        return block

    def attest_key(self, nonce: bytes, spki_sha256: bytes) -> dict[str, Any]:
        """Evidence that this TPM vouches for the router key, for the caller's fresh nonce."""
        block = self.evidence(key_binding(nonce, spki_sha256))
        block["nonce_binding"] = "nomyo-audit-key-v1"
        return block

    def close(self) -> None:
        """Close the quote source."""
        self.source.close()
