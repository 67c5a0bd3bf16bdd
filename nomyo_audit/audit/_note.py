"""C2SP signed notes and tlog checkpoints (c2sp.org/signed-note, c2sp.org/tlog-checkpoint).

A checkpoint body is three lines: origin, decimal tree size, base64 root hash.
A signed note appends a blank line and one signature line per signer:
``— <key name> <base64(key ID || Ed25519 signature)>``, where the key ID is the
first four bytes of ``SHA-256(key name || "\\n" || 0x01 || public key)``.
Pure functions: keys come in as ``cryptography`` objects.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = [
    "Checkpoint",
    "NoteError",
    "key_id",
    "sign_checkpoint",
    "signed_by",
    "signer_ids",
    "verifier_key",
    "verify_checkpoint",
]

_ED25519 = b"\x01"
_ORIGIN = re.compile(r"^[^\s+]{1,200}$")
_DASH = "\u2014"
#: signed-note text holds no control character (a checkpoint body is lines of printable text)
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")


class NoteError(ValueError):
    """A note or checkpoint is malformed, or its signature does not verify."""


@dataclass(frozen=True)
class Checkpoint:
    """Origin, size and root, plus any C2SP extension lines (signed with the rest of the body)."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def body(self) -> str:
        """The checkpoint text the signatures cover: origin, size, root, extension lines."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode(), *self.extensions]
        return "\n".join(lines) + "\n"

    def extension(self, name: str) -> str | None:
        """The value of the first extension line ``name value``, or None."""
        for line in self.extensions:
            key, _, value = line.partition(" ")
            if key == name:
                return value
        return None


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(name: str, public: Ed25519PublicKey) -> bytes:
    """The 4-byte note key ID: the start of ``SHA-256(name || "\\n" || 0x01 || public key)``."""
    return hashlib.sha256(name.encode() + b"\n" + _ED25519 + _raw(public)).digest()[:4]


def verifier_key(name: str, public: Ed25519PublicKey) -> str:
    """The note verifier key string: ``name+hex(key ID)+base64(0x01 || key)``."""
    return f"{name}+{key_id(name, public).hex()}+{base64.b64encode(_ED25519 + _raw(public)).decode()}"


def sign_checkpoint(checkpoint: Checkpoint, private: Ed25519PrivateKey) -> str:
    """The checkpoint as a signed note, signed under the key name = its origin.

    Raises :class:`NoteError` for an origin with spaces or ``+`` or an extension that is
    not one non-empty line.
    """
    if not _ORIGIN.match(checkpoint.origin):
        raise NoteError("a checkpoint origin is a non-empty string without spaces or '+'")
    if any(not line or "\n" in line for line in checkpoint.extensions):
        raise NoteError("a checkpoint extension is one non-empty line")
    body = checkpoint.body()
    signature = private.sign(body.encode())
    stamp = base64.b64encode(key_id(checkpoint.origin, private.public_key()) + signature).decode()
    return f"{body}\n{_DASH} {checkpoint.origin} {stamp}\n"


def parse_checkpoint(note: str) -> tuple[Checkpoint, list[tuple[str, bytes]]]:
    """Split a signed checkpoint into its checkpoint and its (key name, key ID + signature) lines.

    Checks the form only, no signature; raises :class:`NoteError` when the note is malformed.
    """
    body, sep, signatures = note.partition("\n\n")
    if not sep or not body:
        raise NoteError("not a signed note: no blank line between body and signatures")
    lines = body.split("\n")
    if len(lines) < 3:
        raise NoteError("a checkpoint body has origin, size and root lines")
    origin, size_text, root_text = lines[:3]
    if _CONTROL.search(body):
        raise NoteError("a checkpoint body holds a control character")
    decimal = size_text.isascii() and size_text.isdigit() and len(size_text) <= 20
    if not decimal or (size_text.startswith("0") and size_text != "0") or int(size_text) >= 1 << 64:
        raise NoteError(f"checkpoint size {size_text[:20]!r} is not a decimal uint64")
    try:
        root = base64.b64decode(root_text, validate=True)
    except (binascii.Error, ValueError):
        raise NoteError("checkpoint root is not base64") from None
    if len(root) != 32:
        raise NoteError("checkpoint root is not a SHA-256 hash")
    extensions = tuple(lines[3:])
    if any(not line for line in extensions):
        raise NoteError("a checkpoint extension line is empty")
    parsed = []
    for line in signatures.rstrip("\n").split("\n"):
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != _DASH:
            raise NoteError("malformed signature line")
        try:
            parsed.append((parts[1], base64.b64decode(parts[2], validate=True)))
        except (binascii.Error, ValueError):
            raise NoteError("signature is not base64") from None
    return Checkpoint(origin, int(size_text), root, extensions), parsed


def verify_checkpoint(note: str, public: Ed25519PublicKey) -> Checkpoint:
    """The checkpoint, if ``public`` signed it under its origin; :class:`NoteError` otherwise."""
    checkpoint, signatures = parse_checkpoint(note)
    expected = key_id(checkpoint.origin, public)
    body = note.partition("\n\n")[0] + "\n"
    # Every line in this key's name and ID must verify (signed-note): a bad one beside a good one
    # rejects the note, whichever comes first.
    lines = [blob for name, blob in signatures if name == checkpoint.origin and blob[:4] == expected]
    if not lines:
        raise NoteError(f"checkpoint {checkpoint.size} carries no signature by this key")
    for blob in lines:
        try:
            public.verify(blob[4:], body.encode())
        except InvalidSignature:
            raise NoteError(f"the signature on checkpoint {checkpoint.size} does not verify") from None
    return checkpoint


def signed_by(note: str, public: Ed25519PublicKey) -> bool:
    """Whether the note has a signature line in ``public``'s name and key ID (not yet checked)."""
    checkpoint, signatures = parse_checkpoint(note)
    expected = key_id(checkpoint.origin, public)
    return any(name == checkpoint.origin and blob[:4] == expected for name, blob in signatures)


def signer_ids(note: str) -> list[str]:
    """``name+hex(key ID)`` of every signature line: how a note names keys it does not carry."""
    return [f"{name}+{blob[:4].hex()}" for name, blob in parse_checkpoint(note)[1]]
