"""A backlog of large pending rows is sequenced in batches bounded in bytes, not only in rows.

A batch took up to 4,000 rows whatever their size, all in memory at once (the rows, their
re-encoded copies and the statement's parameters): 4,000 records of a megabyte were gigabytes
in one writer process.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import psycopg

ROWS, SIZE = 60, 2_000_000


def test_large_pending_rows_are_sequenced_in_bounded_memory(postgres_url):
    from nomyo_audit.audit import AuditLog

    with AuditLog(postgres_url):
        pass  # the tables
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for i in range(ROWS):
            data = b'{"pad":"%s","payload_id":"p-%d","seq":0,"time":"2025-11-24T16:00:00Z","v":3}' % (
                b"x" * SIZE, i)
            conn.execute(
                "INSERT INTO pending (token, payload_id, time, data) VALUES (%s, 'x', 0, %s)",
                (i.to_bytes(16, "big"), data),
            )
    code = textwrap.dedent(f"""
        import sys, time
        from nomyo_audit.audit import AuditLog
        with AuditLog({postgres_url!r}) as log:
            deadline = time.monotonic() + 120
            while log.size < {ROWS} and time.monotonic() < deadline:
                time.sleep(0.1)
            # VmHWM: this process image's own peak (ru_maxrss keeps the forking parent's, which is the
            # whole test session's when the suite runs)
            hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
            print(log.size, int(hwm.split()[1]) // 1024)
    """)
    run = [sys.executable, "-c", code]
    out = subprocess.run(run, capture_output=True, text=True, timeout=180, check=True)
    size, peak_mb = map(int, out.stdout.split())
    assert size == ROWS
    assert peak_mb < 250, f"sequencing {ROWS * SIZE // 1_000_000} MB of pending rows peaked at {peak_mb} MB"
