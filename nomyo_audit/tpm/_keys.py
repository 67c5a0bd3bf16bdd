"""TPM public areas as ``cryptography`` keys, and signature checks with the TPM's schemes."""

from __future__ import annotations

import hashlib
from functools import lru_cache

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ._structures import ALG, ECC_CURVES, Public, Signature, TPMStructureError

__all__ = [
    "HASH_ALGORITHMS",
    "PublicKey",
    "public_key_fingerprint",
    "spki_der",
    "to_crypto_key",
    "verify_signature",
]

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

HASH_ALGORITHMS: dict[int, type[hashes.HashAlgorithm]] = {
    ALG.SHA1: hashes.SHA1,
    ALG.SHA256: hashes.SHA256,
    ALG.SHA384: hashes.SHA384,
    ALG.SHA512: hashes.SHA512,
}
_CURVES: dict[int, type[ec.EllipticCurve]] = {
    0x0003: ec.SECP256R1,
    0x0004: ec.SECP384R1,
    0x0005: ec.SECP521R1,
}


def to_crypto_key(public: Public) -> PublicKey:
    """The key in a TPMT_PUBLIC (exponent 0 means the default 65537)."""
    try:
        if public.type == ALG.RSA:
            exponent = public.rsa_exponent or 65537
            return rsa.RSAPublicNumbers(exponent, int.from_bytes(public.rsa_modulus, "big")).public_key()
        assert public.ecc_point is not None
        size = ECC_CURVES[public.curve_id][1]
        if len(public.ecc_point.x) > size or len(public.ecc_point.y) > size:
            raise ValueError("coordinate longer than the curve")
        numbers = ec.EllipticCurvePublicNumbers(
            int.from_bytes(public.ecc_point.x, "big"),
            int.from_bytes(public.ecc_point.y, "big"),
            _CURVES[public.curve_id](),
        )
        return numbers.public_key()
    except (ValueError, TypeError, OverflowError) as exc:
        raise TPMStructureError(
            f"the AIK is not a valid public key ({exc})", code="aik_key_invalid"
        ) from None


def spki_der(key: PublicKey) -> bytes:
    """The DER SubjectPublicKeyInfo: what a certificate's key and a TPM public area are compared by."""
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_key_fingerprint(key: PublicKey) -> str:
    """SHA-256 of the DER SubjectPublicKeyInfo, hex: how policies pin an AIK."""
    return hashlib.sha256(spki_der(key)).hexdigest()


def verify_signature(key: PublicKey, signature: Signature, message: bytes) -> bool:
    """Check ``signature`` over ``message`` with the scheme and hash it names.

    RSAPSS accepts any salt length (TPMs differ: digest-sized or maximal);
    ECDSA r and s are integers of any encoded length, leading zeros included.
    """
    try:
        if signature.sig_alg == ALG.ECDSA:
            if not isinstance(key, ec.EllipticCurvePublicKey):
                return False
            der = encode_dss_signature(int.from_bytes(signature.r, "big"), int.from_bytes(signature.s, "big"))
            key.verify(der, message, _ecdsa(signature.hash_alg))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature.rsa, message, *_rsa_scheme(signature.sig_alg, signature.hash_alg))
        else:
            return False
    except InvalidSignature:
        return False
    return True


@lru_cache(maxsize=16)
def _ecdsa(hash_alg: int) -> ec.ECDSA:
    return ec.ECDSA(HASH_ALGORITHMS[hash_alg]())


@lru_cache(maxsize=16)
def _rsa_scheme(sig_alg: int, hash_alg: int) -> tuple[padding.AsymmetricPadding, hashes.HashAlgorithm]:
    """The padding and hash objects for a scheme: immutable, so made once."""
    algorithm = HASH_ALGORITHMS[hash_alg]()
    if sig_alg == ALG.RSASSA:
        return padding.PKCS1v15(), algorithm
    return padding.PSS(mgf=padding.MGF1(algorithm), salt_length=padding.PSS.AUTO), algorithm
