"""The TPM's key derivation functions, KDFa and KDFe (TPM 2.0 Part 1, 11.4.10). Pure, no I/O.

Both take the label without its terminating zero and add it, as the reference implementation
does for labels such as "STORAGE", "INTEGRITY" and "IDENTITY".
"""

from __future__ import annotations

import hashlib
import hmac

from ._marshal import HASH_NAMES, u32

__all__ = ["kdfa", "kdfe"]


def kdfa(hash_alg: int, key: bytes, label: bytes, context_u: bytes, context_v: bytes, bits: int) -> bytes:
    """KDFa: SP 800-108 counter mode with HMAC-H: HMAC(key, i || label || 0 || contextU || contextV || bits).

    The result is ``bits`` long; a length that is not whole bytes keeps the low bits of the first byte.
    """
    name = HASH_NAMES[hash_alg]
    size = (bits + 7) // 8
    tail = label + b"\x00" + context_u + context_v + u32(bits)
    out = b"".join(
        hmac.new(key, u32(counter) + tail, name).digest()
        for counter in range(1, -(-size // hashlib.new(name).digest_size) + 1)
    )[:size]
    return _mask(out, bits)


def kdfe(hash_alg: int, z: bytes, label: bytes, party_u: bytes, party_v: bytes, bits: int) -> bytes:
    """KDFe: SP 800-56A concatenation KDF with H: H(i || Z || label || 0 || partyUInfo || partyVInfo)."""
    name = HASH_NAMES[hash_alg]
    size = (bits + 7) // 8
    tail = label + b"\x00" + party_u + party_v
    out = b"".join(
        hashlib.new(name, u32(counter) + z + tail).digest()
        for counter in range(1, -(-size // hashlib.new(name).digest_size) + 1)
    )[:size]
    return _mask(out, bits)


def _mask(out: bytes, bits: int) -> bytes:
    if bits % 8:
        return bytes([out[0] & (0xFF >> (8 - bits % 8))]) + out[1:]
    return out
