"""A TPM in process memory: PCR banks and an AIK that signs real TPMS_ATTEST quotes.

It is what runs where no TPM is reachable, and what builds fixtures for every
tamper case. It proves nothing about hardware, and its evidence says so
(``attester: "software"``): the AIK attributes it claims (fixedTPM...) are
only claims, which is exactly why AIK anchoring is a separate question.
"""

from __future__ import annotations

import hashlib
import time

from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from ..tpm._keys import HASH_ALGORITHMS
from ..tpm._structures import (
    ALG,
    HASH_NAMES,
    HASH_SIZES,
    HIERARCHIES,
    TPM_GENERATED_VALUE,
    TPM_ST_ATTEST_QUOTE,
    ClockInfo,
    EccPoint,
    ObjectAttributes,
    PCRSelection,
    Public,
    Signature,
    TPMSAttest,
)
from ._attester import Quote

__all__ = ["AIK_KINDS", "RESETTABLE_PCRS", "SoftwareTPM"]

#: AIK kinds: (key type, signature scheme)
AIK_KINDS = {
    "rsa2048-rsassa": (ALG.RSA, ALG.RSASSA),
    "rsa2048-rsapss": (ALG.RSA, ALG.RSAPSS),
    "ecc256-ecdsa": (ALG.ECC, ALG.ECDSA),
}
#: PCRs TPM2_PCR_Reset may reset at locality 0 (TCG PC Client Platform TPM Profile, table of PCR attributes)
RESETTABLE_PCRS = (16, 23)
DEFAULT_ATTRIBUTES = ObjectAttributes.ATTESTATION_KEY | ObjectAttributes.USER_WITH_AUTH


class SoftwareTPM:
    """A :class:`QuoteSource` in process memory: 24 PCRs per bank and a fresh AIK of kind ``aik``
    (one of ``AIK_KINDS``), signing with ``hash_alg``. Proves nothing about hardware.

    Raises ValueError for an unknown AIK kind.
    """

    kind = "software"

    def __init__(
        self,
        aik: str = "rsa2048-rsassa",
        *,
        hash_alg: int = ALG.SHA256,
        attributes: int = DEFAULT_ATTRIBUTES,
        banks: tuple[int, ...] = (ALG.SHA1, ALG.SHA256, ALG.SHA384),
    ) -> None:
        if aik not in AIK_KINDS:
            raise ValueError(f"unknown AIK kind {aik!r}: one of {', '.join(AIK_KINDS)}")
        key_type, self.scheme = AIK_KINDS[aik]
        self.hash_alg = hash_alg
        self.banks = banks
        self.pcrs = {bank: [bytes(HASH_SIZES[bank])] * 24 for bank in banks}
        self.reset_count = 0
        self._start = time.monotonic()
        if key_type == ALG.RSA:
            self._key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = rsa.generate_private_key(65537, 2048)
            n = self._key.public_key().public_numbers().n.to_bytes(256, "big")
            self.public = Public(
                ALG.RSA,
                ALG.SHA256,
                attributes,
                b"",
                (ALG.NULL,),
                self.scheme,
                hash_alg,
                rsa_key_bits=2048,
                rsa_exponent=0,
                rsa_modulus=n,
            )
        else:
            self._key = ec.generate_private_key(ec.SECP256R1())
            numbers = self._key.public_key().public_numbers()
            point = EccPoint(numbers.x.to_bytes(32, "big"), numbers.y.to_bytes(32, "big"))
            self.public = Public(
                ALG.ECC,
                ALG.SHA256,
                attributes,
                b"",
                (ALG.NULL,),
                ALG.ECDSA,
                hash_alg,
                curve_id=0x0003,
                kdf=(ALG.NULL,),
                ecc_point=point,
            )
        self.aik_public = self.public.marshal()

    def extend(self, bank: str, index: int, data: bytes) -> None:
        """PCR[index] = H(PCR[index] || H(data)), as TPM2_PCR_Event does for one bank."""
        self.extend_digest(bank, index, hashlib.new(bank, data).digest())

    def extend_digest(self, bank: str, index: int, digest: bytes) -> None:
        """PCR[index] = H(PCR[index] || digest), as TPM2_PCR_Extend does for one bank.

        Raises ValueError for a bank this TPM lacks, a PCR out of range or a digest of the wrong size.
        """
        alg = _bank_alg(bank, self.banks)
        if not 0 <= index < len(self.pcrs[alg]) or len(digest) != HASH_SIZES[alg]:
            raise ValueError(f"cannot extend {bank} PCR {index} with a {len(digest)}-byte digest")
        self.pcrs[alg][index] = hashlib.new(bank, self.pcrs[alg][index] + digest).digest()

    def reset(self, index: int) -> None:
        """TPM2_PCR_Reset at locality 0: only PCRs 16 and 23 (the debug and application PCRs of the
        PC Client profile) may be reset; every bank goes back to zeros. ValueError for another PCR."""
        if index not in RESETTABLE_PCRS:
            raise ValueError(f"PCR {index} cannot be reset at locality 0 (only {RESETTABLE_PCRS})")
        for alg in self.banks:
            self.pcrs[alg][index] = bytes(HASH_SIZES[alg])

    def read(self, selections: tuple[PCRSelection, ...]) -> tuple[bytes, ...]:
        """The values of the selected PCRs, in selection order."""
        return tuple(self.pcrs[s.hash_alg][i] for s in selections for i in s.indices)

    def make_attest(self, selections: tuple[PCRSelection, ...], extra_data: bytes) -> TPMSAttest:
        """The TPMS_ATTEST a quote would sign, unsigned: tests change it and sign it with :meth:`sign`."""
        values = self.read(selections)
        return TPMSAttest(
            magic=TPM_GENERATED_VALUE,
            type=TPM_ST_ATTEST_QUOTE,
            # as a real TPM does for a primary key in the endorsement hierarchy
            qualified_signer=self.public.qualified_name(HIERARCHIES["endorsement"]),
            extra_data=extra_data,
            clock_info=ClockInfo(int((time.monotonic() - self._start) * 1000), self.reset_count, 0, True),
            firmware_version=0,
            pcr_select=selections,
            pcr_digest=hashlib.new(HASH_NAMES[self.hash_alg], b"".join(values)).digest(),
        )

    def sign(self, message: bytes) -> bytes:
        """A TPMT_SIGNATURE over ``message`` with this AIK's scheme: any bytes, for tamper fixtures."""
        algorithm = HASH_ALGORITHMS[self.hash_alg]()
        if isinstance(self._key, rsa.RSAPrivateKey):
            pad: padding.AsymmetricPadding = (
                padding.PKCS1v15()
                if self.scheme == ALG.RSASSA
                else padding.PSS(mgf=padding.MGF1(algorithm), salt_length=padding.PSS.DIGEST_LENGTH)
            )
            return Signature(
                self.scheme, self.hash_alg, rsa=self._key.sign(message, pad, algorithm)
            ).marshal()
        r, s = decode_dss_signature(self._key.sign(message, ec.ECDSA(algorithm)))
        return Signature(ALG.ECDSA, self.hash_alg, r=_minimal(r), s=_minimal(s)).marshal()

    def quote(self, selections: tuple[PCRSelection, ...], extra_data: bytes) -> Quote:
        """Quote ``selections`` with ``extra_data``, signed by this AIK."""
        attest = self.make_attest(selections, extra_data).marshal()
        return Quote(attest, self.sign(attest), self.read(selections))

    def close(self) -> None:
        """Nothing to release."""
        return None


def _bank_alg(bank: str, banks: tuple[int, ...]) -> int:
    alg = next((a for a in banks if HASH_NAMES.get(a) == bank), None)
    if alg is None:
        raise ValueError(f"this TPM has no {bank} bank")
    return alg


def _minimal(value: int) -> bytes:
    """Big-endian without leading zeros, as TPMs often emit r and s."""
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")
