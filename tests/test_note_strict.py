"""Signed checkpoints read strictly (c2sp.org/tlog-checkpoint, c2sp.org/signed-note): a size is a
decimal uint64 (thousands of digits are a NoteError, never a plain ValueError from int()), the body
holds no control characters, and every signature line in the key's name and ID must verify (a bad
one beside a good one rejects the note, whichever comes first)."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nomyo_audit.audit._note import (
    Checkpoint,
    NoteError,
    parse_checkpoint,
    sign_checkpoint,
    verify_checkpoint,
)

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
ROOT = base64.b64encode(bytes(32)).decode()


@pytest.mark.parametrize("size", ["9" * 5000, str(2**64), "1" + "0" * 20])
def test_a_size_beyond_uint64_is_a_note_error(size):
    with pytest.raises(NoteError):
        parse_checkpoint(f"example.com/log\n{size}\n{ROOT}\n\n\u2014 example.com/log AAAAAAAA\n")


def test_the_largest_uint64_size_reads():
    note = f"example.com/log\n{2**64 - 1}\n{ROOT}\n\n\u2014 example.com/log AAAAAAAA\n"
    checkpoint, _ = parse_checkpoint(note)
    assert checkpoint.size == 2**64 - 1


@pytest.mark.parametrize("bad", ["\r", "\x00", "\x1b", "\t"])
def test_a_control_character_in_the_body_is_a_note_error(bad):
    with pytest.raises(NoteError):
        parse_checkpoint(f"example.com/log\n5\n{ROOT}\next{bad}ra\n\n\u2014 example.com/log AAAAAAAA\n")


def test_a_bad_signature_line_beside_a_good_one_rejects_the_note_in_either_order():
    note = sign_checkpoint(Checkpoint("example.com/log", 5, bytes(32)), KEY)
    good = note.rstrip("\n").split("\n")[-1]
    name, blob = good.split(" ")[1:]
    raw = bytearray(base64.b64decode(blob))
    raw[-1] ^= 1
    bad = f"\u2014 {name} {base64.b64encode(bytes(raw)).decode()}"
    body = note.partition("\n\n")[0]
    assert verify_checkpoint(note, KEY.public_key()).size == 5
    for lines in ((good, bad), (bad, good)):
        with pytest.raises(NoteError):
            verify_checkpoint(body + "\n\n" + "\n".join(lines) + "\n", KEY.public_key())
