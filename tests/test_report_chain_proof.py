"""The chain's consistency proof, computed in one streaming pass, against published RFC 6962 vectors
(certificate-transparency / transparency-dev) and against the whole-tree proof for every size pair."""

from __future__ import annotations

import hashlib
import json

import pytest
from conftest import FIXTURES
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nomyo_audit.audit import consistency_proof, leaf_hash, verify_consistency
from nomyo_audit.audit._merkle import root_of
from nomyo_audit.audit._note import Checkpoint, sign_checkpoint
from nomyo_audit.audit._report_chain import (
    ChainError,
    CitedCheckpoint,
    UnchainableReport,
    chainable,
    consistency_from_leaves,
    coverage_findings,
    verify_chain_proof,
)

VECTORS = json.loads((FIXTURES / "vectors" / "merkle-and-dsse.json").read_text())
KEY = Ed25519PrivateKey.generate()


def cited(leaves: list[bytes], size: int, origin: str = "example.test/log") -> CitedCheckpoint:
    root = root_of(leaves[:size])
    return CitedCheckpoint(size, root.hex(), sign_checkpoint(Checkpoint(origin, size, root), KEY))


def test_the_streamed_proof_is_the_published_vector():
    leaves = [leaf_hash(bytes.fromhex(leaf)) for leaf in VECTORS["leaves"]]
    for vector in VECTORS["consistency"]:
        old, new = cited(leaves, vector["old"]), cited(leaves, vector["new"])
        proof = consistency_from_leaves(iter(leaves), old, new)
        assert [node.hex() for node in proof] == vector["proof"]


def test_the_streamed_proof_matches_the_whole_tree_proof_for_every_size_pair():
    leaves = [hashlib.sha256(b"%d" % n).digest() for n in range(40)]
    for new_size in range(1, 41):
        for old_size in range(1, new_size + 1):
            old, new = cited(leaves, old_size), cited(leaves, new_size)
            proof = consistency_from_leaves(iter(leaves), old, new)
            assert proof == consistency_proof(leaves[:new_size], old_size)
            verify_consistency(old_size, new_size, bytes.fromhex(old.root), bytes.fromhex(new.root), proof)


def test_a_rewritten_prefix_a_shrunk_log_and_a_forged_note_are_refused():
    leaves = [hashlib.sha256(b"%d" % n).digest() for n in range(10)]
    other = [hashlib.sha256(b"other %d" % n).digest() for n in range(10)]
    with pytest.raises(ChainError, match="rewritten after that report"):
        consistency_from_leaves(iter(other), cited(leaves, 4), cited(other, 10))
    with pytest.raises(ChainError, match="shrank"):
        consistency_from_leaves(iter(leaves), cited(leaves, 8), cited(leaves, 4))
    with pytest.raises(ChainError, match="fewer than"):
        consistency_from_leaves(iter(leaves[:6]), cited(leaves, 4), cited(leaves, 8))
    good = cited(leaves, 4)
    with pytest.raises(ChainError, match="note says size 4"):
        CitedCheckpoint.from_claim({"size": 5, "root": good.root, "note": good.note}, "r1")
    with pytest.raises(ChainError, match="names no checkpoint"):
        CitedCheckpoint.from_claim({"size": "4", "root": good.root, "note": good.note}, "r1")


def report(leaves, size, since, until, span, previous=None):
    checkpoint = cited(leaves, size)
    document = {
        "covers": {
            "first_seq": span[0] if span[1] > span[0] else None,
            "last_seq": span[1] - 1 if span[1] > span[0] else None,
            "period": {"since": since, "until": until},
            "span": {"from": span[0], "to": span[1]},
            "checkpoint": checkpoint.to_dict(),
        }
    }
    if previous is not None:
        old = CitedCheckpoint.from_claim(previous["covers"]["checkpoint"], "previous")
        proof = consistency_from_leaves(iter(leaves), old, checkpoint)
        document["chain"] = {
            "previous": {"report_sha256": "00" * 32, "checkpoint": old.to_dict()},
            "consistency_proof": [node.hex() for node in proof],
        }
    return document


def test_coverage_of_a_series_empty_periods_included():
    leaves = [hashlib.sha256(b"%d" % n).digest() for n in range(9)]
    a = report(leaves, 4, "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z", (0, 4))
    b = report(leaves, 4, "2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z", (4, 4), a)  # an empty month
    c = report(leaves, 9, "2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z", (4, 9), b)
    assert coverage_findings([("a", a), ("b", b), ("c", c)]) == []
    assert verify_chain_proof(c, "c") == CitedCheckpoint.from_claim(b["covers"]["checkpoint"], "b")
    late = report(leaves, 9, "2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z", (6, 9), b)
    assert coverage_findings([("b", b), ("c", late)]) == ["records 4 to 5 are in no report (between b and c)"]
    again = report(leaves, 9, "2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z", (2, 9), b)
    assert "c counts records from 2" in coverage_findings([("b", b), ("c", again)])[0]


def test_what_cannot_be_chained_from_is_named():
    leaves = [hashlib.sha256(b"%d" % n).digest() for n in range(6)]
    a = report(leaves, 4, None, "2026-02-01T00:00:00Z", (0, 6))
    with pytest.raises(UnchainableReport, match="counted records 4 to 5"):
        chainable(a, "example.test/log")
    with pytest.raises(UnchainableReport, match="another log"):
        chainable(a, "elsewhere.test/log")
    open_ended = report(leaves, 6, None, None, (0, 6))
    with pytest.raises(UnchainableReport, match="without --until"):
        chainable(open_ended, "example.test/log")
    with pytest.raises(UnchainableReport, match="cites no signed checkpoint"):
        chainable({"covers": {"checkpoint": None}}, "example.test/log")
