"""The log as C2SP tlog-tiles (c2sp.org/tlog-tiles): tile paths, hash tiles, entry bundles. Pure, no I/O.

A tile is 256 consecutive Merkle tree hashes at one level: level 0 holds leaf hashes, each hash
at level ``l >= 1`` is the root of a *full* tile at level ``l - 1``. The rightmost tiles of a
tree are partial (1..255 hashes, path suffix ``.p/<W>``) and never hashed into the level
above. An entry bundle holds the entries (our record bytes) of one level-0 tile, each
prefixed by its length as a big-endian uint16, so an entry is at most 65,535 bytes.

The hashes are RFC 6962's (:mod:`._merkle`), the same as the log's checkpoints, so the
tiles of a size reproduce the root its checkpoint signs. :class:`TileBuilder` computes the
tiles of a tree from its entries in one streaming pass (memory: at most 256 hashes per
level and one bundle); :func:`tiles_for_size` and :func:`new_tiles` say which resources a
size needs and which are new since a smaller one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from ._merkle import Frontier, leaf_hash, root_of
from ._store import LogError

__all__ = [
    "MAX_ENTRY",
    "TILE_WIDTH",
    "TileBuilder",
    "TilePathError",
    "TileRef",
    "encode_index",
    "new_tiles",
    "parse_tile_path",
    "tiles_for_size",
]

#: Hashes in a full tile, entries in a full bundle.
TILE_WIDTH = 256
#: The longest entry a bundle can hold: its length is a uint16.
MAX_ENTRY = 0xFFFF
#: Tile levels are 0..63; a tree's size (and so a tile index) fits in 64 bits.
MAX_LEVEL = 63
_SIZE_LIMIT = 1 << 64


class TilePathError(ValueError):
    """A path is not a tlog-tiles resource (a server answers it with 404)."""


@dataclass(frozen=True)
class TileRef:
    """One resource: a hash tile (``level`` 0..63) or an entry bundle (``bundle``, level 0).

    ``width`` is the number of hashes or entries: 256 for a full tile, 1..255 for a partial one.
    """

    level: int
    index: int
    width: int
    bundle: bool = False

    @property
    def full(self) -> bool:
        """Whether the tile is full: its bytes never change once written."""
        return self.width == TILE_WIDTH

    @property
    def path(self) -> str:
        """The resource path below the log's prefix, e.g. ``tile/0/x001/x234/067.p/89``."""
        where = "entries" if self.bundle else str(self.level)
        suffix = "" if self.full else f".p/{self.width}"
        return f"tile/{where}/{encode_index(self.index)}{suffix}"


def encode_index(index: int) -> str:
    """A tile index as zero-padded 3-digit path elements, all but the last prefixed ``x``.

    ``1234067`` is ``x001/x234/067``; ``0`` is ``000``.
    """
    if not 0 <= index < _SIZE_LIMIT:
        raise ValueError(f"tile index {index} is out of range")
    digits = str(index)
    digits = digits.zfill(-(-len(digits) // 3) * 3)
    groups = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    return "/".join([*(f"x{g}" for g in groups[:-1]), groups[-1]])


_PATH = re.compile(r"tile/(entries|0|[1-9][0-9]?)/((?:x[0-9]{3}/){0,6}[0-9]{3})(?:\.p/([1-9][0-9]{0,2}))?")


def parse_tile_path(path: str) -> TileRef:
    """The resource a path names; :class:`TilePathError` unless it is canonical and in range.

    Canonical means exactly what :attr:`TileRef.path` writes: a level 0..63 without leading
    zeroes, an index in the 3-digit encoding without redundant leading groups (``x000/001``
    is refused), a width 1..255. Bounded: the pattern admits at most seven index groups.
    """
    match = _PATH.fullmatch(path)
    if match is None:
        raise TilePathError("not a tile path")
    where, encoded, width_text = match.groups()
    bundle = where == "entries"
    level = 0 if bundle else int(where)
    index = int(encoded.replace("x", "").replace("/", ""))
    width = int(width_text) if width_text else TILE_WIDTH
    if level > MAX_LEVEL or index >= _SIZE_LIMIT or (width_text is not None and width >= TILE_WIDTH):
        raise TilePathError("tile level, index or width out of range")
    ref = TileRef(level, index, width, bundle)
    if ref.path != path:
        raise TilePathError("not the canonical tile path")
    return ref


def _level_widths(size: int) -> Iterator[tuple[int, int, int]]:
    """(level, full tiles, partial width) at each level that has any hash, for a tree of ``size``."""
    level, span = 0, 1
    while size >= span and level <= MAX_LEVEL:
        hashes = size // span
        yield level, hashes // TILE_WIDTH, hashes % TILE_WIDTH
        level, span = level + 1, span * TILE_WIDTH


def tiles_for_size(size: int, *, bundles: bool = True) -> list[TileRef]:
    """Every hash tile (and entry bundle) a tree of ``size`` is served as, level by level.

    A tree of 70,000 is 273 full level-0 tiles, one level-0 tile of width 112, one full
    level-1 tile, a level-1 tile of width 17 and a level-2 tile of width 1 (the spec's example).
    """
    return new_tiles(0, size, bundles=bundles)


def new_tiles(old_size: int, new_size: int, *, bundles: bool = True) -> list[TileRef]:
    """The resources a tree of ``new_size`` needs that one of ``old_size`` did not have.

    Full tiles completed since ``old_size`` and the partial tiles of ``new_size`` that differ
    from the old ones; full tiles of the old size never change, so they are never listed again.
    """
    if not 0 <= old_size <= new_size < _SIZE_LIMIT:
        raise ValueError(f"no tiles from size {old_size} to {new_size}")
    old = {level: (full, partial) for level, full, partial in _level_widths(old_size)}
    refs: list[TileRef] = []
    for level, full, partial in _level_widths(new_size):
        old_full, old_partial = old.get(level, (0, 0))
        kinds = (False, True) if bundles and level == 0 else (False,)
        for bundle in kinds:
            refs.extend(TileRef(level, n, TILE_WIDTH, bundle) for n in range(old_full, full))
            if partial and (full, partial) != (old_full, old_partial):
                refs.append(TileRef(level, full, partial, bundle))
    return refs


def encode_entry(entry: bytes, seq: int) -> bytes:
    """One entry of a bundle: its length (uint16, big-endian) and its bytes.

    Raises :class:`LogError` (exit 2, code ``tile_entry_too_large``) for a record over
    65,535 bytes, which tlog-tiles cannot carry.
    """
    if len(entry) > MAX_ENTRY:
        raise LogError(
            f"record {seq} is {len(entry)} bytes; a tlog-tiles entry bundle holds entries of at most "
            f"{MAX_ENTRY} bytes, so this log cannot be published as tiles",
            code="tile_entry_too_large",
        )
    return len(entry).to_bytes(2, "big") + entry


class TileBuilder:
    """The tiles of a tree, computed from its entries in order, one streaming pass.

    :meth:`add` takes the next entry and returns the full tiles and bundle it completed;
    :meth:`finish` returns the partial ones. Each comes as ``(TileRef, bytes)``; memory is
    at most 256 hashes per level plus one bundle. :attr:`frontier` holds the root so far.
    """

    def __init__(self, *, bundles: bool = True) -> None:
        self._levels: list[list[bytes]] = [[]]
        self._full: list[int] = [0]
        self._bundle: list[bytes] | None = [] if bundles else None
        self.frontier = Frontier()

    @property
    def size(self) -> int:
        """The number of entries added."""
        return self.frontier.size

    def add(self, entry: bytes) -> list[tuple[TileRef, bytes]]:
        """Add the next entry (a record's bytes); the tiles it completed, bundle first."""
        done: list[tuple[TileRef, bytes]] = []
        if self._bundle is not None:
            self._bundle.append(encode_entry(entry, self.size))
            if len(self._bundle) == TILE_WIDTH:
                done.append((TileRef(0, self._full[0], TILE_WIDTH, True), b"".join(self._bundle)))
                self._bundle.clear()
        leaf = leaf_hash(entry)
        self.frontier.append(leaf)
        self._push(0, leaf, done)
        return done

    def _push(self, level: int, node: bytes, done: list[tuple[TileRef, bytes]]) -> None:
        while True:
            hashes = self._levels[level]
            hashes.append(node)
            if len(hashes) < TILE_WIDTH:
                return
            done.append((TileRef(level, self._full[level], TILE_WIDTH), b"".join(hashes)))
            self._full[level] += 1
            node = root_of(hashes)
            hashes.clear()
            level += 1
            if level == len(self._levels):
                self._levels.append([])
                self._full.append(0)

    def finish(self) -> list[tuple[TileRef, bytes]]:
        """The partial tiles (and bundle) of the current size; empty ones are not served."""
        partial = [
            (TileRef(level, self._full[level], len(hashes)), b"".join(hashes))
            for level, hashes in enumerate(self._levels)
            if hashes
        ]
        if self._bundle:
            partial.insert(0, (TileRef(0, self._full[0], len(self._bundle), True), b"".join(self._bundle)))
        return partial

