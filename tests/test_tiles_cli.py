"""``nomyo-audit log tiles``: a real log published as tlog-tiles, read back by a client from the spec.

The client (tests/tile_client.py) shares no code with the writer: it checks the checkpoint's
signature, recomputes the root and inclusion proofs from the tiles it fetches, and checks
every entry against its level-0 hash.
"""

from __future__ import annotations

import os
import shutil

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_log_integrity import DAY, make_log, record_at, sql, write_public
from tile_client import SpecTileClient, verify_path

from nomyo_audit.audit import AuditLog, build_record, parse_checkpoint
from nomyo_audit.audit._cosignature import WitnessKey, cosign, verified_cosignatures
from nomyo_audit.audit._tiles import new_tiles, tiles_for_size
from nomyo_audit.audit._tiles_writer import publish_tiles
from nomyo_audit.cli import main


@pytest.fixture
def key():
    return Ed25519PrivateKey.generate()


def grow(path, key, start, count):
    """Append ``count`` records after ``start`` and sign a checkpoint at the new size."""
    with AuditLog(path, key=key, checkpoint_every=10**9, checkpoint_interval=1e12) as log:
        for n in range(start, start + count):
            log.append(f"req-{n}", record_at(f"req-{n}", DAY + n), timestamp=DAY + n)
        log.checkpoint()


def files_under(directory):
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def stats(directory):
    return {
        str(p.relative_to(directory)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in directory.rglob("*")
        if p.is_file()
    }


def client_of(directory):
    return SpecTileClient(lambda path: (directory / path).read_bytes())


def test_a_published_log_verifies_in_a_client_written_from_the_spec(tmp_path, key, capsys):
    db = make_log(tmp_path / "audit.db", key, count=600, every=1000)
    out = tmp_path / "www"
    assert main(["log", "tiles", "--log", str(db), "--key", str(write_public(key, tmp_path / "k.pub")),
                 "-o", str(out)]) == 0
    assert "size 600" in capsys.readouterr().out
    assert files_under(out) == sorted(["checkpoint", *(r.path for r in tiles_for_size(600))])
    client = client_of(out)
    client.open_checkpoint(key.public_key())
    assert client.size == 600 and client.tree_root() == client.root
    with AuditLog.open(db) as log:
        records = [r.data for r in log.store.records()]
        assert client.root == log.latest_checkpoint().root
    assert [e for n in range(3) for e in client.entries(n)] == records
    for index in (0, 1, 255, 256, 511, 512, 599):
        proof = client.inclusion_proof(index)
        assert verify_path(records[index], index, 600, proof, client.root)
        assert not verify_path(records[index] + b" ", index, 600, proof, client.root)
    assert "tile/1/000.p/2" in client.fetched  # the root came from a level-1 tile, not from 600 leaves


def test_rerunning_writes_only_new_tiles_and_never_rewrites_a_full_one(tmp_path, key):
    db = make_log(tmp_path / "audit.db", key, count=300, every=1000)
    out = tmp_path / "www"
    with AuditLog.open(db) as log:
        first = publish_tiles(log, out)
    assert first.written == [  # in order: a tile's bundle first, the checkpoint last
        "tile/entries/000", "tile/0/000", "tile/entries/001.p/44", "tile/0/001.p/44", "tile/1/000.p/1",
        "checkpoint",
    ]
    before = stats(out)
    grow(db, key, 300, 300)
    with AuditLog.open(db) as log:
        second = publish_tiles(log, out)
    assert (second.previous_size, second.size) == (300, 600)
    assert sorted(second.written) == sorted([*(r.path for r in new_tiles(300, 600)), "checkpoint"])
    after = stats(out)
    for path in ("tile/0/000", "tile/entries/000"):  # full at size 300: untouched (same inode and mtime)
        assert after[path] == before[path]
    assert "tile/0/001.p/44" in after  # partial tiles of the old checkpoint stay for its clients
    with AuditLog.open(db) as log:
        assert publish_tiles(log, out).written == []  # nothing new: nothing written
    assert stats(out) == after
    client = client_of(out)
    client.open_checkpoint(key.public_key())
    assert client.tree_root() == client.root and client.size == 600


def test_a_log_that_does_not_verify_is_exit_3_and_nothing_is_written(tmp_path, key, capsys):
    db = make_log(tmp_path / "audit.db", key, count=20, every=1000)
    altered = "CAST(REPLACE(CAST(data AS TEXT), 'req-3', 'req-X') AS BLOB)"
    sql(db, f"UPDATE records SET data = {altered} WHERE seq = 3")
    out = tmp_path / "www"
    assert main(["log", "tiles", "--log", str(db), "-o", str(out)]) == 3
    assert "no tiles were written" in capsys.readouterr().err
    assert files_under(out) == []


@pytest.mark.parametrize("other_size", [300, 600])
def test_a_log_forked_from_what_the_directory_publishes_is_exit_3_and_nothing_is_written(
    tmp_path, key, capsys, other_size
):
    out = tmp_path / "www"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = make_log(tmp_path / "a" / "audit.db", key, count=300, every=1000)
    assert main(["log", "tiles", "--log", str(first), "-o", str(out)]) == 0
    published = stats(out)
    other = tmp_path / "b" / "audit.db"  # same origin (nomyo-audit.local/audit), other records
    with AuditLog(other, key=key) as log:
        for n in range(other_size):
            log.append(f"other-{n}", record_at(f"other-{n}", DAY + n), timestamp=DAY + n)
        log.checkpoint()
    assert main(["log", "tiles", "--log", str(other), "-o", str(out)]) == 3
    assert "forked" in capsys.readouterr().err
    assert stats(out) == published


def test_a_rolled_back_log_is_exit_3_and_the_directory_keeps_the_later_checkpoint(tmp_path, key, capsys):
    db = make_log(tmp_path / "audit.db", key, count=300, every=1000)
    shutil.copy(db, tmp_path / "yesterday.db")
    grow(db, key, 300, 300)
    out = tmp_path / "www"
    assert main(["log", "tiles", "--log", str(db), "-o", str(out)]) == 0
    published = stats(out)
    shutil.copy(tmp_path / "yesterday.db", db)  # whoever can write the file restores an older copy
    assert main(["log", "tiles", "--log", str(db), "-o", str(out)]) == 3
    assert "publishes size 600, but the log's latest checkpoint is size 300" in capsys.readouterr().err
    assert stats(out) == published


def test_a_directory_of_another_log_is_exit_2(tmp_path, key, capsys):
    out = tmp_path / "www"
    assert main(["log", "tiles", "--log", str(make_log(tmp_path / "one.db", key)), "-o", str(out)]) == 0
    assert main(["log", "tiles", "--log", str(make_log(tmp_path / "two.db", key)), "-o", str(out)]) == 2
    assert "publishes the log 'nomyo-audit.local/one'" in capsys.readouterr().err


def test_a_log_without_a_checkpoint_is_exit_2(tmp_path, capsys):
    db = make_log(tmp_path / "audit.db", None, count=3)
    assert main(["log", "tiles", "--log", str(db), "-o", str(tmp_path / "www")]) == 2
    assert "no signed checkpoint" in capsys.readouterr().err


def test_a_record_too_long_for_an_entry_bundle_is_exit_2_by_code_and_no_checkpoint_is_published(
    tmp_path, key, capsys
):
    db = tmp_path / "audit.db"
    with AuditLog(db, key=key) as log:
        log.append("small", record_at("small", DAY), timestamp=DAY)
        log.append(
            "big",
            lambda seq, salt: build_record(
                seq=seq, timestamp=DAY, salt=salt, payload_id="big", router="https://r.example",
                server_key=None, model="m", security_tier="high", outcome="ok", request=None,
                response=None, metadata={"certificate": "A" * 70_000},
            ),
            timestamp=DAY,
        )
        log.checkpoint()
    out = tmp_path / "www"
    assert main(["log", "tiles", "--log", str(db), "-o", str(out)]) == 2
    assert "error[tile_entry_too_large]: record 1 is 70" in capsys.readouterr().err
    assert not (out / "checkpoint").exists()


def cosigned(note, line):
    return note.rstrip("\n") + "\n" + line + "\n"


def test_the_checkpoint_published_carries_the_witnesses_cosignatures_of_that_checkpoint(tmp_path, key):
    db = make_log(tmp_path / "audit.db", key, count=10, every=1000)
    witness_private = Ed25519PrivateKey.generate()
    witness = WitnessKey.of("witness.example/w1", witness_private)
    with AuditLog(db) as log:
        note = log.latest_checkpoint().note
        line = cosign(parse_checkpoint(note)[0], witness, witness_private, 1_790_000_000)
        log.store.set_meta("cosigned_checkpoint", cosigned(note, line.rstrip("\n")).encode())
    out = tmp_path / "www"
    with AuditLog.open(db) as log:
        publish_tiles(log, out)
    served = (out / "checkpoint").read_text()
    assert served == cosigned(note, line.rstrip("\n"))
    assert [c.witness.name for c in verified_cosignatures(served, [witness])[0]] == ["witness.example/w1"]
    client = client_of(out)
    client.open_checkpoint(key.public_key())  # the log's own signature still verifies
    assert client.tree_root() == client.root


@pytest.mark.parametrize("kind", ["older size", "log signature forged", "not utf-8"])
def test_a_cosigned_checkpoint_that_is_not_the_latest_one_is_not_published(tmp_path, key, kind):
    db = make_log(tmp_path / "audit.db", key, count=10, every=4)
    with AuditLog(db) as log:
        notes = [c.note for c in log.checkpoints()]
        latest = notes[-1]
        stored = {
            "older size": cosigned(notes[0], "\u2014 witness.example/w1 AAAA"),
            "log signature forged": latest.replace(latest.split(" ")[-1], "A" * 88 + "\n"),
            "not utf-8": None,
        }[kind]
        log.store.set_meta("cosigned_checkpoint", stored.encode() if stored else b"\xff\xfe")
    out = tmp_path / "www"
    with AuditLog.open(db) as log:
        publish_tiles(log, out)
    assert (out / "checkpoint").read_text() == latest


def test_files_are_written_with_a_public_mode_and_no_temporary_file_is_left(tmp_path, key):
    db = make_log(tmp_path / "audit.db", key, count=5)
    out = tmp_path / "www"
    assert main(["log", "tiles", "--log", str(db), "-o", str(out)]) == 0
    for path in out.rglob("*"):
        if path.is_file():
            assert oct(path.stat().st_mode & 0o777) == "0o644" and not path.name.endswith(".tmp")
    assert sorted(os.listdir(out)) == ["checkpoint", "tile"]


def test_an_output_that_is_a_file_is_exit_2_and_no_key_is_said(tmp_path, key, capsys):
    db = make_log(tmp_path / "audit.db", key, count=3)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["log", "tiles", "--log", str(db), "-o", str(blocker)]) == 2
    assert "is a file" in capsys.readouterr().err
    assert main(["log", "tiles", "--log", str(db), "-o", str(blocker / "www")]) == 2
    assert f"cannot create {blocker / 'www'}: Not a directory" in capsys.readouterr().err
    assert main(["log", "tiles", "--log", str(db), "-o", str(tmp_path / "www")]) == 0
    assert "pass --key for a trusted one" in capsys.readouterr().err


def test_cosignatures_that_arrive_later_rewrite_only_the_checkpoint(tmp_path, key):
    db = make_log(tmp_path / "audit.db", key, count=300, every=1000)
    out = tmp_path / "www"
    with AuditLog.open(db) as log:
        publish_tiles(log, out)
    before = stats(out)
    witness_private = Ed25519PrivateKey.generate()
    witness = WitnessKey.of("witness.example/w1", witness_private)
    with AuditLog(db) as log:
        note = log.latest_checkpoint().note
        line = cosign(parse_checkpoint(note)[0], witness, witness_private, 1_790_000_000)
        log.store.set_meta("cosigned_checkpoint", cosigned(note, line.rstrip("\n")).encode())
    with AuditLog.open(db) as log:
        assert publish_tiles(log, out).written == ["checkpoint"]
    assert {p: s for p, s in stats(out).items() if p != "checkpoint"} == {
        p: s for p, s in before.items() if p != "checkpoint"
    }
    assert verified_cosignatures((out / "checkpoint").read_text(), [witness])[0]
