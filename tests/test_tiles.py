"""C2SP tlog-tiles, pure part: paths, hash tiles and entry bundles against independent material.

* the specification's own examples and Tessera's path test tables (tests/fixtures/tiles/paths.json);
* a log written by Tessera's POSIX driver (tests/fixtures/tiles/tessera-log): its tiles, bundles
  and signed checkpoints, byte for byte;
* a second, minimal implementation written here from the specification alone (its formula
  ``MTH(D[(n * 256 + i) * 256**l : (n * 256 + i + 1) * 256**l])`` over a recursive RFC 6962 MTH).
See tests/fixtures/tiles/PROVENANCE.md.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from nomyo_audit.audit import LogError
from nomyo_audit.audit._note import verify_checkpoint
from nomyo_audit.audit._tiles import (
    MAX_ENTRY,
    TileBuilder,
    TilePathError,
    TileRef,
    encode_index,
    new_tiles,
    parse_tile_path,
    tiles_for_size,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "tiles"
VECTORS = json.loads((FIXTURES / "paths.json").read_text())
TESSERA_LOG = FIXTURES / "tessera-log"
TESSERA_VKEY = "example.com/log/testdata+33d7b496+AeHTu4Q3hEIMHNqc6fASMsq3rKNx280NI+oO5xCFkkSx"


# -- the second implementation, from the specification alone -------------------------------------


def spec_mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 2.1 MTH over entries, recursively, exactly as written there."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + spec_mth(leaves[:k]) + spec_mth(leaves[k:])).digest()


def spec_tiles(entries: list[bytes]) -> dict[str, bytes]:
    """Every resource of a tree of len(entries), by path, from the spec's formulas."""
    size, out = len(entries), {}
    level = 0
    while size >= 256**level:
        hashes_at_level = size // 256**level
        for n in range(-(-hashes_at_level // 256)):
            width = min(256, hashes_at_level - n * 256)
            span = 256**level
            tile = b"".join(
                spec_mth(entries[(n * 256 + i) * span : (n * 256 + i + 1) * span]) for i in range(width)
            )
            out[spec_path(str(level), n, width)] = tile
            if level == 0:
                bundle = b"".join(len(e).to_bytes(2, "big") + e for e in entries[n * 256 : n * 256 + width])
                out[spec_path("entries", n, width)] = bundle
        level += 1
    return out


def spec_path(level: str, n: int, width: int) -> str:
    digits = f"{n:03d}"
    digits = "0" * (-len(digits) % 3) + digits
    groups = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    encoded = "/".join(["x" + g for g in groups[:-1]] + groups[-1:])
    return f"tile/{level}/{encoded}" + ("" if width == 256 else f".p/{width}")


def entries_of(count: int) -> list[bytes]:
    return [b"entry %d " % i + b"x" * (i % 7) for i in range(count)]


def built(entries: list[bytes]) -> dict[str, bytes]:
    builder = TileBuilder()
    out: dict[str, bytes] = {}
    for entry in entries:
        out.update((ref.path, data) for ref, data in builder.add(entry))
    out.update((ref.path, data) for ref, data in builder.finish())
    return out


# -- paths -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("index", "encoded"), VECTORS["c2sp_tlog_tiles"]["index_encoding"])
def test_the_specifications_index_encoding_example(index, encoded):
    assert encode_index(index) == encoded
    assert TileRef(0, index, 256).path == f"tile/0/{encoded}"


def partial_width(level: int, index: int, size: int) -> int:
    """The width Tessera's tables mean: floor(size / 256**level) mod 256 for the rightmost tile,
    where Tessera reads 0 as full (its rows use sizes too small for the tile to exist)."""
    hashes = size >> (8 * level)
    return 256 if index < hashes // 256 or hashes % 256 == 0 else hashes % 256


@pytest.mark.parametrize(("level", "index", "size", "path"), VECTORS["tessera_TilePath"])
def test_tesseras_tile_path_table(level, index, size, path):
    assert TileRef(level, index, partial_width(level, index, size)).path == path
    assert parse_tile_path(path) == TileRef(level, index, partial_width(level, index, size))


@pytest.mark.parametrize(("index", "size", "path"), VECTORS["tessera_EntriesPath"])
def test_tesseras_entries_path_table(index, size, path):
    ref = TileRef(0, index, partial_width(0, index, size), bundle=True)
    assert ref.path == path
    assert parse_tile_path(path) == ref


@pytest.mark.parametrize(("level", "index", "want_level", "want_index", "want_width"),
                         VECTORS["tessera_ParseTileLevelIndexWidth"])
def test_tesseras_parse_table(level, index, want_level, want_index, want_width):
    path = f"tile/{level}/{index}"
    if want_level is None:
        with pytest.raises(TilePathError):
            parse_tile_path(path)
    else:
        assert parse_tile_path(path) == TileRef(want_level, want_index, want_width)


@pytest.mark.parametrize(
    "path",
    [
        "tile/0/x000/001",  # 1 is "001": a redundant leading group is not canonical
        "tile/00/000",
        "tile/0/000.p/0",
        "tile/0/000.p/007",
        "tile/entries/000.p/256",
        "tile/entries/x001",
        "tile/data/000",
        "/tile/0/000",
        "tile/0/000/",
        "tile/0/\u0660\u0660\u0660",  # Arabic-Indic digits are not ASCII digits
        "tile/0/" + "x999/" * 20 + "999",
        "tile/7/x018/x446/x744/x073/x709/x551/616",  # 2**64: beyond any tree size
        "checkpoint",
        "",
    ],
)
def test_a_non_canonical_or_out_of_range_path_is_refused(path):
    with pytest.raises(TilePathError):
        parse_tile_path(path)


def test_every_path_we_write_parses_back_to_its_tile():
    for ref in tiles_for_size(70_000) + tiles_for_size(256**3 + 5, bundles=False)[-5:]:
        assert parse_tile_path(ref.path) == ref


# -- which tiles a size needs ----------------------------------------------------------------------


@pytest.mark.parametrize("size", ["70000", "256"])
def test_the_specifications_examples_of_the_tiles_of_a_size(size):
    want = VECTORS["c2sp_tlog_tiles"]["tiles_for_size"][size]
    refs = tiles_for_size(int(size), bundles=False)
    for level in range(3):
        full = [r for r in refs if r.level == level and r.full]
        partial = [r for r in refs if r.level == level and not r.full]
        assert len(full) == want.get(f"level{level}_full", 0)
        width = want.get(f"level{level}_partial")
        assert [r.width for r in partial] == ([width] if width else [])
    assert {r.level for r in refs} == {int(k[5]) for k, v in want.items() if v}


def test_an_empty_tree_has_no_tiles():
    assert tiles_for_size(0) == []


@pytest.mark.parametrize(
    ("old", "new"),
    [(0, 1), (1, 2), (255, 256), (256, 257), (200, 70_000), (65_535, 65_536), (70_000, 70_000)],
)
def test_new_tiles_are_what_the_new_size_has_and_the_old_did_not(old, new):
    before = {r.path for r in tiles_for_size(old)}
    after = {r.path for r in tiles_for_size(new)}
    assert {r.path for r in new_tiles(old, new)} == after - before
    assert not any(r.full and r.path in before for r in new_tiles(old, new))  # full tiles never again


def test_new_tiles_refuses_a_shrinking_tree():
    with pytest.raises(ValueError):
        new_tiles(5, 4)


# -- tile and bundle bytes -------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 255, 256, 257, 511, 512, 513, 256 * 256 + 300])
def test_tiles_match_the_second_implementation_from_the_spec(size):
    entries = entries_of(size)
    assert built(entries) == spec_tiles(entries)


def test_the_builders_root_is_the_rfc_6962_root():
    entries = entries_of(1000)
    builder = TileBuilder()
    for entry in entries:
        builder.add(entry)
    assert builder.frontier.root() == spec_mth(entries)


def test_an_entry_of_65535_bytes_is_carried_and_one_byte_more_is_refused_by_code():
    builder = TileBuilder()
    builder.add(b"a" * MAX_ENTRY)
    assert builder.finish()[0][1][:2] == b"\xff\xff"
    with pytest.raises(LogError) as caught:
        builder.add(b"a" * (MAX_ENTRY + 1))
    assert caught.value.code == "tile_entry_too_large" and caught.value.exit_code == 2
    assert "record 1 is 65536 bytes" in str(caught.value)


# -- a log written by Tessera ----------------------------------------------------------------------


def tessera_entries() -> list[bytes]:
    """The 15 entries, decoded by hand from Tessera's own bundle (uint16 length prefixes)."""
    data, entries = (TESSERA_LOG / "tile/entries/000.p/15").read_bytes(), []
    while data:
        length = int.from_bytes(data[:2], "big")
        entries.append(data[2 : 2 + length])
        data = data[2 + length :]
    return entries


def tessera_key() -> Ed25519PublicKey:
    name, key_id, encoded = TESSERA_VKEY.split("+", 2)
    raw = base64.b64decode(encoded)
    assert raw[0] == 1 and hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4].hex() == key_id
    return Ed25519PublicKey.from_public_bytes(raw[1:])


def test_tesseras_log_entries_are_the_words_its_build_script_added():
    assert tessera_entries()[:3] == [b"one", b"two", b"three"] and len(tessera_entries()) == 15


@pytest.mark.parametrize("size", range(16))
def test_our_tiles_of_tesseras_log_are_tesseras_bytes_and_reach_its_signed_root(size):
    entries = tessera_entries()[:size]
    checkpoint = verify_checkpoint((TESSERA_LOG / f"checkpoint.{size}").read_text(), tessera_key())
    assert checkpoint.size == size and checkpoint.origin == "example.com/log/testdata"
    builder = TileBuilder()
    for entry in entries:
        assert builder.add(entry) == []  # 15 entries complete no tile
    assert builder.frontier.root() == checkpoint.root
    ours = dict((ref.path, data) for ref, data in builder.finish())
    assert set(ours) == {r.path for r in tiles_for_size(size)}
    for path, data in ours.items():
        assert data == (TESSERA_LOG / path).read_bytes(), path
