"""The TPM's endorsement key through tpm2-pytss (I/O): its certificate, child AIKs, credential activation.

The TCG EK Credential Profile (2.2.1.4, 2.2.1.5) fixes where a TPM keeps what anchors it: the EK
certificate in NV (low range: RSA 2048 at 0x01c00002, ECC P-256 at 0x01c0000a; high range, profile
2.x templates H-1..H-n: RSA 2048 at 0x01c00012, ECC P-256 at 0x01c00014, ECC P-384 at 0x01c00016,
RSA 3072 at 0x01c0001c), intermediates in the EK certificate chain indices 0x01c00100-0x01c001ff, and
the EK's template, from which the EK is re-created as a primary key in the endorsement hierarchy.
The EK is a restricted decryption key whose authPolicy is PolicySecret(TPM_RH_ENDORSEMENT) (low
range) or PolicyOR over that and PolicyAuthorizeNV (high range, :mod:`._ek_policy`): using it as a
parent (``--aik-parent ek``, as ``tpm2_createak`` does) or for TPM2_ActivateCredential needs a
policy session that satisfies it, in the EK's nameAlg.

Imports tpm2-pytss only inside functions: the package imports without the ``tpm`` extra.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, NamedTuple

from ..errors import ConfigurationError
from ..tpm._public import parse_public
from ._ek_policy import ek_policy_branches

__all__ = [
    "CHAIN_INDICES",
    "EK_CHOICES",
    "EK_TYPES",
    "Endorsement",
    "activate",
    "check_ek_choice",
    "create_child",
    "create_ek",
    "policy_session",
]

#: The low-range EK types, with their certificate's NV index, in the order ``auto`` tries them
LOW_RANGE = (("EK-RSA2048", 0x01C00002), ("EK-ECC256", 0x01C0000A))
#: The high-range EK types (tpm2-pytss template names), tried after the low range
HIGH_RANGE = (
    ("EK-HIGH-RSA2048", 0x01C00012),
    ("EK-HIGH-ECC256", 0x01C00014),
    ("EK-HIGH-ECC384", 0x01C00016),
    ("EK-HIGH-RSA3072", 0x01C0001C),
)
EK_TYPES = LOW_RANGE + HIGH_RANGE
#: ``--ek`` values: the EK type each names; ``auto`` is the first type in EK_TYPES with a certificate
EK_CHOICES: dict[str, str | None] = {
    "auto": None,
    "rsa": "EK-RSA2048",
    "ecc": "EK-ECC256",
    "rsa-high": "EK-HIGH-RSA2048",
    "ecc-high": "EK-HIGH-ECC256",
    "p384": "EK-HIGH-ECC384",
    "rsa3072": "EK-HIGH-RSA3072",
}
#: TCG EK Credential Profile 2.2.1.5: the EK certificate chain (intermediates, DER, one or more each)
CHAIN_INDICES = range(0x01C00100, 0x01C00200)
#: The EK profile's certificate, nonce and template indices, low and high range (2.2.1.4, 2.2.1.5)
PROFILE_INDICES = range(0x01C00002, 0x01C00020)
_MAX_NV = 8192  # no certificate index a TPM ships is larger


class Endorsement(NamedTuple):
    """The EK as the router uses it: the loaded key, its public area and what NV says about it."""

    handle: Any  # ESYS_TR of the loaded EK
    public: bytes  # TPM2B_PUBLIC
    ek_type: str  # e.g. "EK-RSA2048"
    certificate: bytes | None  # DER, from NV; None when the TPM has none for this EK
    chain: tuple[bytes, ...]  # intermediates from the EK certificate chain indices
    name_alg: int = 0x000B  # the EK's nameAlg: its policy session's hash
    policy_or: tuple[bytes, ...] = ()  # the PolicyOR branches after PolicySecret (high range); () low range


def create_ek(esys: Any, choice: str = "auto") -> Endorsement:
    """Re-create the EK ``choice`` names (an :data:`EK_CHOICES` key) from the profile's template (or
    the template in NV when the manufacturer stored one), as ``tpm2_createek`` does. ``auto``: the
    first EK type in :data:`EK_TYPES` whose certificate the TPM holds (low range first, so a TPM with
    an RSA 2048 certificate keeps that EK); without any certificate, the RSA 2048 EK with
    ``certificate`` None. Raises ConfigurationError for an unknown choice, or a high-range EK without
    its certificate (its template is only defined alongside one)."""
    from tpm2_pytss.constants import ESYS_TR
    from tpm2_pytss.types import TPM2B_SENSITIVE_CREATE
    from tpm2_pytss.utils import create_ek_template

    check_ek_choice(choice)
    defined = frozenset(_defined_nv(esys, PROFILE_INDICES.start, len(PROFILE_INDICES)))
    read = _nv_reader(esys, defined)
    ek_type = EK_CHOICES[choice] or _first_certified(defined) or LOW_RANGE[0][0]
    try:
        certificate, template = create_ek_template(ek_type, read)
    except ValueError:
        index = dict(EK_TYPES)[ek_type]
        raise ConfigurationError(
            f"--ek {choice}: this TPM has no {ek_type} certificate at NV index 0x{index:08x}"
        ) from None
    handle, public, _, _, _ = esys.create_primary(TPM2B_SENSITIVE_CREATE(), template, ESYS_TR.ENDORSEMENT)
    chain = tuple(read(index) for index in _defined_chain_indices(esys))
    name_alg = parse_public(public.marshal()).name_alg
    branches = ek_policy_branches(name_alg) if ek_type in dict(HIGH_RANGE) else ()
    return Endorsement(
        handle,
        public.marshal(),
        ek_type,
        bytes(certificate) if certificate else None,
        chain,
        name_alg,
        branches,
    )


def check_ek_choice(choice: str) -> None:
    """Raise ConfigurationError unless ``choice`` is an :data:`EK_CHOICES` key."""
    if choice not in EK_CHOICES:
        raise ConfigurationError(f"--ek {choice}: one of {', '.join(EK_CHOICES)}")


def _first_certified(defined: frozenset[int]) -> str | None:
    return next((ek_type for ek_type, index in EK_TYPES if index in defined), None)


@contextmanager
def policy_session(esys: Any, ek: Endorsement) -> Iterator[Any]:
    """A policy session that satisfies the EK's authPolicy, flushed after use: in the EK's nameAlg,
    PolicySecret(TPM_RH_ENDORSEMENT) (empty endorsement auth, as on every TPM nobody took ownership
    of), then for a high-range EK PolicyOR over the profile's branches."""
    from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_SE
    from tpm2_pytss.types import TPML_DIGEST, TPMT_SYM_DEF

    session = esys.start_auth_session(
        ESYS_TR.NONE,
        ESYS_TR.NONE,
        TPM2_SE.POLICY,
        TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL),
        TPM2_ALG(ek.name_alg),
    )
    try:
        esys.policy_secret(ESYS_TR.ENDORSEMENT, session, expiration=0)
        if ek.policy_or:
            esys.policy_or(session, TPML_DIGEST(list(ek.policy_or)))
        yield session
    finally:
        with suppress(Exception):  # already gone: the command that used it ended it
            esys.flush_context(session)


def create_child(esys: Any, parent: Endorsement, template: Any) -> tuple[Any, bytes]:
    """Create and load a key under the EK (each command under its own EK policy session):
    (handle, TPM2B_PUBLIC). What ``tpm2_createak -C ek`` does."""
    from tpm2_pytss.types import TPM2B_SENSITIVE_CREATE

    with policy_session(esys, parent) as session:
        private, public, _, _, _ = esys.create(
            parent.handle, TPM2B_SENSITIVE_CREATE(), template, session1=session
        )
    with policy_session(esys, parent) as session:
        handle = esys.load(parent.handle, private, public, session1=session)
    return handle, public.marshal()


def activate(esys: Any, aik: Any, ek: Endorsement, id_object: bytes, encrypted_secret: bytes) -> bytes:
    """TPM2_ActivateCredential: the AIK (userWithAuth, empty auth) as activateHandle, the EK under its
    policy session as keyHandle. Raises the TSS error when the TPM refuses."""
    from tpm2_pytss.constants import ESYS_TR
    from tpm2_pytss.types import TPM2B_ENCRYPTED_SECRET, TPM2B_ID_OBJECT

    blob, _ = TPM2B_ID_OBJECT.unmarshal(id_object)
    secret, _ = TPM2B_ENCRYPTED_SECRET.unmarshal(encrypted_secret)
    with policy_session(esys, ek) as session:
        digest = esys.activate_credential(
            aik, ek.handle, blob, secret, session1=ESYS_TR.PASSWORD, session2=session
        )
    return bytes(digest)


def _nv_reader(esys: Any, defined: frozenset[int]) -> Callable[[int], bytes]:
    """tpm2-pytss's EK NV reader, told first which profile indices exist: the template and nonce
    indices are optional, and asking the TPM for an undefined one makes tss2 print error lines."""
    from tpm2_pytss.utils import NoSuchIndex, NVReadEK

    reader = NVReadEK(esys)

    def read(index: int) -> bytes:
        if index in PROFILE_INDICES and index not in defined:
            raise NoSuchIndex(index)
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


def _defined_chain_indices(esys: Any) -> list[int]:
    return _defined_nv(esys, CHAIN_INDICES.start, len(CHAIN_INDICES))
