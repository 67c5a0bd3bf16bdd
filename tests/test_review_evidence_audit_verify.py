"""Review R3: log verify checks the kept event logs inside its one pass over the records."""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from pathlib import Path

from test_audit_blobs import EVENT_LOG, b64, record, reply

from nomyo_audit.audit import AuditLog


def verify_counting_scans(path: Path) -> tuple[list[str], int]:
    with AuditLog.open(path) as log:
        scans = []
        scan = log.store.scan

        def counted():
            scans.append(1)
            return scan()

        log.store.scan = counted  # type: ignore[method-assign]
        return log.verify().problems, len(scans)


def test_log_verify_reads_the_records_once_and_still_names_a_missing_blob(tmp_path):
    path = tmp_path / "audit.db"
    with AuditLog(path) as log:
        for n in range(3):
            record(log, f"p{n}", reply(f"p{n}", event_log_b64=b64(EVENT_LOG)))
    assert verify_counting_scans(path) == ([], 1)  # before: a second full scan for the blobs
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("DELETE FROM blobs")
    problems, scans = verify_counting_scans(path)
    digest = hashlib.sha256(EVENT_LOG).hexdigest()[:16]
    assert scans == 1 and problems == [
        f"record {n}: the event log it references ({digest}...) is missing" for n in range(3)
    ]
