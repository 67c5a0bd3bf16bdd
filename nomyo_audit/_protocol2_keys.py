"""Protocol 2 keys: the suites, the router's published key configuration, and its private side. Pure.

docs/protocol-v2.md ("Key configuration") is the byte-level spec. What is here:

* :class:`SuiteId`: an HPKE suite as its three RFC 9180 identifiers. Two are offered: X-Wing
  (ML-KEM-768 + X25519, KEM 0x647A) and DHKEM(X25519) as the classical suite, both with
  HKDF-SHA256 and AES-256-GCM.
* :class:`KeyConfig`: what a router publishes. ``from_json`` is strict (every field, every size)
  and ``digest`` is SHA-256 of its RFC 8785 form, which attest-before-send quotes.
* :class:`RouterKeys`: the private keys behind a config, made from one 32-byte seed per KEM, so
  a key can be kept as 32 bytes and the spec's vectors can fix it.

X-Wing's public key on the wire is the ML-KEM-768 encapsulation key (1184 bytes) followed by the
X25519 public key (32 bytes), as draft-connolly-cfrg-xwing-kem and draft-ietf-hpke-pq define it;
its 32-byte private seed expands with SHAKE-256 into the ML-KEM seed d || z (64 bytes) and the
X25519 private key (32 bytes), as the draft's ``expandDecapsulationKey`` does. cryptography's
``MLKEM768X25519PublicKey`` has no serialisation of its own, so this module builds it from its two
halves and writes the halves in that order.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from ._canonical import canonical_json
from .errors import ProtocolError

__all__ = [
    "DHKEM_X25519",
    "KEM_X25519",
    "KEM_XWING",
    "XWING",
    "KeyConfig",
    "PrivateKey",
    "RouterKeys",
    "SuiteId",
    "mlkem_available",
]

#: RFC 9180 KEM id of DHKEM(X25519, HKDF-SHA256).
KEM_X25519 = 0x0020
#: KEM id of X-Wing (ML-KEM-768 + X25519; draft-connolly-cfrg-xwing-kem; "MLKEM768-X25519" in
#: draft-ietf-hpke-pq).
KEM_XWING = 0x647A
KDF_HKDF_SHA256 = 0x0001
AEAD_AES_256_GCM = 0x0002
#: The configuration ``version`` this module writes and the only one it reads.
CONFIG_VERSION = 2
#: A key id: 1-64 characters of base64url's alphabet (this module makes 16 hex digits).
_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: At most this many suites in a configuration (two are defined; room to add without abuse).
MAX_SUITES = 8
#: Largest accepted ``not_before``/``not_after`` (seconds since the epoch): fits an int64.
MAX_TIME = 2**63 - 1
_X25519_BYTES = 32
_MLKEM768_PUBLIC_BYTES = 1184
_SEED_BYTES = 32


class SuiteId(NamedTuple):
    """An HPKE suite: RFC 9180's KEM, KDF and AEAD identifiers."""

    kem_id: int
    kdf_id: int
    aead_id: int

    def to_json(self) -> dict[str, int]:
        return {"kem_id": self.kem_id, "kdf_id": self.kdf_id, "aead_id": self.aead_id}

    @property
    def enc_length(self) -> int:
        """Bytes of the KEM's encapsulation (``enc``): 1120 for X-Wing, 32 for DHKEM(X25519)."""
        return _ENC_LENGTH[self.kem_id]

    @property
    def name(self) -> str:
        return _NAMES.get(self, f"suite {self.kem_id:#06x}/{self.kdf_id:#06x}/{self.aead_id:#06x}")

    def hpke(self) -> hpke.Suite:
        """cryptography's HPKE suite for this id (only the two supported ones)."""
        return _HPKE_SUITES[self]


XWING = SuiteId(KEM_XWING, KDF_HKDF_SHA256, AEAD_AES_256_GCM)
DHKEM_X25519 = SuiteId(KEM_X25519, KDF_HKDF_SHA256, AEAD_AES_256_GCM)
_ENC_LENGTH = {KEM_XWING: 1120, KEM_X25519: 32}
_PUBLIC_LENGTH = {KEM_XWING: _MLKEM768_PUBLIC_BYTES + _X25519_BYTES, KEM_X25519: _X25519_BYTES}
_NAMES = {XWING: "X-Wing/HKDF-SHA256/AES-256-GCM", DHKEM_X25519: "DHKEM(X25519)/HKDF-SHA256/AES-256-GCM"}
_HPKE_SUITES = {
    XWING: hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM),
    DHKEM_X25519: hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM),
}
#: The suites this module can use, best first.
SUPPORTED_SUITES = (XWING, DHKEM_X25519)

#: A private key as this module holds it: X25519, or X-Wing's two halves.
PrivateKey = x25519.X25519PrivateKey | tuple[mlkem.MLKEM768PrivateKey, x25519.X25519PrivateKey]
PublicKey = x25519.X25519PublicKey | hpke.MLKEM768X25519PublicKey
HpkePrivateKey = x25519.X25519PrivateKey | hpke.MLKEM768X25519PrivateKey


@functools.cache
def mlkem_available() -> bool:
    """Whether cryptography's OpenSSL backend has ML-KEM (and so X-Wing); probed once."""
    try:
        mlkem.MLKEM768PrivateKey.generate()
    except UnsupportedAlgorithm:
        return False
    return True


def usable_suites() -> tuple[SuiteId, ...]:
    """The suites this process can seal to and open, best first."""
    return SUPPORTED_SUITES if mlkem_available() else (DHKEM_X25519,)


@dataclass(frozen=True)
class KeyConfig:
    """A router's protocol 2 key configuration: what it publishes at ``/pki/v2/key_config``.

    ``suites`` is in the router's order of preference; ``public_keys`` holds one public key per KEM
    id the suites use. ``not_before``/``not_after`` are seconds since the epoch (``not_after``
    excluded).
    """

    key_id: str
    suites: tuple[SuiteId, ...]
    public_keys: Mapping[int, bytes]
    not_before: int
    not_after: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "public_keys", dict(sorted(self.public_keys.items())))

    def __hash__(self) -> int:
        return hash(self.digest())

    def to_json(self) -> dict[str, Any]:
        """The JSON object on the wire (public keys in standard base64, keyed by decimal KEM id)."""
        return {
            "version": CONFIG_VERSION,
            "key_id": self.key_id,
            "suites": [suite.to_json() for suite in self.suites],
            "public_keys": {
                str(kem): base64.b64encode(key).decode() for kem, key in self.public_keys.items()
            },
            "not_before": self.not_before,
            "not_after": self.not_after,
        }

    @classmethod
    def from_json(cls, obj: Any) -> KeyConfig:
        """Read a configuration, refusing anything but exactly the documented shape.

        Raises :class:`ProtocolError` with code ``v2_bad_key_config`` naming the field.
        """
        return _parse_config(obj)

    def digest(self) -> bytes:
        """SHA-256 of the RFC 8785 (JCS) bytes of :meth:`to_json`: what attest-before-send quotes."""
        return hashlib.sha256(canonical_json(self.to_json())).digest()

    def valid_at(self, now: float) -> bool:
        """Whether ``now`` (seconds since the epoch) is within ``[not_before, not_after)``."""
        return self.not_before <= now < self.not_after

    def public_key(self, kem_id: int) -> PublicKey:
        """cryptography's public key object for ``kem_id`` (cached by its bytes)."""
        return _load_public(kem_id, self.public_keys[kem_id])


@dataclass(frozen=True)
class RouterKeys:
    """The router's private side of one :class:`KeyConfig`: one private key per KEM id."""

    config: KeyConfig
    _private: Mapping[int, PrivateKey] = field(repr=False)
    _hpke: Mapping[int, HpkePrivateKey] = field(repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        built = {kem: _hpke_private(key) for kem, key in self._private.items()}
        object.__setattr__(self, "_hpke", built)

    @classmethod
    def generate(
        cls, validity_seconds: int, *, now: int, suites: tuple[SuiteId, ...] | None = None
    ) -> RouterKeys:
        """Fresh keys valid from ``now`` for ``validity_seconds``; X-Wing first when ML-KEM is here."""
        chosen = usable_suites() if suites is None else suites
        seeds = {suite.kem_id: os.urandom(_SEED_BYTES) for suite in chosen}
        return cls.from_seeds(
            seeds, not_before=int(now), not_after=int(now) + int(validity_seconds), suites=chosen
        )

    @classmethod
    def from_seeds(
        cls,
        seeds: Mapping[int, bytes],
        *,
        not_before: int,
        not_after: int,
        suites: tuple[SuiteId, ...] | None = None,
    ) -> RouterKeys:
        """Keys from one 32-byte seed per KEM id (X-Wing: the draft's seed; X25519: the private key).

        The key id is the first 8 bytes of SHA-256 over the public keys, in hex (docs/protocol-v2.md).
        Raises :class:`ProtocolError` ``v2_bad_key_config`` for a wrong seed or window.
        """
        if suites is None:
            suites = tuple(suite for suite in SUPPORTED_SUITES if suite.kem_id in seeds)
        private: dict[int, PrivateKey] = {}
        public: dict[int, bytes] = {}
        for kem_id, seed in sorted(seeds.items()):
            if kem_id not in _PUBLIC_LENGTH or len(seed) != _SEED_BYTES:
                raise _bad_config(f"a seed for KEM {kem_id:#06x} must be {_SEED_BYTES} bytes of a known KEM")
            private[kem_id], public[kem_id] = _derive(kem_id, seed)
        config = KeyConfig(
            key_id=key_id_for(public),
            suites=tuple(suites),
            public_keys=public,
            not_before=not_before,
            not_after=not_after,
        )
        return cls(_parse_config(config.to_json()), private)

    def private_key(self, kem_id: int) -> PrivateKey:
        """The private key for ``kem_id``; ``ProtocolError`` ``v2_unknown_suite`` when there is none."""
        try:
            return self._private[kem_id]
        except KeyError:
            raise ProtocolError("no key for this KEM", code="v2_unknown_suite") from None

    def hpke_private_key(self, kem_id: int) -> HpkePrivateKey:
        """The private key as cryptography's HPKE takes it (built once)."""
        self.private_key(kem_id)
        return self._hpke[kem_id]


def key_id_for(public_keys: Mapping[int, bytes]) -> str:
    """16 hex digits: SHA-256 over ``u16(kem_id) || u16(len) || key`` for each KEM in ascending order."""
    digest = hashlib.sha256()
    for kem_id, key in sorted(public_keys.items()):
        digest.update(kem_id.to_bytes(2, "big") + len(key).to_bytes(2, "big") + key)
    return digest.hexdigest()[:16]


def _derive(kem_id: int, seed: bytes) -> tuple[PrivateKey, bytes]:
    if kem_id == KEM_X25519:
        key = x25519.X25519PrivateKey.from_private_bytes(seed)
        return key, key.public_key().public_bytes_raw()
    expanded = hashlib.shake_256(seed).digest(96)  # X-Wing: d || z (ML-KEM seed), then the X25519 key
    try:
        ml = mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:64])
    except UnsupportedAlgorithm:
        raise _bad_config("X-Wing needs ML-KEM, which this OpenSSL lacks") from None
    x = x25519.X25519PrivateKey.from_private_bytes(expanded[64:])
    return (ml, x), ml.public_key().public_bytes_raw() + x.public_key().public_bytes_raw()


def _hpke_private(key: PrivateKey) -> HpkePrivateKey:
    return hpke.MLKEM768X25519PrivateKey(key[0], key[1]) if isinstance(key, tuple) else key


@functools.lru_cache(maxsize=32)
def _load_public(kem_id: int, data: bytes) -> PublicKey:
    """Raises ValueError for bytes that are not a key (ML-KEM's modulus check), UnsupportedAlgorithm
    without ML-KEM."""
    if kem_id == KEM_X25519:
        return x25519.X25519PublicKey.from_public_bytes(data)
    ml = mlkem.MLKEM768PublicKey.from_public_bytes(data[:_MLKEM768_PUBLIC_BYTES])
    return hpke.MLKEM768X25519PublicKey(
        ml, x25519.X25519PublicKey.from_public_bytes(data[_MLKEM768_PUBLIC_BYTES:])
    )


def _bad_config(message: str) -> ProtocolError:
    return ProtocolError(f"key configuration: {message}", code="v2_bad_key_config")


_CONFIG_FIELDS = {"version", "key_id", "suites", "public_keys", "not_before", "not_after"}
_SUITE_FIELDS = {"kem_id", "kdf_id", "aead_id"}


def _parse_config(obj: Any) -> KeyConfig:
    if not isinstance(obj, dict):
        raise _bad_config("must be a JSON object")
    if set(obj) != _CONFIG_FIELDS:
        raise _bad_config(f"fields must be exactly {', '.join(sorted(_CONFIG_FIELDS))}")
    if type(obj["version"]) is not int or obj["version"] != CONFIG_VERSION:
        raise _bad_config(f"version must be the integer {CONFIG_VERSION}")
    key_id = obj["key_id"]
    if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
        raise _bad_config("key_id must be 1-64 characters of A-Z a-z 0-9 _ -")
    suites = _parse_suites(obj["suites"])
    public_keys = _parse_public_keys(obj["public_keys"])
    if {suite.kem_id for suite in suites} != set(public_keys):
        raise _bad_config("public_keys must hold exactly one key per KEM the suites use")
    not_before, not_after = obj["not_before"], obj["not_after"]
    for name, value in (("not_before", not_before), ("not_after", not_after)):
        if type(value) is not int or not 0 <= value <= MAX_TIME:
            raise _bad_config(f"{name} must be an integer from 0 to 2^63-1")
    if not_after <= not_before:
        raise _bad_config("not_after must be later than not_before")
    return KeyConfig(key_id, suites, public_keys, not_before, not_after)


def _parse_suites(value: Any) -> tuple[SuiteId, ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_SUITES:
        raise _bad_config(f"suites must be a list of 1-{MAX_SUITES} suites")
    suites = tuple(parse_suite(item, _bad_config) for item in value)
    if len(set(suites)) != len(suites):
        raise _bad_config("suites must not repeat")
    return suites


def parse_suite(value: Any, error: Any) -> SuiteId:
    """A ``{"kem_id", "kdf_id", "aead_id"}`` object of integers in 0-65535 (any suite: the caller
    decides whether it is offered). ``error(message)`` makes the exception raised."""
    if not isinstance(value, dict) or set(value) != _SUITE_FIELDS:
        raise error("a suite must be an object of exactly kem_id, kdf_id, aead_id")
    ids = [value["kem_id"], value["kdf_id"], value["aead_id"]]
    if any(type(item) is not int or not 0 <= item <= 0xFFFF for item in ids):
        raise error("suite ids must be integers from 0 to 65535")
    return SuiteId(*ids)


def _parse_public_keys(value: Any) -> dict[int, bytes]:
    if not isinstance(value, dict) or not 1 <= len(value) <= MAX_SUITES:
        raise _bad_config(f"public_keys must be an object of 1-{MAX_SUITES} keys")
    keys: dict[int, bytes] = {}
    for name, encoded in value.items():
        # at most 5 digits (a u16) before int(): Python refuses over 4300 digits with a ValueError
        decimal = isinstance(name, str) and name.isascii() and name.isdigit() and len(name) <= 5
        kem_id = int(name) if decimal and str(int(name)) == name else None
        if kem_id not in _PUBLIC_LENGTH:
            raise _bad_config("public_keys must be keyed by the decimal id of a supported KEM")
        assert kem_id is not None
        size = _PUBLIC_LENGTH[kem_id]
        if not isinstance(encoded, str) or len(encoded) != 4 * ((size + 2) // 3):
            raise _bad_config(f"the key of KEM {kem_id:#06x} must be {size} bytes in padded base64")
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise _bad_config(f"the key of KEM {kem_id:#06x} is not valid base64") from None
        if len(key) != size:
            raise _bad_config(f"the key of KEM {kem_id:#06x} must be {size} bytes")
        if kem_id == KEM_XWING and mlkem_available():
            try:
                _load_public(kem_id, key)
            except ValueError:
                raise _bad_config(
                    "the X-Wing key's ML-KEM-768 half is not a valid encapsulation key"
                ) from None
        keys[kem_id] = key
    return keys
