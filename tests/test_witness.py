"""C2SP cosignature/v1 and vkeys: against cosignatures made by transparency-dev's witness, and
checked by a minimal verifier written here from c2sp.org/tlog-cosignature alone."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from nomyo_audit.audit import Checkpoint, NoteError, verifier_key
from nomyo_audit.audit._cosignature import (
    WitnessKey,
    add_signature_lines,
    check_cosigned,
    cosign,
    cosignature_message,
    parse_log_vkey,
    parse_witness_vkey,
    verified_cosignatures,
)
from nomyo_audit.audit._note import sign_checkpoint
from nomyo_audit.errors import IntegrityError

FIXTURES = Path(__file__).parent / "fixtures" / "witness"


# -- a second, minimal implementation written from the specification text only ------------------


def spec_cosignature_timestamp(note: str, vkey: str) -> int:
    """c2sp.org/tlog-cosignature, Ed25519: find the line by name and key ID, verify, return time.

    vkey = name "+" hex(keyID) "+" base64(0x04 || key); keyID = SHA-256(name "\\n" 0x04 key)[:4];
    line = "— " name " " base64(keyID || u64be(timestamp) || sig); sig over
    "cosignature/v1\\ntime " decimal(timestamp) "\\n" || note body (with its final newline).
    """
    name, key_hash, material = vkey.split("+", 2)
    raw = base64.b64decode(material)
    assert raw[0] == 0x04 and len(raw) == 33
    assert hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4].hex() == key_hash
    body, _, signatures = note.partition("\n\n")
    for line in signatures.splitlines():
        dash, line_name, blob_b64 = line.split(" ")
        blob = base64.b64decode(blob_b64)
        if dash == "\u2014" and line_name == name and blob[:4].hex() == key_hash:
            timestamp = int.from_bytes(blob[4:12], "big")
            message = b"cosignature/v1\ntime " + str(timestamp).encode() + b"\n" + body.encode() + b"\n"
            Ed25519PublicKey.from_public_bytes(raw[1:]).verify(blob[12:], message)
            return timestamp
    raise LookupError("no cosignature by this witness")


def as_cosignature_vkey(note_vkey: str) -> str:
    """A published Ed25519 note vkey (type 0x01) as the cosignature/v1 vkey of the same key (0x04)."""
    name, _, material = note_vkey.split("+", 2)
    key = base64.b64decode(material)[1:]
    key_hash = hashlib.sha256(name.encode() + b"\n\x04" + key).digest()[:4].hex()
    material = base64.b64encode(bytes([4]) + key).decode()
    return f"{name}+{key_hash}+{material}"


ARMORED_NOTE = (FIXTURES / "armored-witness-cosigned-checkpoint.txt").read_text(encoding="utf-8")
ARMORED_VKEYS = [as_cosignature_vkey(v) for v in (FIXTURES / "armored-witness-vkeys.txt").read_text().split()]


# -- cosignatures made by code we did not write -------------------------------------------------


def test_armored_witness_cosignatures_verify_with_our_implementation():
    witnesses = [parse_witness_vkey(v) for v in ARMORED_VKEYS]
    found, problems = verified_cosignatures(ARMORED_NOTE, witnesses)
    assert problems == []
    names = sorted(c.witness.name for c in found)
    assert names == ["ArmoredWitness-autumn-wood", "ArmoredWitness-small-breeze"]
    # the timestamps our parser reads are the ones the spec-only verifier reads
    assert {c.witness.vkey: c.timestamp for c in found} == {
        v: spec_cosignature_timestamp(ARMORED_NOTE, v) for v in ARMORED_VKEYS
    }
    assert all(1_700_000_000 < c.timestamp < 1_800_000_000 for c in found)


def test_armored_witness_cosignature_altered_is_a_problem_never_a_pass():
    witnesses = [parse_witness_vkey(v) for v in ARMORED_VKEYS]
    # another root: both cosignatures name a known witness but no longer verify
    root = "2GZ1zmS5VkfUZmn2ZyR4KZXwHLD+xnwBIWzql/cD50w="
    forged = ARMORED_NOTE.replace(root, base64.b64encode(b"\1" * 32).decode())
    found, problems = verified_cosignatures(forged, witnesses)
    assert found == [] and len(problems) == 2
    # another size
    found, problems = verified_cosignatures(ARMORED_NOTE.replace("\n611\n", "\n612\n"), witnesses)
    assert found == [] and len(problems) == 2


def test_the_witness_key_id_uses_type_0x04_not_the_note_type():
    published = (FIXTURES / "armored-witness-vkeys.txt").read_text().split()
    with pytest.raises(NoteError, match="0x04"):
        parse_witness_vkey(published[0])  # the 0x01 note vkey is not a cosignature key
    key = parse_witness_vkey(ARMORED_VKEYS[0])
    assert key.vkey == ARMORED_VKEYS[0]
    line = next(line for line in ARMORED_NOTE.splitlines() if key.name in line)
    assert base64.b64decode(line.split(" ")[2])[:4] == key.key_id


def test_log_vkey_from_the_signed_note_spec_and_transparency_dev():
    name, public = parse_log_vkey((FIXTURES / "c2sp-signed-note-example-vkey.txt").read_text())
    assert name == "example.com/foo"
    assert verifier_key(name, public) == (FIXTURES / "c2sp-signed-note-example-vkey.txt").read_text().strip()
    monkeys = json.loads((FIXTURES / "transparency-dev-witness-monkeys.json").read_text(encoding="utf-8"))
    assert parse_log_vkey(monkeys["log_vkey"])[0] == "monkeys"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "name",
        "name+zz+AQ==",
        "name+00000000+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",  # key ID does not match
        "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2",  # not base64
        "na me+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
    ],
)
def test_bad_vkeys_are_refused_with_a_reason(bad):
    with pytest.raises(NoteError):
        parse_log_vkey(bad)
    with pytest.raises(NoteError):
        parse_witness_vkey(bad)


# -- our cosignatures, checked by the spec-only verifier ------------------------------------------


def test_our_cosignature_verifies_with_the_spec_only_verifier():
    log_key, witness_private = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    extension = ("nomyo-audit.time 2026-01-01T00:00:00Z",)
    checkpoint = Checkpoint("example.com/log", 20852163, b"\7" * 32, extension)
    note = sign_checkpoint(checkpoint, log_key)
    witness = WitnessKey.of("witness.example/w1", witness_private)
    line = cosign(checkpoint, witness, witness_private, 1679315147)
    cosigned = add_signature_lines(note, line)
    assert spec_cosignature_timestamp(cosigned, witness.vkey) == 1679315147
    # the signed message is exactly the spec's example layout
    assert cosignature_message(checkpoint.body(), 1679315147).startswith(
        b"cosignature/v1\ntime 1679315147\nexample.com/log\n20852163\n"
    )
    checked, found = check_cosigned(cosigned, log_key.public_key(), [witness], 1)
    assert checked.size == 20852163 and found[0].timestamp == 1679315147


def test_check_cosigned_threshold_and_failures():
    log_key = Ed25519PrivateKey.generate()
    checkpoint = Checkpoint("example.com/log", 3, b"\1" * 32)
    note = sign_checkpoint(checkpoint, log_key)
    privates = [Ed25519PrivateKey.generate() for _ in range(3)]
    keys = [WitnessKey.of(f"w{i}.example", p) for i, p in enumerate(privates)]
    two = add_signature_lines(note, "".join(cosign(checkpoint, k, p, 1000 + i) for i, (k, p) in
                                            enumerate(zip(keys[:2], privates[:2], strict=True))))
    assert len(check_cosigned(two, log_key.public_key(), keys, 2)[1]) == 2
    with pytest.raises(IntegrityError, match=r"fewer than the 3 required \(missing: w2.example\)"):
        check_cosigned(two, log_key.public_key(), keys, 3)
    with pytest.raises(IntegrityError, match="does not verify"):
        check_cosigned(two, Ed25519PrivateKey.generate().public_key(), keys, 1)
    # a cosignature by a given witness that does not verify fails even when others meet the threshold
    other = Checkpoint("example.com/log", 4, b"\1" * 32)
    bad_line = cosign(other, keys[2], privates[2], 5)
    with pytest.raises(IntegrityError, match=r"witness w2\.example does not verify"):
        check_cosigned(add_signature_lines(two, bad_line), log_key.public_key(), keys, 2)
    with pytest.raises(NoteError):
        cosign(checkpoint, keys[0], privates[1], 5)
    with pytest.raises(NoteError):
        cosignature_message(checkpoint.body(), 0)  # the spec forbids a zero timestamp
