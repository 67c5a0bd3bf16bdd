"""Quotes from a real TPM (swtpm or /dev/tpmrm0) through tpm2-pytss: the ``tpm`` extra.

Only the router needs this; verification never does. The AIK is an
ephemeral primary key in the endorsement hierarchy, created when the source
opens (tens of milliseconds on swtpm for RSA-2048, up to seconds on hardware)
and flushed when it closes: one AIK per router process, so its name and
fingerprint are stable for as long as the router runs and change on restart
(docs/protocol.md). Each quote costs one TPM2_Quote plus two TPM2_PCR_Read.

With ``aik_parent="ek"`` the AIK is instead a child of the endorsement key, as ``tpm2_createak``
makes it: its quotes' qualifiedSigner then depends on the EK, whose qualified name the evidence
carries (``aik_parent_qualified_name_b64``) so that a verifier can check the AIK's attributes.
The EK (:mod:`._endorsement`) is created when first needed: for a child AIK, or for
:meth:`Tpm2QuoteSource.endorsement` and :meth:`Tpm2QuoteSource.activate_credential`.

On a cloud VM the AIK can instead be the cloud's own AK (``aik_source``, :mod:`._cloud_aik`): the key
its platform anchor certifies, checked against that anchor when the source opens.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ..errors import ConfigurationError, CredentialError
from ..tpm._public import parse_public
from ..tpm._structures import (
    HASH_BY_NAME,
    HASH_NAMES,
    HASH_SIZES,
    HIERARCHIES,
    PCRSelection,
    marshal_pcr_selection_list,
)
from ._attester import Quote
from ._cloud_aik import open_cloud_aik, parse_aik_source, release_cloud_aik
from ._endorsement import Endorsement, activate, check_ek_choice, create_child, create_ek

__all__ = ["AIK_PARENTS", "AIK_TEMPLATES", "Tpm2QuoteSource", "parse_tpm_spec"]

_ATTRIBUTES = "restricted|sign|fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda"
AIK_TEMPLATES = {
    "rsa2048-rsassa": "rsa2048:rsassa-sha256:null",
    "rsa2048-rsapss": "rsa2048:rsapss-sha256:null",
    "ecc256-ecdsa": "ecc256:ecdsa-sha256:null",
}
#: Where the AIK is made: a primary key in the endorsement hierarchy, or a child of the EK
AIK_PARENTS = ("primary", "ek")
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
    (``swtpm:host=H,port=P``) through tpm2-pytss, with an ephemeral AIK of kind ``aik``, made as
    a primary key or (``aik_parent="ek"``) as a child of the EK, which ``ek`` chooses (an
    ``EK_CHOICES`` key of :mod:`._endorsement`; ``auto`` by default).

    ``aik_source`` (:mod:`._cloud_aik`): ``ephemeral`` (that key), ``cloud`` (the AK the cloud's platform
    anchor in NV certifies: Azure's at 0x81000003, GCE's from its NV template), ``auto`` (the cloud's
    when NV holds an anchor, else ephemeral) or ``persistent:0x81......``; a cloud AK that is not the
    certified key, or cannot quote as a verifier expects, is a ConfigurationError, never a fall-back.

    Raises :class:`nomyo_audit.errors.ConfigurationError` when tpm2-pytss is not installed (the
    ``tpm`` extra), the AIK kind or parent is unknown, or the TPM cannot be opened.
    """

    def __init__(
        self,
        spec: str,
        aik: str = "rsa2048-rsassa",
        aik_parent: str = "primary",
        ek: str = "auto",
        *,
        aik_source: str = "ephemeral",
    ) -> None:
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
        if aik_parent not in AIK_PARENTS:
            raise ConfigurationError(f"unknown AIK parent {aik_parent!r}: one of {', '.join(AIK_PARENTS)}")
        check_ek_choice(ek)
        source_mode, persistent_handle = parse_aik_source(aik_source)
        if source_mode in ("cloud", "persistent") and aik_parent != "primary":
            raise ConfigurationError(f"--aik-parent {aik_parent}: the cloud's AK is a primary key")
        self.ek_choice = ek
        self.aik_kind = aik
        self.spec = spec
        tcti_name, tcti_config = parse_tpm_spec(spec)
        self.kind = "swtpm" if tcti_name == "swtpm" else "tpm-device"
        self._ek: Endorsement | None = None
        self._banks: tuple[int, ...] | None = None
        #: The AIK's parent's qualified name, when the AIK is a child key (None: a primary key)
        self.aik_parent_qualified_name: bytes | None = None
        #: What the AIK is (logged at start): the router's own key, or the cloud's certified AK
        self.aik_origin = "an ephemeral AIK"
        self._aik_persistent = False  # a persistent AIK belongs to the platform: closed, never flushed
        try:
            self._esys = ESAPI(TCTILdr(tcti_name, tcti_config))
            cloud = None
            if source_mode != "ephemeral":
                cloud = open_cloud_aik(
                    self._esys, source_mode, persistent_handle, prefer_rsa=aik.startswith("rsa")
                )
            if cloud is not None and aik_parent != "primary":  # auto found an anchor a child cannot give
                release_cloud_aik(self._esys, cloud)
                raise ConfigurationError(
                    f"--aik-parent {aik_parent}: this TPM holds a cloud anchor for its primary AK; use "
                    "--aik-source ephemeral to quote with a child of the EK (the anchor then fails)",
                    code="cloud_aik_unusable",
                )
            if cloud is not None:
                self._aik, self.aik_public, self._aik_persistent, self.aik_origin = cloud
                return
            template = TPM2B_PUBLIC.parse(AIK_TEMPLATES[aik], objectAttributes=_ATTRIBUTES)
            if aik_parent == "ek":
                parent = self._endorsement()
                self._aik, self.aik_public = create_child(self._esys, parent, template)
                ek_public = parse_public(parent.public)
                self.aik_parent_qualified_name = ek_public.qualified_name(HIERARCHIES["endorsement"])
            else:
                self._aik, public, _, _, _ = self._esys.create_primary(
                    TPM2B_SENSITIVE_CREATE(), template, ESYS_TR.ENDORSEMENT
                )
                self.aik_public = public.marshal()
        except ConfigurationError:
            self._close_connection()
            raise
        except Exception as exc:  # TSS2 errors, connection refused...
            self._close_connection()
            raise ConfigurationError(f"cannot open TPM {spec}: {exc}") from None

    def _close_connection(self) -> None:
        """After a failed start: the TPM connection closed (its transient objects go with it on a
        resource manager; nothing persistent is touched)."""
        esys = getattr(self, "_esys", None)
        if esys is not None:
            esys.close()

    def _endorsement(self) -> Endorsement:
        if self._ek is None:
            self._ek = create_ek(self._esys, self.ek_choice)
        return self._ek

    def endorsement(self) -> Endorsement:
        """The EK: its public area, certificate and chain from NV (created on first use).

        Raises :class:`nomyo_audit.errors.ConfigurationError` when the TPM cannot make it.
        """
        try:
            return self._endorsement()
        except ConfigurationError:
            raise
        except Exception as exc:
            raise ConfigurationError(f"cannot create the EK on {self.spec}: {exc}") from None

    def activate_credential(self, id_object: bytes, encrypted_secret: bytes) -> bytes:
        """TPM2_ActivateCredential for this AIK with the EK: the secret, or
        :class:`nomyo_audit.errors.CredentialError` (``activation_failed``) when the TPM refuses."""
        ek = self.endorsement()
        try:
            return activate(self._esys, self._aik, ek, id_object, encrypted_secret)
        except Exception as exc:  # TSS2_Exception: the TPM's response code says why, no secret in it
            raise CredentialError(
                f"the TPM refused the credential ({_tpm_reason(exc)}): it is for another EK or AIK, "
                "or it was altered",
                code="activation_failed",
            ) from None

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
        self.extend_digest(bank, index, hashlib.new(bank, data).digest())

    def extend_digest(self, bank: str, index: int, digest: bytes) -> None:
        """TPM2_PCR_Extend of one PCR in one bank with ``digest``; ConfigurationError if the TPM refuses."""
        from tpm2_pytss.constants import ESYS_TR
        from tpm2_pytss.types import TPML_DIGEST_VALUES, TPMT_HA, TPMU_HA

        if bank not in HASH_BY_NAME or len(digest) != HASH_SIZES[HASH_BY_NAME[bank]]:
            raise ConfigurationError(f"cannot extend {bank} PCR {index} with a {len(digest)}-byte digest")
        value: Any = TPMU_HA(**{bank: digest})
        extend = TPML_DIGEST_VALUES([TPMT_HA(hashAlg=HASH_BY_NAME[bank], digest=value)])
        try:
            self._esys.pcr_extend(getattr(ESYS_TR, f"PCR{index}"), extend)
        except Exception as exc:  # TSS2_Exception: a bank or PCR this TPM does not have
            reason = _tpm_reason(exc)
            raise ConfigurationError(f"the TPM refused to extend {bank} PCR {index} ({reason})") from None

    def reset(self, index: int) -> None:
        """TPM2_PCR_Reset: every bank of PCR ``index`` back to zeros. A TPM resets only PCRs whose
        attributes allow it at locality 0 (16 and 23 on a PC Client TPM): ConfigurationError otherwise."""
        from tpm2_pytss.constants import ESYS_TR

        try:
            self._esys.pcr_reset(getattr(ESYS_TR, f"PCR{index}"))
        except Exception as exc:
            raise ConfigurationError(f"the TPM refused to reset PCR {index} ({_tpm_reason(exc)})") from None

    @property
    def banks(self) -> tuple[int, ...]:
        """The hash algorithms of the PCR banks this TPM has allocated (at least one PCR selected),
        asked once (TPM2_GetCapability of TPM_CAP_PCRS)."""
        if self._banks is None:
            from tpm2_pytss.constants import TPM2_CAP

            _, data = self._esys.get_capability(TPM2_CAP.PCRS, 0)
            self._banks = tuple(
                int(s.hash) for s in data.data.assignedPCR if any(bytes(s.pcrSelect)[: s.sizeofSelect])
            )
        return self._banks

    def read(self, selections: tuple[PCRSelection, ...]) -> tuple[bytes, ...]:
        """The values of the selected PCRs, in selection order."""
        return self._read(selections)[1]

    def close(self) -> None:
        """Flush the AIK (and the EK) and close the connection to the TPM."""
        try:
            if self._aik_persistent:
                self._esys.tr_close(self._aik)
            else:
                self._esys.flush_context(self._aik)
            if self._ek is not None:
                self._esys.flush_context(self._ek.handle)
        finally:
            self._esys.close()


def _tpm_reason(exc: Exception) -> str:
    """The TPM response code of a refusal, as tpm2-tools prints it (``0x000009a2``...)."""
    rc = getattr(exc, "rc", None)
    return f"TPM response 0x{int(rc):08x}" if isinstance(rc, int) else type(exc).__name__
