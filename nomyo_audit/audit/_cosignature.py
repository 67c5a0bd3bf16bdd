"""C2SP tlog-cosignature v1 (Ed25519, signature type 0x04): witness keys, cosign, verify. Pure.

A witness vouches for a checkpoint by signing ``"cosignature/v1\\n" "time <t>\\n"`` followed
by the checkpoint's note body (c2sp.org/tlog-cosignature). Its signature line is
``— <witness name> base64(key ID || u64 big-endian t || Ed25519 signature)`` with the key ID
``SHA-256(name || "\\n" || 0x04 || public key)[:4]``. A witness is named by its verifier key
(vkey) ``name+hex(key ID)+base64(0x04 || public key)`` (c2sp.org/signed-note).
The name is not signed: one key must never serve two witnesses.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..errors import IntegrityError
from ._note import Checkpoint, NoteError, parse_checkpoint, verify_checkpoint

__all__ = [
    "COSIGNATURE_V1",
    "Cosignature",
    "WitnessKey",
    "add_signature_lines",
    "check_cosigned",
    "check_witness_keys",
    "cosign",
    "cosignature_message",
    "note_body",
    "parse_log_vkey",
    "parse_witness_vkey",
    "verified_cosignatures",
]

#: The signed-note signature type of an Ed25519 cosignature/v1.
COSIGNATURE_V1 = 0x04
_NOTE_ED25519 = 0x01
_DASH = "\u2014"
_MAX_TIMESTAMP = (1 << 63) - 1


@dataclass(frozen=True)
class WitnessKey:
    """A witness's name and Ed25519 cosignature/v1 public key (what a vkey encodes)."""

    name: str
    public: Ed25519PublicKey

    @property
    def key_id(self) -> bytes:
        """``SHA-256(name || "\\n" || 0x04 || public key)[:4]``: the key ID of its signature lines."""
        return _key_id(self.name, COSIGNATURE_V1, _raw(self.public))

    @property
    def vkey(self) -> str:
        """The verifier key ``name+hex(key ID)+base64(0x04 || public key)``."""
        material = base64.b64encode(bytes([COSIGNATURE_V1]) + _raw(self.public)).decode()
        return f"{self.name}+{self.key_id.hex()}+{material}"

    @classmethod
    def of(cls, name: str, private: Ed25519PrivateKey) -> WitnessKey:
        """The witness key of ``private`` under ``name`` (NoteError for a name a note cannot carry)."""
        _check_name(name)
        return cls(name, private.public_key())


@dataclass(frozen=True)
class Cosignature:
    """One verified cosignature: which witness, and the POSIX time it says it signed at."""

    witness: WitnessKey
    timestamp: int
    line: str


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _key_id(name: str, kind: int, material: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([kind]) + material).digest()[:4]


def _check_name(name: str) -> None:
    if not name or len(name) > 200 or any(c.isspace() or c == "+" for c in name):
        raise NoteError("a key name is 1 to 200 characters without spaces or '+'")


def _parse_vkey(text: str, kind: int, what: str) -> tuple[str, Ed25519PublicKey]:
    name, _, rest = text.strip().partition("+")
    hex_id, _, material_b64 = rest.partition("+")
    _check_name(name)
    try:
        key_hash = bytes.fromhex(hex_id)
        material = base64.b64decode(material_b64, validate=True)
    except (ValueError, binascii.Error):
        raise NoteError(f"{what} is name+hex(key ID)+base64(type || key)") from None
    if len(key_hash) != 4 or len(material) != 33:
        raise NoteError(f"{what} is name+hex(key ID)+base64(type || 32-byte Ed25519 key)")
    if material[0] != kind:
        raise NoteError(f"{what} must have signature type 0x{kind:02x}, not 0x{material[0]:02x}")
    if _key_id(name, kind, material[1:]) != key_hash:
        raise NoteError(f"{what}: the key ID does not match the name and key")
    try:
        return name, Ed25519PublicKey.from_public_bytes(material[1:])
    except ValueError:
        raise NoteError(f"{what}: not an Ed25519 public key") from None


def parse_witness_vkey(text: str) -> WitnessKey:
    """A witness's cosignature/v1 vkey ``name+hex(key ID)+base64(0x04 || key)``; NoteError otherwise."""
    name, public = _parse_vkey(text, COSIGNATURE_V1, "a witness key (cosignature/v1 vkey)")
    return WitnessKey(name, public)


def parse_log_vkey(text: str) -> tuple[str, Ed25519PublicKey]:
    """A log's Ed25519 note vkey ``origin+hex(key ID)+base64(0x01 || key)``; NoteError otherwise.

    The key ID checked is the one :func:`._note.key_id` gives, which the log's checkpoints carry.
    """
    return _parse_vkey(text, _NOTE_ED25519, "a log key (Ed25519 note vkey)")


def note_body(note: str) -> str:
    """The signed body of a note (what every signature covers), after checking it is a checkpoint."""
    parse_checkpoint(note)
    return note.partition("\n\n")[0] + "\n"


def cosignature_message(body: str, timestamp: int) -> bytes:
    """``cosignature/v1\\ntime <t>\\n`` followed by the checkpoint body: what a witness signs."""
    if not 0 < timestamp <= _MAX_TIMESTAMP:
        raise NoteError(f"a cosignature timestamp is 1 to 2^63-1, not {timestamp}")
    return f"cosignature/v1\ntime {timestamp}\n{body}".encode()


def cosign(checkpoint: Checkpoint, witness: WitnessKey, private: Ed25519PrivateKey, timestamp: int) -> str:
    """The cosignature line (ending in a newline) of ``witness`` over ``checkpoint`` at ``timestamp``."""
    if private.public_key() != witness.public:
        raise NoteError("the private key is not the witness key's")
    signature = private.sign(cosignature_message(checkpoint.body(), timestamp))
    blob = witness.key_id + timestamp.to_bytes(8, "big") + signature
    return f"{_DASH} {witness.name} {base64.b64encode(blob).decode()}\n"


def verified_cosignatures(note: str, witnesses: list[WitnessKey]) -> tuple[list[Cosignature], list[str]]:
    """The note's cosignatures by ``witnesses`` that verify, and a problem for each that does not.

    Lines by other keys are ignored, as signed-note says; a line that names a known witness
    and key ID but does not verify is a problem (a forged or damaged cosignature), never a pass.
    NoteError when the note is not a checkpoint.
    """
    body = note_body(note)
    by_id = {(w.name, w.key_id): w for w in witnesses}
    found: dict[str, Cosignature] = {}
    problems: list[str] = []
    for line in note.partition("\n\n")[2].rstrip("\n").split("\n"):
        name, blob = _signature_line(line)
        witness = by_id.get((name, blob[:4]))
        if witness is None:
            continue  # every line of a known witness is checked, so a bad one fails wherever it is
        timestamp = int.from_bytes(blob[4:12], "big")
        try:
            if len(blob) != 4 + 8 + 64:
                raise InvalidSignature
            witness.public.verify(blob[12:], cosignature_message(body, timestamp))
        except (InvalidSignature, NoteError):
            problems.append(f"the cosignature of witness {witness.name} does not verify")
            continue
        found.setdefault(witness.vkey, Cosignature(witness, timestamp, line + "\n"))
    return list(found.values()), problems


def _signature_line(line: str) -> tuple[str, bytes]:
    parts = line.split(" ")
    if len(parts) != 3 or parts[0] != _DASH:
        raise NoteError("malformed signature line")
    try:
        return parts[1], base64.b64decode(parts[2], validate=True)
    except (binascii.Error, ValueError):
        raise NoteError("signature is not base64") from None


def add_signature_lines(note: str, lines: str) -> str:
    """``note`` with the signature ``lines`` appended, each line once (NoteError for a malformed line)."""
    existing = note.rstrip("\n").split("\n")
    out = note if note.endswith("\n") else note + "\n"
    for line in lines.splitlines():
        if not line:
            continue
        _signature_line(line)
        if line not in existing:
            out += line + "\n"
            existing.append(line)
    return out


def check_witness_keys(witnesses: list[WitnessKey], log_key: Ed25519PublicKey | None = None) -> None:
    """NoteError unless every witness has its own key, and none is the log's own key.

    A cosignature/v1 signs no witness name, so one key given under two names would count one
    cosignature twice (its line renamed verifies under the other name); and a "cosignature"
    by the log's own key is the log vouching for itself, which no threshold may count.
    """
    seen: dict[bytes, str] = {}
    log_raw = _raw(log_key) if log_key is not None else None
    for witness in witnesses:
        raw = _raw(witness.public)
        if raw == log_raw:
            raise NoteError(f"witness {witness.name} has the log's own key: a log cannot witness itself")
        if raw in seen:
            raise NoteError(
                f"witnesses {seen[raw]} and {witness.name} have the same key: each witness counts once, "
                "so give each key once"
            )
        seen[raw] = witness.name


def check_cosigned(
    note: str, log_key: Ed25519PublicKey, witnesses: list[WitnessKey], threshold: int
) -> tuple[Checkpoint, list[Cosignature]]:
    """The checkpoint, if the log's key signed ``note`` and at least ``threshold`` witnesses cosigned it.

    Raises :class:`nomyo_audit.errors.IntegrityError` naming what is missing: the log's
    signature, or which witnesses did not cosign; a cosignature that names a given witness
    but does not verify fails too. Whether the log's records give this checkpoint's root is
    the caller's check (``AuditLog.verify(checkpoints=[note])``).
    """
    if not 1 <= threshold <= len(witnesses):
        raise IntegrityError(f"a witness threshold is 1 to {len(witnesses)}, not {threshold}")
    try:
        check_witness_keys(witnesses, log_key)
    except ValueError as exc:  # NoteError, or a size too long for int()
        raise IntegrityError(str(exc)) from None
    try:
        checkpoint = verify_checkpoint(note, log_key)
        found, problems = verified_cosignatures(note, witnesses)
    except ValueError as exc:
        raise IntegrityError(f"the cosigned checkpoint does not verify: {exc}") from None
    if problems:
        raise IntegrityError(f"cosigned checkpoint {checkpoint.size}: {'; '.join(problems)}")
    if len(found) < threshold:
        signed = {c.witness.vkey for c in found}
        missing = ", ".join(w.name for w in witnesses if w.vkey not in signed)
        raise IntegrityError(
            f"checkpoint {checkpoint.size} carries {len(found)} valid cosignature(s), fewer than the "
            f"{threshold} required (missing: {missing})"
        )
    return checkpoint, found
