"""RFC 6962 / RFC 9162 Merkle tree math: pure functions, no I/O.

* leaf hash ``SHA-256(0x00 || data)``, node hash ``SHA-256(0x01 || left || right)``;
* :class:`Frontier`: the compact range of a growing tree (at most log2(n) hashes),
  so appending is O(log n) and the root at any size is available without
  rereading the leaves;
* inclusion and consistency proofs, generated from leaf hashes and verified
  with the RFC 9162 section 2.1.3.2 and 2.1.4.2 algorithms.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "EMPTY_ROOT",
    "Frontier",
    "ProofError",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_of",
    "verify_consistency",
    "verify_inclusion",
]

EMPTY_ROOT = hashlib.sha256(b"").digest()


class ProofError(ValueError):
    """A proof does not verify, or its parameters are impossible."""


def leaf_hash(data: bytes) -> bytes:
    """The RFC 6962 leaf hash of a record's bytes: ``SHA-256(0x00 || data)``."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The RFC 6962 interior node hash: ``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


@dataclass
class Frontier:
    """The right edge of a Merkle tree: one hash per set bit of ``size``, largest subtree first."""

    size: int = 0
    hashes: list[bytes] = field(default_factory=list)

    def append(self, leaf: bytes) -> None:
        """Add a leaf *hash*: merge equal-sized subtrees, as binary addition carries."""
        node = leaf
        size = self.size
        while size & 1:
            node = node_hash(self.hashes.pop(), node)
            size >>= 1
        self.hashes.append(node)
        self.size += 1

    def root(self) -> bytes:
        """The Merkle tree hash of the leaves so far (the empty tree's for none)."""
        if not self.hashes:
            return EMPTY_ROOT
        node = self.hashes[-1]
        for left in reversed(self.hashes[:-1]):
            node = node_hash(left, node)
        return node

    def to_bytes(self) -> bytes:
        """Size (8 bytes, big-endian) and the hashes: what the store saves."""
        return self.size.to_bytes(8, "big") + b"".join(self.hashes)

    @classmethod
    def from_bytes(cls, data: bytes) -> Frontier:
        """The frontier :meth:`to_bytes` wrote; ValueError when the bytes cannot be one."""
        size = int.from_bytes(data[:8], "big")
        hashes = [data[i : i + 32] for i in range(8, len(data), 32)]
        if len(hashes) != bin(size).count("1") or len(data) != 8 + 32 * len(hashes):
            raise ValueError("corrupt frontier")
        return cls(size, hashes)


def root_of(leaves: Sequence[bytes]) -> bytes:
    """MTH (the Merkle tree hash) over leaf *hashes*."""
    frontier = Frontier()
    for leaf in leaves:
        frontier.append(leaf)
    return frontier.root()


def _split(n: int) -> int:
    """The largest power of two strictly less than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _subtree_root(leaves: Sequence[bytes], start: int, end: int) -> bytes:
    return root_of(leaves[start:end])


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """PATH(index, D[n]) from RFC 9162 2.1.3.1, over leaf hashes; ProofError for an index outside."""
    if not 0 <= index < len(leaves):
        raise ProofError(f"leaf {index} is not in a tree of size {len(leaves)}")
    proof: list[bytes] = []
    start, end = 0, len(leaves)
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            proof.append(_subtree_root(leaves, start + k, end))
            end = start + k
        else:
            proof.append(_subtree_root(leaves, start, start + k))
            start += k
    proof.reverse()
    return proof


def consistency_proof(leaves: Sequence[bytes], old_size: int) -> list[bytes]:
    """PROOF(m, D[n]) from RFC 9162 2.1.4.1, over leaf hashes; ProofError unless 0 < m <= n."""
    new_size = len(leaves)
    if not 0 < old_size <= new_size:
        raise ProofError(f"no consistency proof from size {old_size} to {new_size}")
    if old_size == new_size:
        return []

    def subproof(m: int, start: int, end: int, complete: bool) -> list[bytes]:
        n = end - start
        if m == n:
            return [] if complete else [_subtree_root(leaves, start, end)]
        k = _split(n)
        if m <= k:
            return [*subproof(m, start, start + k, complete), _subtree_root(leaves, start + k, end)]
        return [*subproof(m - k, start + k, end, False), _subtree_root(leaves, start, start + k)]

    return subproof(old_size, 0, new_size, True)


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """RFC 9162 2.1.3.2; raises :class:`ProofError` unless ``leaf`` is at ``index`` under ``root``."""
    if not 0 <= index < size:
        raise ProofError(f"index {index} is outside a tree of size {size}")
    fn, sn, node = index, size - 1, leaf
    for sibling in proof:
        if sn == 0:
            raise ProofError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            node = node_hash(sibling, node)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            node = node_hash(node, sibling)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is too short")
    if node != root:
        raise ProofError("inclusion proof does not lead to the root")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 2.1.4.2; raises :class:`ProofError` unless the old tree is a prefix of the new."""
    if not 0 < old_size <= new_size:
        raise ProofError(f"no consistency between sizes {old_size} and {new_size}")
    if old_size == new_size:
        if proof:
            raise ProofError("a proof between equal sizes must be empty")
        if old_root != new_root:
            raise ProofError("equal sizes with different roots")
        return
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is a node of the new tree
        path.insert(0, old_root)
    if not path:
        raise ProofError("consistency proof is empty")
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is too short")
    if fr != old_root or sr != new_root:
        raise ProofError("consistency proof does not match the roots")
