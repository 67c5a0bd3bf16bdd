"""The TPM's endorsement key through tpm2-pytss (I/O): its certificate, child AIKs, credential activation.

The TCG EK Credential Profile (2.2.1.4, 2.2.1.5) fixes where a TPM keeps what anchors it: the EK
certificate in NV (RSA 2048 at 0x01c00002, ECC P-256 at 0x01c0000a), intermediates in the EK
certificate chain indices 0x01c00100-0x01c001ff, and the EK's template, from which the EK is
re-created as a primary key in the endorsement hierarchy. The EK is a restricted decryption key
whose authPolicy is PolicySecret(TPM_RH_ENDORSEMENT): using it as a parent (``--aik-parent ek``, as
``tpm2_createak`` does) or for TPM2_ActivateCredential needs a policy session that satisfies it.

Imports tpm2-pytss only inside functions: the package imports without the ``tpm`` extra.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, NamedTuple

from ..errors import ConfigurationError

__all__ = [
    "CHAIN_INDICES",
    "EK_TYPES",
    "Endorsement",
    "activate",
    "create_child",
    "create_ek",
    "policy_session",
]

#: The low-range EK types this module re-creates, with their certificate's NV index, in the order tried
EK_TYPES = (("EK-RSA2048", 0x01C00002), ("EK-ECC256", 0x01C0000A))
#: TCG EK Credential Profile 2.2.1.5: the EK certificate chain (intermediates, DER, one or more each)
CHAIN_INDICES = range(0x01C00100, 0x01C00200)
_MAX_NV = 8192  # no certificate index a TPM ships is larger


class Endorsement(NamedTuple):
    """The EK as the router uses it: the loaded key, its public area and what NV says about it."""

    handle: Any  # ESYS_TR of the loaded EK
    public: bytes  # TPM2B_PUBLIC
    ek_type: str  # e.g. "EK-RSA2048"
    certificate: bytes | None  # DER, from NV; None when the TPM has none for this EK
    chain: tuple[bytes, ...]  # intermediates from the EK certificate chain indices


def create_ek(esys: Any) -> Endorsement:
    """Re-create the EK whose certificate the TPM holds (RSA 2048 first, then ECC P-256), from the
    profile's template (or the template in NV when the manufacturer stored one), as
    ``tpm2_createek`` does. Without any certificate: the RSA 2048 EK, with ``certificate`` None."""
    from tpm2_pytss.constants import ESYS_TR
    from tpm2_pytss.types import TPM2B_SENSITIVE_CREATE
    from tpm2_pytss.utils import create_ek_template

    read = _nv_reader(esys)
    chosen = None
    for ek_type, index in EK_TYPES:
        if _exists(esys, index):
            chosen = ek_type
            break
    ek_type = chosen or EK_TYPES[0][0]
    certificate, template = create_ek_template(ek_type, read)
    handle, public, _, _, _ = esys.create_primary(TPM2B_SENSITIVE_CREATE(), template, ESYS_TR.ENDORSEMENT)
    chain = tuple(read(index) for index in _defined_chain_indices(esys))
    return Endorsement(handle, public.marshal(), ek_type, bytes(certificate) if certificate else None, chain)


@contextmanager
def policy_session(esys: Any) -> Iterator[Any]:
    """A policy session that satisfies the low-range EK's authPolicy, PolicySecret(TPM_RH_ENDORSEMENT)
    (empty endorsement auth, as on every TPM nobody took ownership of), flushed after use."""
    from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_SE
    from tpm2_pytss.types import TPMT_SYM_DEF

    session = esys.start_auth_session(
        ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY, TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL), TPM2_ALG.SHA256
    )
    try:
        esys.policy_secret(ESYS_TR.ENDORSEMENT, session, expiration=0)
        yield session
    finally:
        with suppress(Exception):  # already gone: the command that used it ended it
            esys.flush_context(session)


def create_child(esys: Any, parent: Any, template: Any) -> tuple[Any, bytes]:
    """Create and load a key under the EK (each command under its own EK policy session):
    (handle, TPM2B_PUBLIC). What ``tpm2_createak -C ek`` does."""
    from tpm2_pytss.types import TPM2B_SENSITIVE_CREATE

    with policy_session(esys) as session:
        private, public, _, _, _ = esys.create(parent, TPM2B_SENSITIVE_CREATE(), template, session1=session)
    with policy_session(esys) as session:
        handle = esys.load(parent, private, public, session1=session)
    return handle, public.marshal()


def activate(esys: Any, aik: Any, ek: Any, id_object: bytes, encrypted_secret: bytes) -> bytes:
    """TPM2_ActivateCredential: the AIK (userWithAuth, empty auth) as activateHandle, the EK under its
    policy session as keyHandle. Raises the TSS error when the TPM refuses."""
    from tpm2_pytss.constants import ESYS_TR
    from tpm2_pytss.types import TPM2B_ENCRYPTED_SECRET, TPM2B_ID_OBJECT

    blob, _ = TPM2B_ID_OBJECT.unmarshal(id_object)
    secret, _ = TPM2B_ENCRYPTED_SECRET.unmarshal(encrypted_secret)
    with policy_session(esys) as session:
        digest = esys.activate_credential(aik, ek, blob, secret, session1=ESYS_TR.PASSWORD, session2=session)
    return bytes(digest)


def _nv_reader(esys: Any) -> Callable[[int], bytes]:
    from tpm2_pytss.utils import NVReadEK

    reader = NVReadEK(esys)

    def read(index: int) -> bytes:
        data = bytes(reader(index))
        if len(data) > _MAX_NV:
            raise ConfigurationError(f"NV index 0x{index:08x} holds {len(data)} bytes: not a certificate")
        return data

    return read


def _defined_nv(esys: Any, first: int, count: int) -> list[int]:
    from tpm2_pytss.constants import TPM2_CAP

    found: list[int] = []
    more = True
    while more and len(found) < count:
        start = found[-1] + 1 if found else first
        more, data = esys.get_capability(TPM2_CAP.HANDLES, start, count)
        handles = [int(h) for h in data.data.handles]
        found.extend(h for h in handles if first <= h < first + count)
        if not handles or handles[-1] >= first + count - 1:
            break
    return found


def _exists(esys: Any, index: int) -> bool:
    return index in _defined_nv(esys, index, 1)


def _defined_chain_indices(esys: Any) -> list[int]:
    return _defined_nv(esys, CHAIN_INDICES.start, len(CHAIN_INDICES))
