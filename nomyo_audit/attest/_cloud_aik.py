"""The cloud's attestation key: quote with the AK the cloud certified, or refuse to start.

A cloud platform anchor (``attest._platform``) certifies one key, not whatever key the router makes:

* Azure confidential VMs: the vTPM AK the paravisor names in the HCL report (``HCLAkPub``), a primary
  key of the endorsement hierarchy made persistent at ``0x81000003`` (RSA 2048, SHA-256, attributes
  0x00050472, RSASSA-SHA256; kinvolk/azure-cvm-tooling ``az-cvm-vtpm/src/vtpm/mod.rs``
  ``VTPM_AK_HANDLE``);
* GCE Shielded VMs: the key go-tpm-tools ``client/keys.go`` ``GceAttestationKeyRSA`` / ``ECC`` makes
  (commit 67670e5c021a24f2366eb1808db2659211af5eb2): ``KeyFromNvIndex(rw, HandleEndorsement, idx)``
  reads the TPMT_PUBLIC template at ``GceAKTemplateNVIndexRSA`` ``0x01c10001`` / ``ECC``
  ``0x01c10003`` (``client/handles.go``) and creates a primary key from it in the endorsement
  hierarchy; the AK certificate at ``0x01c10000`` / ``0x01c10002`` certifies that key.

:func:`open_cloud_aik` (I/O, tpm2-pytss) loads or creates that key, then checks before the router
serves anything that it is exactly the key the anchor names (:func:`check_anchor_key`, pure), that
it is a restricted signing key, and that its quotes name it as a primary key of the endorsement
hierarchy (the ``qualifiedSigner`` a verifier expects of a key without ``aik_parent_qualified_name``).
Any failure is a :class:`ConfigurationError` with its own code: the router never falls back to a key
the anchor does not certify, so it never starts claiming an anchor it cannot give.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from ..errors import ConfigurationError, EvidenceError
from ..tpm._marshal import ALG, TPMStructureError
from ..tpm._public import ObjectAttributes, Public, parse_public
from ..tpm._structures import HIERARCHIES
from ._platform import NV_GCE_AK_CERT_ECC, NV_GCE_AK_CERT_RSA, NV_HCL_REPORT, _trimmed

__all__ = [
    "AIK_SOURCES",
    "AZURE_AK_HANDLE",
    "NV_GCE_AK_TEMPLATE_ECC",
    "NV_GCE_AK_TEMPLATE_RSA",
    "CloudAik",
    "check_anchor_key",
    "open_cloud_aik",
    "parse_aik_source",
    "release_cloud_aik",
]

AZURE_AK_HANDLE = 0x81000003
NV_GCE_AK_TEMPLATE_RSA = 0x01C10001
NV_GCE_AK_TEMPLATE_ECC = 0x01C10003
#: Each GCE AK certificate index, with the index of the template its key is made from
_GCE_TEMPLATE_OF = {NV_GCE_AK_CERT_RSA: NV_GCE_AK_TEMPLATE_RSA, NV_GCE_AK_CERT_ECC: NV_GCE_AK_TEMPLATE_ECC}
#: ``serve --aik-source`` values (``persistent:0x81......`` takes any persistent handle)
AIK_SOURCES = ("auto", "ephemeral", "cloud", "persistent:HANDLE")
_PERSISTENT = range(0x81000000, 0x82000000)
_MAX_TEMPLATE = 1024  # a TPMT_PUBLIC with an RSA 4096 unique is about 600 bytes


class CloudAik(NamedTuple):
    """The AIK the router quotes with, when it is not its own ephemeral key."""

    handle: Any  # ESYS_TR
    public: bytes  # TPM2B_PUBLIC
    persistent: bool  # a persistent key is closed, never flushed (it belongs to the platform)
    origin: str  # what the key is, for the log ("the Azure vTPM AK at 0x81000003 ...")


def parse_aik_source(value: str) -> tuple[str, int | None]:
    """``auto``, ``ephemeral``, ``cloud`` or ``persistent:0x81000003`` as (mode, handle). Pure.

    Raises ConfigurationError (``aik_source``) for anything else or a handle outside 0x81xxxxxx."""
    mode, sep, handle_text = value.partition(":")
    if not sep and mode in ("auto", "ephemeral", "cloud"):
        return mode, None
    if mode == "persistent" and sep:
        try:
            handle = int(handle_text, 16)
        except ValueError:
            handle = -1
        if handle in _PERSISTENT:
            return mode, handle
    raise ConfigurationError(
        f"--aik-source {value!r}: use auto, ephemeral, cloud or persistent:0x81000000-0x81ffffff",
        code="aik_source",
    )


def check_anchor_key(nv: Mapping[int, bytes], aik: Public, gce_index: int | None = None) -> str | None:
    """Whether ``aik`` is the key the platform anchor in ``nv`` (index -> bytes) certifies. Pure.

    Returns the anchor's name, or None when ``nv`` holds no anchor. An HCL report is the anchor when
    there is one (as for ``platform``); else the GCE AK certificate at ``gce_index`` (or the first
    present). Raises ConfigurationError ``cloud_aik_mismatch`` when the anchor names another key, or
    ``cloud_anchor_malformed`` when it does not read."""
    from ..tpm._hcl import hcl_ak_matches, parse_hcl_report
    from ..tpm._keys import spki_der, to_crypto_key
    from ..tpm._x509 import read_certificate

    hcl = nv.get(NV_HCL_REPORT)
    if hcl is not None:
        try:
            report = parse_hcl_report(hcl)
        except EvidenceError as exc:
            raise _malformed(NV_HCL_REPORT, exc) from None
        if not hcl_ak_matches(report, aik):
            raise _mismatch(f"the HCL report at NV 0x{NV_HCL_REPORT:08x} names another AK (HCLAkPub)")
        return "the HCL report's HCLAkPub"
    index = gce_index or next((i for i in _GCE_TEMPLATE_OF if i in nv), None)
    if index is None or index not in nv:
        return None
    try:
        certified = read_certificate(_trimmed(nv[index])).spki
    except EvidenceError as exc:
        raise _malformed(index, exc) from None
    try:
        quoting = spki_der(to_crypto_key(aik))
    except TPMStructureError:
        quoting = b""
    if certified != quoting:
        raise _mismatch(f"the GCE AK certificate at NV 0x{index:08x} certifies another key")
    return f"the GCE AK certificate at NV 0x{index:08x}"


def open_cloud_aik(esys: Any, mode: str, handle: int | None, *, prefer_rsa: bool = True) -> CloudAik | None:
    """The AIK ``mode`` asks for on this TPM (I/O), checked against the platform anchor in its NV.

    ``cloud``: the Azure AK at :data:`AZURE_AK_HANDLE` when NV holds an HCL report, else the GCE AK
    from its NV template (RSA first when ``prefer_rsa``); ConfigurationError ``cloud_aik_missing``
    when there is no anchor or no key. ``auto``: the same, or None (the router's own ephemeral key)
    when NV holds no anchor. ``persistent``: the key at ``handle``, which must be the anchor's key
    when there is an anchor. Raises ConfigurationError for a key that is not the certified one, not
    a restricted signing key, or not a primary key of the endorsement hierarchy."""
    from ._platform import read_platform_nv

    nv = read_platform_nv(_Esys(esys))
    gce = _gce_certificate_index(nv, prefer_rsa)
    if mode == "persistent":
        assert handle is not None
        aik = _load_persistent(esys, handle, f"the key at persistent handle 0x{handle:08x}")
    elif NV_HCL_REPORT in nv:
        aik = _load_persistent(esys, AZURE_AK_HANDLE, f"the Azure vTPM AK at 0x{AZURE_AK_HANDLE:08x}")
    elif gce is not None:
        aik = _create_from_template(esys, _GCE_TEMPLATE_OF[gce])
    elif mode == "auto":
        return None
    else:
        raise ConfigurationError(
            "--aik-source cloud: this TPM holds no cloud anchor (no HCL report at NV 0x01400001, no GCE AK "
            "certificate at 0x01c10000/0x01c10002)",
            code="cloud_aik_missing",
        )
    try:
        public = _check_attestation_key(aik)
        anchor = check_anchor_key(nv, public, gce)
        _check_qualified_signer(esys, aik.handle, public, aik.origin)
    except BaseException:
        release_cloud_aik(esys, aik)
        raise
    return aik if anchor is None else aik._replace(origin=f"{aik.origin} (named by {anchor})")


class _Esys:
    """What ``read_platform_nv`` reads NV through: an object with the ESAPI context."""

    def __init__(self, esys: Any) -> None:
        self._esys = esys


def _gce_certificate_index(nv: Mapping[int, bytes], prefer_rsa: bool) -> int | None:
    order = (NV_GCE_AK_CERT_RSA, NV_GCE_AK_CERT_ECC)
    order = order if prefer_rsa else order[::-1]
    return next((i for i in order if i in nv), None)


def _load_persistent(esys: Any, handle: int, origin: str) -> CloudAik:
    try:
        loaded = esys.tr_from_tpmpublic(handle)
        public, _, _ = esys.read_public(loaded)
    except Exception as exc:  # TSS2_Exception: no object at that handle
        raise ConfigurationError(
            f"{origin}: the TPM has no key there ({type(exc).__name__})", code="cloud_aik_missing"
        ) from None
    return CloudAik(loaded, public.marshal(), True, origin)


def _create_from_template(esys: Any, index: int) -> CloudAik:
    """go-tpm-tools ``KeyFromNvIndex(rw, HandleEndorsement, index)``: NV read with the owner's
    authorization, the TPMT_PUBLIC decoded, a primary key created from it under the endorsement
    hierarchy (zero padding after the template is allowed, nothing else)."""
    from tpm2_pytss.constants import ESYS_TR
    from tpm2_pytss.types import TPM2B_PUBLIC, TPM2B_SENSITIVE_CREATE, TPMT_PUBLIC

    origin = f"the GCE AK made from the template at NV 0x{index:08x}"
    try:
        data = _read_nv(esys, index)
    except Exception as exc:  # TSS2_Exception: not defined, or not readable by the owner or itself
        raise ConfigurationError(
            f"{origin}: the index cannot be read ({type(exc).__name__})", code="cloud_aik_missing"
        ) from None
    try:
        if len(data) > _MAX_TEMPLATE:
            raise ValueError("too large")
        template, used = TPMT_PUBLIC.unmarshal(data)
        if any(data[used:]):
            raise ValueError("bytes after the template")
    except Exception:
        raise ConfigurationError(
            f"{origin}: its {len(data)} bytes are not a TPMT_PUBLIC", code="cloud_anchor_malformed"
        ) from None
    try:
        created, public, _, _, _ = esys.create_primary(
            TPM2B_SENSITIVE_CREATE(), TPM2B_PUBLIC(publicArea=template), ESYS_TR.ENDORSEMENT
        )
    except Exception as exc:
        raise ConfigurationError(f"{origin}: the TPM refused it ({exc})", code="cloud_aik_unusable") from None
    return CloudAik(created, public.marshal(), False, origin)


def _read_nv(esys: Any, index: int) -> bytes:
    """The whole index, with the owner's authorization (as go-tpm-tools reads it), else its own."""
    from tpm2_pytss.constants import ESYS_TR
    from tpm2_pytss.utils import NVReadEK

    try:
        return bytes(NVReadEK(esys, auth_handle=ESYS_TR.OWNER)(index))
    except Exception:
        return bytes(NVReadEK(esys)(index))


def _check_attestation_key(aik: CloudAik) -> Public:
    try:
        public = parse_public(aik.public)
    except TPMStructureError as exc:
        what = f"{aik.origin}: not a usable key ({exc})"
        raise ConfigurationError(what, code="cloud_aik_unusable") from None
    needed = ObjectAttributes.ATTESTATION_KEY
    if public.object_attributes & needed != needed or public.type not in (ALG.RSA, ALG.ECC):
        have = ", ".join(ObjectAttributes.names(public.object_attributes)) or "none"
        raise ConfigurationError(
            f"{aik.origin} is not a restricted signing key made in its TPM (attributes: {have}): it cannot "
            "sign quotes a verifier accepts",
            code="cloud_aik_unusable",
        )
    return public


def _check_qualified_signer(esys: Any, handle: Any, public: Public, origin: str) -> None:
    """One quote now: its qualifiedSigner must be the key's as a primary of the endorsement hierarchy,
    which is what a verifier computes for an AIK without ``aik_parent_qualified_name``."""
    from tpm2_pytss.constants import TPM2_ALG
    from tpm2_pytss.types import TPM2B_DATA, TPML_PCR_SELECTION, TPMT_SIG_SCHEME

    from ..tpm._attest import parse_attest

    try:
        nothing, scheme = TPML_PCR_SELECTION(), TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL)
        attest, _ = esys.quote(handle, nothing, TPM2B_DATA(b"nomyo-audit aik check"), scheme)
        signer = parse_attest(bytes(attest)).qualified_signer
    except Exception as exc:
        raise ConfigurationError(f"{origin} cannot quote ({exc})", code="cloud_aik_unusable") from None
    if signer != public.qualified_name(HIERARCHIES["endorsement"]):
        raise ConfigurationError(
            f"{origin} is not a primary key of the endorsement hierarchy (its quotes name another "
            "signer): a verifier would reject them (signer_name)",
            code="cloud_aik_unusable",
        )


def release_cloud_aik(esys: Any, aik: CloudAik) -> None:
    """Flush a created AK, close (never flush) a persistent one; errors are ignored (used on failure)."""
    try:
        if aik.persistent:
            esys.tr_close(aik.handle)
        else:
            esys.flush_context(aik.handle)
    except Exception:  # releasing after an error: the first error is the one to report
        pass


def _malformed(index: int, exc: EvidenceError) -> ConfigurationError:
    return ConfigurationError(
        f"NV index 0x{index:08x} does not read ({exc.code}): the router cannot check which key it anchors",
        code="cloud_anchor_malformed",
    )


def _mismatch(what: str) -> ConfigurationError:
    return ConfigurationError(
        f"{what} than this AIK: the router would claim an anchor its quotes cannot have (check "
        "--aik-source; the cloud's AK is 0x81000003 on Azure, the NV template's key on GCE)",
        code="cloud_aik_mismatch",
    )
