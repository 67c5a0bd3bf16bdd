"""Adversarial review R1 of ``log tiles``: two publishers of one directory at once."""

from __future__ import annotations

import threading

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_tiles_cli import grow

from nomyo_audit.audit import AuditLog, parse_checkpoint
from nomyo_audit.audit._tiles_writer import publish_tiles, published_checkpoint
from nomyo_audit.cli import main
from nomyo_audit.errors import IntegrityError


def test_a_slower_publisher_never_rolls_back_what_a_faster_one_published(tmp_path):
    """Two `log tiles` runs overlap (cron): the one that saw the older checkpoint finishes last.

    The directory must end with the newer checkpoint: a reader that saw size 400 must never
    be shown 300 afterwards (clients and witnesses take that for a rolled-back log).
    """
    key, db, out = Ed25519PrivateKey.generate(), tmp_path / "audit.db", tmp_path / "tiles"
    out.mkdir()
    grow(db, key, 0, 300)
    slow = AuditLog.open(db)
    scans, in_scan, release = [0], threading.Event(), threading.Event()
    real_scan = slow.store.scan

    def paused_scan():  # the slow publisher stops before it streams the tiles (after verifying)
        scans[0] += 1
        if scans[0] == 2:
            in_scan.set()
            release.wait(30)
        yield from real_scan()

    slow.store.scan = paused_scan  # type: ignore[method-assign]
    errors: list[BaseException] = []

    def run(log: AuditLog) -> None:
        try:
            publish_tiles(log, out, key.public_key())
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            log.close()

    first = threading.Thread(target=run, args=(slow,))
    first.start()
    assert in_scan.wait(30)
    grow(db, key, 300, 100)
    second = threading.Thread(target=run, args=(AuditLog.open(db),))
    second.start()
    second.join(5)  # unlocked it finishes here; locked it waits for the first
    release.set()
    first.join(30)
    second.join(30)
    assert not errors, errors
    assert parse_checkpoint(published_checkpoint(out))[0].size == 400


def test_a_published_checkpoint_with_a_size_of_thousands_of_digits_is_exit_2(tmp_path, capsys):
    key, db, out = Ed25519PrivateKey.generate(), tmp_path / "audit.db", tmp_path / "tiles"
    grow(db, key, 0, 3)
    out.mkdir()
    size = "9" * 5000  # int() refuses over 4300 digits: a ValueError, not a NoteError
    (out / "checkpoint").write_text(f"nomyo-audit.local/audit\n{size}\n{'A' * 43}=\n\n\u2014 x AAAA\n")
    assert main(["log", "tiles", "--log", str(db), "-o", str(out)]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_records_that_change_after_verifying_publish_no_tile(tmp_path):
    """The log is verified, then streamed again for the tiles: if its records changed in between
    (a rewrite racing the publisher), no tile of the changed stream may land in the directory,
    since tiles are served as immutable for a year and caches would keep a wrong one."""
    key, db, out = Ed25519PrivateKey.generate(), tmp_path / "audit.db", tmp_path / "tiles"
    grow(db, key, 0, 600)
    log = AuditLog.open(db)
    scans = [0]
    real_scan = log.store.scan

    def rewritten_after_verify():
        scans[0] += 1
        for row in real_scan():
            if scans[0] == 2 and row[0] == 300:
                row = (*row[:3], row[3].replace(b"req-300", b"req-XXX"), *row[4:])
            yield row

    log.store.scan = rewritten_after_verify  # type: ignore[method-assign]
    try:
        with pytest.raises(IntegrityError):
            publish_tiles(log, out, key.public_key())
    finally:
        log.close()
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == []
