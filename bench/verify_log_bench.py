"""`nomyo-audit verify --log` at scale: peak memory and time over a 1M-record audit log.

    .venv/bin/python bench/verify_log_bench.py [--records 1000000] [--formats junit,json]

The log is built quickly: AuditLog creates it, then realistic records (bench/audit_bench.py's
template: a full record as the client writes it, a software-attester TPM quote in its
_metadata, about 3.4 KB) are inserted in bulk, in one transaction. Then the real CLI runs in
its own process, pinned to one core, once per format, re-appraising every record against the
production policy and writing the report to a file:

    nomyo-audit verify --log large.db --policy production --format FORMAT -o verify.FORMAT

Its wall time and peak RSS (from wait4) are reported. Target: at most 200 MB peak RSS for 1M
records (verify streams; memory must not grow with the log).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nomyo_audit.audit import AuditLog
from nomyo_audit.audit._merkle import leaf_hash
from nomyo_audit.audit._records import build_record

sys.path.insert(0, str(Path(__file__).resolve().parent))
from audit_bench import template_record  # a sibling script, not a package

CLI = [sys.executable, "-m", "nomyo_audit.cli._main"]
TARGET_MB = 200


def build_log(path: Path, count: int) -> None:
    """``count`` records received at one whole second (so the time column is exact), in bulk."""
    request, response = template_record()
    with AuditLog(path) as log:  # the schema, the digest salt, the origin
        salt = log.salt
    received = float(int(time.time()))
    template = build_record(
        seq=0,
        timestamp=received,
        salt=salt,
        payload_id="pid-0",
        router="https://router.example",
        server_key="ab" * 32,
        model="qwen3-8b",
        security_tier="high",
        outcome="ok",
        request=request,
        response=response,
    )
    insert = "INSERT INTO records (seq, payload_id, time, data, leaf) VALUES (?, ?, ?, ?, ?)"
    db = sqlite3.connect(path)
    db.execute("BEGIN")
    rows = []
    for seq in range(count):
        data = template.replace(b'"seq":0,', b'"seq":%d,' % seq).replace(b'"pid-0"', b'"pid-%d"' % seq)
        rows.append((seq, f"pid-{seq}", received, data, leaf_hash(data)))
        if len(rows) == 10_000:
            db.executemany(insert, rows)
            rows.clear()
    db.executemany(insert, rows)
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def run_verify(log: Path, fmt: str, output: Path) -> dict[str, float]:
    """The real CLI in a child process on one core: wall time, peak RSS, exit status, summary."""
    command = [
        *CLI,
        "verify",
        "--log",
        str(log),
        "--policy",
        "production",
        "--format",
        fmt,
        "-o",
        str(output),
    ]
    start = time.perf_counter()
    proc = subprocess.Popen(
        ["taskset", "-c", "0", *command], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    stderr = proc.stderr.read() if proc.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):  # 1: the policy denied some records, still a complete run
        raise SystemExit(f"{' '.join(command)} exited {code}: {stderr[-800:]}")
    summary = [line for line in stderr.splitlines() if " verified: " in line]
    return {
        "seconds": elapsed,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "exit": code,
        "output_mb": output.stat().st_size / 2**20,
        "summary": summary[-1] if summary else "",
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--formats", default="junit,json", help="comma-separated verify --format values")
    parser.add_argument("--dir", type=Path, help="work directory (default: a temporary one)")
    args = parser.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="nomyo-audit-verify-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    log = work / "large.db"
    if not log.exists():
        start = time.perf_counter()
        build_log(log, args.records)
        print(f"built {args.records:,} records in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    results: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "records": args.records,
        "db_mb": log.stat().st_size / 2**20,
    }
    for fmt in args.formats.split(","):
        results[fmt] = run_verify(log, fmt, work / f"verify.{fmt}")
    print(json.dumps(results, indent=2))
    for fmt in args.formats.split(","):
        r = results[fmt]
        assert isinstance(r, dict)
        print(
            f"verify --log --format {fmt} -o FILE: {args.records:,} records in {r['seconds']:.0f} s "
            f"({args.records / r['seconds']:,.0f}/s), peak RSS {r['peak_rss_mb']:.0f} MB "
            f"(target <= {TARGET_MB} MB)"
        )


if __name__ == "__main__":
    main()
