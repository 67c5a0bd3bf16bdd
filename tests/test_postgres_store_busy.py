"""Reading a PostgreSQL log while writers append: a snapshot that is older than the saved state read
after it is not a truncated log.

``records()`` (report, show) compared the rows of its snapshot with the saved frontier read at
the END of the walk, so any batch sequenced meanwhile made a healthy, growing log an integrity
failure (exit 3).
"""

from __future__ import annotations

import threading

from nomyo_audit.audit import AuditLog


def _build(i):
    record = b'{"payload_id":"p-%d","seq":%%d,"time":"2025-11-24T16:00:00Z","v":3}' % i
    return lambda seq, salt: record % seq


def test_records_of_a_growing_log_are_not_truncated(postgres_url):
    stop = threading.Event()
    with AuditLog(postgres_url) as log:
        for i in range(200):
            log.append(f"p-{i}", _build(i))

        def writer() -> None:
            i = 200
            while not stop.is_set():
                log.append(f"p-{i}", _build(i))
                i += 1

        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        try:
            with AuditLog.open(postgres_url) as reader:
                for _ in range(20):
                    seen = sum(1 for _ in reader.store.records())
                    assert seen >= 200
        finally:
            stop.set()
            thread.join(30)
