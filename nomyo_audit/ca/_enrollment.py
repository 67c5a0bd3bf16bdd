"""The enrollment protocol's decisions: whom to challenge, and whether the answer proves anything. Pure.

An :class:`Enrollment` starts from a router's endorsement (``GET /pki/endorsement``): the AIK must
be an attestation key (restricted signing, fixedTPM, fixedParent, sensitiveDataOrigin), the EK
certificate must validate to a manufacturer root of the CA's :class:`~nomyo_audit.tpm.TrustStore`
(:func:`~nomyo_audit.tpm.validate_ek_chain`) and certify exactly the EK public area the router
sent (:func:`~nomyo_audit.tpm.ek_matches_public`). Then TPM2_MakeCredential
(:func:`~nomyo_audit.tpm.make_credential`) wraps a fresh random secret to that EK for the AIK's
name: only a TPM holding both the certified EK and an object with exactly that name (key and
attributes) can recover it. :meth:`Enrollment.complete` compares the answer in constant time, once;
a secret seen in an earlier enrollment is a replay. Only then is there an
:class:`~nomyo_audit.ca.ActivationProof`, which the CA needs to issue.

Refusals are :class:`~nomyo_audit.errors.EnrollmentError` (and the certificate layer's
:class:`~nomyo_audit.errors.CertificateError`, the credential's ``CredentialError``); the secret
is never in a message.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .._anchoring_wire import Endorsement, activation_request_json
from ..errors import EnrollmentError
from ..tpm import (
    Credential,
    EkCertificate,
    Public,
    TPMStructureError,
    TrustStore,
    ek_matches_public,
    make_credential,
    parse_public,
    validate_ek_chain,
)
from ..tpm._aik import attestation_key_finding
from ._authority import _PROOF_TOKEN, ActivationProof

__all__ = ["Enrollment", "SpentSecrets"]

_SECRET_BYTES = 32


class SpentSecrets:
    """SHA-256 digests of the secrets of completed enrollments (the newest ``max_entries``): an answer
    that matches one is a replay, told apart from a merely wrong answer. Not thread-safe."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._digests: OrderedDict[bytes, None] = OrderedDict()
        self._max = max_entries

    def add(self, secret: bytes) -> None:
        """Remember ``secret`` (as its digest) as spent."""
        self._digests[hashlib.sha256(secret).digest()] = None
        while len(self._digests) > self._max:
            self._digests.popitem(last=False)

    def __contains__(self, secret: object) -> bool:
        return isinstance(secret, bytes) and hashlib.sha256(secret).digest() in self._digests


@dataclass
class Enrollment:
    """One enrollment in progress: the validated EK, the AIK, the credential sent, the secret
    expected (kept only here). Make it with :meth:`start`; finish it with :meth:`complete`."""

    aik: Public
    ek: EkCertificate
    root_sha256: str
    validated_at: datetime
    credential: Credential
    _secret: bytes = field(repr=False)
    _completed: bool = field(default=False, repr=False)

    @classmethod
    def start(cls, endorsement: Endorsement, store: TrustStore, *, at: datetime) -> Enrollment:
        """Check the endorsement and make the challenge. Raises :class:`EnrollmentError`
        (``aik_malformed``, ``aik_attributes``, ``ek_malformed``, ``no_ek_certificate``, ``ek_mismatch``)
        or the certificate layer's ``CertificateError`` (``cert_unknown_root``, ``cert_expired``...)."""
        aik = _public(endorsement.aik_public, "AIK", "aik_malformed")
        attributes = attestation_key_finding(aik)  # what a verdict's aik_attributes requires
        if attributes.status != "pass":
            raise EnrollmentError(
                f"the AIK is not an attestation key: {attributes.detail}", code="aik_attributes"
            )
        ek_public = _public(endorsement.ek_public, "EK", "ek_malformed")
        if endorsement.ek_certificate is None:
            raise EnrollmentError(
                "the router's TPM has no EK certificate to validate", code="no_ek_certificate"
            )
        validation = validate_ek_chain(endorsement.ek_certificate, endorsement.ek_chain, store, at=at)
        if not ek_matches_public(validation.ek, ek_public):
            raise EnrollmentError(
                "the EK certificate certifies another key than the EK the router presented",
                code="ek_mismatch",
            )
        secret = os.urandom(_SECRET_BYTES)
        credential = make_credential(ek_public, aik.name, secret)
        return cls(aik, validation.ek, validation.root_sha256, at, credential, secret)

    def activation_request(self) -> dict[str, Any]:
        """The body of ``POST /pki/activation`` for this challenge."""
        return activation_request_json(
            self.aik.name, self.credential.id_object, self.credential.encrypted_secret
        )

    def complete(self, secret: bytes, spent: SpentSecrets) -> ActivationProof:
        """Compare the router's answer with the secret (constant time), once. Raises
        :class:`EnrollmentError`: ``activation_replayed`` for a second answer or a secret spent in an
        earlier enrollment, ``activation_wrong_secret`` for any other wrong answer."""
        if self._completed:
            raise EnrollmentError("this enrollment was already answered", code="activation_replayed")
        self._completed = True  # one answer per challenge, right or wrong
        if not hmac.compare_digest(secret, self._secret):
            if secret in spent:
                raise EnrollmentError(
                    "the answer is the secret of an earlier enrollment", code="activation_replayed"
                )
            raise EnrollmentError(
                "the answer is not the challenge's secret: the AIK is not proven to share a TPM with the EK",
                code="activation_wrong_secret",
            )
        spent.add(self._secret)
        return ActivationProof(self.aik, self.ek, self.root_sha256, self.validated_at, _PROOF_TOKEN)

    def facts(self) -> Mapping[str, Any]:
        """What the CA states about this enrollment (no secret): AIK name, EK certificate, TPM."""
        return {
            "aik_name": self.aik.name.hex(),
            "ek_certificate_sha256": self.ek.sha256,
            "manufacturer": self.ek.manufacturer,
            "manufacturer_name": self.ek.manufacturer_name,
            "tpm_model": self.ek.model,
            "tpm_firmware_version": self.ek.version,
            "manufacturer_root_sha256": self.root_sha256,
        }


def _public(data: bytes, what: str, code: str) -> Public:
    try:
        return parse_public(data)
    except TPMStructureError as exc:
        raise EnrollmentError(f"the {what} is not a TPM2B_PUBLIC ({exc.message})", code=code) from None
