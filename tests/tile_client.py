"""A minimal tlog-tiles client written from c2sp.org/tlog-tiles, signed-note and RFC 6962 alone.

It shares no code with nomyo_audit's tile modules: it checks a checkpoint's Ed25519 signature
itself, fetches only the tiles it needs through ``fetch(path) -> bytes``, recomputes roots
and inclusion proofs from them, and checks every entry of a bundle against its level-0 hash.
Used by tests/test_tiles_cli.py against ``log tiles`` output and ``log serve`` over HTTP.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def leaf(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def encode(n: int) -> str:
    digits = str(n).zfill(3)
    digits = "0" * (-len(digits) % 3) + digits
    groups = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    return "/".join([*("x" + g for g in groups[:-1]), groups[-1]])


class SpecTileClient:
    def __init__(self, fetch: Callable[[str], bytes]) -> None:
        self.fetch = fetch
        self.fetched: dict[str, bytes] = {}
        self.size = 0
        self.root = b""

    def _get(self, path: str) -> bytes:
        if path not in self.fetched:
            self.fetched[path] = self.fetch(path)
        return self.fetched[path]

    def open_checkpoint(self, key: Ed25519PublicKey) -> str:
        """Fetch ``checkpoint``, check the log's signature on it; keep its size and root."""
        note = self._get("checkpoint").decode()
        body, _, signatures = note.partition("\n\n")
        origin, size, root = body.split("\n")[:3]
        raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
        key_id = hashlib.sha256(origin.encode() + b"\n\x01" + raw).digest()[:4]
        for line in signatures.rstrip("\n").split("\n"):
            dash, name, blob = line.split(" ")
            signature = base64.b64decode(blob)
            if dash == "\u2014" and name == origin and signature[:4] == key_id:
                key.verify(signature[4:], (body + "\n").encode())  # raises InvalidSignature
                break
        else:
            raise AssertionError("no signature by the log's key")
        self.size, self.root = int(size), base64.b64decode(root)
        return note

    def tile(self, level: int, n: int) -> list[bytes]:
        hashes_at_level = self.size // 256**level
        width = min(256, hashes_at_level - n * 256)
        assert width > 0, "asked for a tile the checkpoint does not need"
        path = f"tile/{level}/{encode(n)}" + ("" if width == 256 else f".p/{width}")
        data = self._get(path)
        assert len(data) == 32 * width, path
        return [data[i : i + 32] for i in range(0, len(data), 32)]

    def subtree(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) from tile hashes: a level-l hash stands for an aligned 256**l run."""
        count = end - start
        level = 0
        while 256 ** (level + 1) <= count and count % 256 ** (level + 1) == 0:
            level += 1
        if count == 256**level and start % count == 0:
            index = start // count
            return self.tile(level, index // 256)[index % 256]
        k = 1
        while k * 2 < count:
            k *= 2
        return node(self.subtree(start, start + k), self.subtree(start + k, end))

    def tree_root(self) -> bytes:
        return self.subtree(0, self.size) if self.size else hashlib.sha256(b"").digest()

    def inclusion_proof(self, index: int) -> list[bytes]:
        """RFC 9162 2.1.3.1 PATH(index, D[0:size]), every hash from tiles."""

        def path(m: int, start: int, end: int) -> list[bytes]:
            if end - start == 1:
                return []
            k = 1
            while k * 2 < end - start:
                k *= 2
            if m < k:
                return [*path(m, start, start + k), self.subtree(start + k, end)]
            return [*path(m - k, start + k, end), self.subtree(start, start + k)]

        return path(index, 0, self.size)

    def entries(self, n: int) -> list[bytes]:
        """Entry bundle ``n``, each entry checked against its level-0 tile hash."""
        width = min(256, self.size - n * 256)
        data = self._get(f"tile/entries/{encode(n)}" + ("" if width == 256 else f".p/{width}"))
        entries = []
        while data:
            length = int.from_bytes(data[:2], "big")
            entries.append(data[2 : 2 + length])
            data = data[2 + length :]
        assert [leaf(e) for e in entries] == self.tile(0, n)
        return entries


def verify_path(entry: bytes, index: int, size: int, proof: list[bytes], root: bytes) -> bool:
    """RFC 9162 2.1.3.2, written out again."""
    fn, sn, r = index, size - 1, leaf(entry)
    for p in proof:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            r = node(p, r)
            while fn % 2 == 0 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root
