"""Quotes from a real TPM (swtpm or /dev/tpmrm0) through tpm2-pytss: the ``tpm`` extra.

Only the router needs this; verification never does. The AIK is an
ephemeral primary key in the endorsement hierarchy, created when the source
opens (tens of milliseconds on swtpm for RSA-2048, up to seconds on hardware)
and flushed when it closes: one AIK per router process, so its name and
fingerprint are stable for as long as the router runs and change on restart
(docs/protocol.md). Each quote costs one TPM2_Quote plus two TPM2_PCR_Read.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ..errors import ConfigurationError
from ..tpm._structures import HASH_NAMES, PCRSelection, marshal_pcr_selection_list
from ._attester import Quote

__all__ = ["AIK_TEMPLATES", "Tpm2QuoteSource", "parse_tpm_spec"]

_ATTRIBUTES = "restricted|sign|fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda"
AIK_TEMPLATES = {
    "rsa2048-rsassa": "rsa2048:rsassa-sha256:null",
    "rsa2048-rsapss": "rsa2048:rsapss-sha256:null",
    "ecc256-ecdsa": "ecc256:ecdsa-sha256:null",
}
_MAX_PCRS_PER_READ = 8  # TPML_DIGEST holds at most eight digests


def parse_tpm_spec(spec: str) -> tuple[str, str]:
    """``swtpm:host=H,port=P`` or ``device:/dev/tpmrm0`` as a (TCTI name, config) pair."""
    name, _, config = spec.partition(":")
    if name == "swtpm":
        return "swtpm", config or "host=127.0.0.1,port=2321"
    if name == "device":
        return "device", config or "/dev/tpmrm0"
    raise ConfigurationError(f"unknown TPM {spec!r}: use swtpm:host=H,port=P or device:/dev/tpmrm0")


class Tpm2QuoteSource:
    """A :class:`QuoteSource` on a real TPM (``device:/dev/tpmrm0``) or swtpm
    (``swtpm:host=H,port=P``) through tpm2-pytss, with an ephemeral AIK of kind ``aik``.

    Raises :class:`nomyo_audit.errors.ConfigurationError` when tpm2-pytss is not installed (the
    ``tpm`` extra), the AIK kind is unknown, or the TPM cannot be opened.
    """

    def __init__(self, spec: str, aik: str = "rsa2048-rsassa") -> None:
        try:
            from tpm2_pytss import ESAPI, TCTILdr
            from tpm2_pytss.constants import ESYS_TR
            from tpm2_pytss.types import TPM2B_PUBLIC, TPM2B_SENSITIVE_CREATE
        except ImportError as exc:
            raise ConfigurationError(
                f"a real TPM needs the 'tpm' extra: pip install 'nomyo-audit[tpm]' ({exc})"
            ) from None
        if aik not in AIK_TEMPLATES:
            raise ConfigurationError(f"unknown AIK kind {aik!r}: one of {', '.join(AIK_TEMPLATES)}")
        self.aik_kind = aik
        tcti_name, tcti_config = parse_tpm_spec(spec)
        self.kind = "swtpm" if tcti_name == "swtpm" else "tpm-device"
        try:
            self._esys = ESAPI(TCTILdr(tcti_name, tcti_config))
            template = TPM2B_PUBLIC.parse(AIK_TEMPLATES[aik], objectAttributes=_ATTRIBUTES)
            self._aik, public, _, _, _ = self._esys.create_primary(
                TPM2B_SENSITIVE_CREATE(), template, ESYS_TR.ENDORSEMENT
            )
        except Exception as exc:  # TSS2 errors, connection refused...
            raise ConfigurationError(f"cannot open TPM {spec}: {exc}") from None
        self.aik_public: bytes = public.marshal()

    def _read(self, selections: tuple[PCRSelection, ...]) -> tuple[int, tuple[bytes, ...]]:
        from tpm2_pytss.types import TPML_PCR_SELECTION

        counters = []
        values: list[bytes] = []
        for selection in selections:
            bank = HASH_NAMES[selection.hash_alg]
            for start in range(0, len(selection.indices), _MAX_PCRS_PER_READ):
                chunk = selection.indices[start : start + _MAX_PCRS_PER_READ]
                spec = f"{bank}:{','.join(map(str, chunk))}"
                counter, _, digests = self._esys.pcr_read(TPML_PCR_SELECTION.parse(spec))
                if len(digests) != len(chunk):
                    raise ConfigurationError(f"the TPM does not implement all of {spec}")
                counters.append(counter)
                values.extend(bytes(d) for d in digests)
        return sum(counters), tuple(values)

    def quote(self, selections: tuple[PCRSelection, ...], extra_data: bytes) -> Quote:
        """Quote and read the PCRs in one unchanged state (retried if a PCR moved in between)."""
        from tpm2_pytss.constants import TPM2_ALG
        from tpm2_pytss.types import TPM2B_DATA, TPML_PCR_SELECTION, TPMT_SIG_SCHEME

        # from our own marshalling: tpm2-pytss cannot parse a bank with no PCR ("sha1:")
        requested = TPML_PCR_SELECTION.unmarshal(marshal_pcr_selection_list(selections))[0]
        for _ in range(5):
            before, values = self._read(selections)
            attest, signature = self._esys.quote(
                self._aik,
                requested,
                TPM2B_DATA(extra_data),
                TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL),
            )
            after, _ = self._read(selections)
            if before == after:
                return Quote(bytes(attest), signature.marshal(), values)
        raise ConfigurationError("PCRs kept changing during the quote; try again")

    def extend(self, bank: str, index: int, data: bytes) -> None:
        """Extend one PCR with the digest of ``data`` (demos and tests change the measured state)."""
        from tpm2_pytss.constants import ESYS_TR, TPM2_ALG
        from tpm2_pytss.types import TPML_DIGEST_VALUES, TPMT_HA, TPMU_HA

        alg = {"sha1": TPM2_ALG.SHA1, "sha256": TPM2_ALG.SHA256, "sha384": TPM2_ALG.SHA384}[bank]
        digest: Any = TPMU_HA(**{bank: hashlib.new(bank, data).digest()})
        handle = getattr(ESYS_TR, f"PCR{index}")
        self._esys.pcr_extend(handle, TPML_DIGEST_VALUES([TPMT_HA(hashAlg=alg, digest=digest)]))

    def close(self) -> None:
        """Flush the AIK and close the connection to the TPM."""
        try:
            self._esys.flush_context(self._aik)
        finally:
            self._esys.close()
