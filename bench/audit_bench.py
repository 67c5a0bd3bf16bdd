"""Audit log at scale: durable appends, log verify over 1M records, a report over 100k records.

    .venv/bin/python bench/audit_bench.py [--verify-records 1000000] [--report-records 100000]

Records are realistic: a full record as the client writes it, with a TPM quote from the
software attester in its _metadata (about 3.4 KB each). The reply also carries a TCG event
log (40 KB) and an IMA list (1 MB), the same ones reply after reply as from one machine; the
record keeps them by digest and the log's blobs table keeps their bytes once (_blobs.detach_logs,
as the client does); --no-logs leaves them out (the records of before issue 14).
Each phase runs in its own process,
pinned to one core; its wall time and peak RSS (from wait4) are reported.

* append: AuditLog.append, one BEGIN IMMEDIATE transaction per record, WAL, synchronous=FULL;
* verify: `nomyo-audit log verify` over a log of --verify-records records with checkpoints;
* report: `nomyo-audit report --format html,md,json,junit,csv` over --report-records records.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nomyo_audit.attest._attester import TPMAttester
from nomyo_audit.attest._software import SoftwareTPM
from nomyo_audit.audit import AuditLog
from nomyo_audit.audit._blobs import detach_logs
from nomyo_audit.audit._fields import record_fields
from nomyo_audit.audit._merkle import Frontier, leaf_hash
from nomyo_audit.audit._note import Checkpoint, sign_checkpoint
from nomyo_audit.audit._records import build_record
from nomyo_audit.tpm._binding import response_binding, response_content_digest
from nomyo_audit.tpm._measurements import measure_demo_boot
from nomyo_audit.tpm._verify import verify_attestation

CLI = [sys.executable, "-m", "nomyo_audit.cli._main"]


EVENT_LOG_BYTES, IMA_LOG_BYTES = 40_000, 1_000_000
WITH_LOGS = "--no-logs" not in sys.argv


def template_record() -> tuple[dict, dict]:
    tpm = SoftwareTPM()
    measure_demo_boot(tpm)
    response = {
        "id": "chatcmpl-x",
        "object": "chat.completion",
        "model": "qwen3-8b",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "x" * 400}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 50, "completion_tokens": 100, "total_tokens": 150},
    }
    digest = response_content_digest(response)
    block = TPMAttester(tpm).evidence(response_binding("PAYLOAD-ID", digest))
    verdict = verify_attestation(block, "PAYLOAD-ID", content_digest=digest)
    response["_metadata"] = {
        "payload_id": "PAYLOAD-ID",
        "processed_at": int(time.time()),
        "is_encrypted": True,
        "security_tier": "high",
        "memory_protection": {
            "platform": "linux",
            "memory_locking": True,
            "secure_zeroing": True,
            "core_dump_prevention": True,
        },
        "cuda_device": {"available": False, "device_hash": None},
        "tpm_attestation": block,
        "verification": verdict.to_dict(),
    }
    if WITH_LOGS:
        block["event_log_b64"] = base64.b64encode(os.urandom(EVENT_LOG_BYTES)).decode()
        block["ima_log_b64"] = base64.b64encode(os.urandom(IMA_LOG_BYTES)).decode()
    return {"model": "qwen3-8b", "messages": [{"role": "user", "content": "q" * 300}]}, response


def record_builder(request: dict, response: dict, n: int, metadata: dict | None = None):
    def build(seq: int, salt: bytes) -> bytes:
        return build_record(
            seq=seq,
            timestamp=time.time(),
            salt=salt,
            payload_id=f"pid-{n}",
            router="https://router.example",
            server_key="ab" * 32,
            model="qwen3-8b",
            security_tier="high",
            outcome="ok",
            request=request,
            response=response,
            metadata=metadata,
        )

    return build


def fresh_copy(response: dict) -> dict:
    """The reply as a new parse would give it: the same logs, in new string objects."""
    block = dict(response["_metadata"]["tpm_attestation"])
    for name in ("event_log_b64", "ima_log_b64"):
        if name in block:
            block[name] = (block[name] + " ")[:-1]
    return {**response, "_metadata": {**response["_metadata"], "tpm_attestation": block}}


def phase_append(path: Path, count: int) -> None:
    os.sched_setaffinity(0, {0})
    request, response = template_record()
    with AuditLog(path) as log:
        replies = [fresh_copy(response), fresh_copy(response)]  # equal logs, distinct strings, as parsed
        start = time.perf_counter()
        for n in range(count):
            reply = replies[n % 2]
            metadata, blobs = detach_logs(reply["_metadata"])  # what the client's record_call does
            log.append(f"pid-{n}", record_builder(request, reply, n, metadata), blobs=blobs)
        elapsed = time.perf_counter() - start
    print(
        json.dumps(
            {
                "appends": count,
                "seconds": elapsed,
                "per_second": count / elapsed,
                "record_bytes": len(
                    record_builder(request, response, 0, detach_logs(response["_metadata"])[0])(0, bytes(32))
                ),
            }
        )
    )


def build_large_log(path: Path, count: int, key: Ed25519PrivateKey) -> None:
    """Write ``count`` realistic records quickly (one transaction), with checkpoints every 100k."""
    request, response = template_record()
    metadata, blobs = detach_logs(response["_metadata"])
    with AuditLog(path, key=key) as log:  # creates the schema, salt and origin, and keeps the blobs
        log.append("pid-0", record_builder(request, response, 0, metadata), blobs=blobs)
    sample = record_builder(request, response, 0, metadata)(0, bytes(32))
    moment = record_fields(sample)[1]  # type: ignore[index]
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    frontier = Frontier()
    now = time.time()
    origin = db.execute("SELECT value FROM meta WHERE key = 'origin'").fetchone()[0].decode()
    db.execute("BEGIN")
    db.execute("DELETE FROM records")
    db.execute("DELETE FROM checkpoints")
    db.execute("DELETE FROM meta WHERE key = 'frontier'")
    rows = []
    for seq in range(count):
        data = sample.replace(b'"seq":0,', b'"seq":%d,' % seq).replace(b"pid-0", b"pid-%d" % seq)
        leaf = leaf_hash(data)
        frontier.append(leaf)
        rows.append((seq, f"pid-{seq}", moment, data, leaf))  # the time column mirrors the record
        if len(rows) == 10_000:
            db.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?)", rows)
            rows.clear()
        if (seq + 1) % 100_000 == 0 or seq + 1 == count:
            db.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?)", rows)
            rows.clear()
            note = sign_checkpoint(Checkpoint(origin, frontier.size, frontier.root()), key)
            db.execute(
                "INSERT INTO checkpoints (size, root, note, created) VALUES (?, ?, ?, ?)",
                (frontier.size, frontier.root(), note, now),
            )
    db.execute("INSERT OR REPLACE INTO meta VALUES ('frontier', ?)", (frontier.to_bytes(),))
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def timed(command: list[str]) -> dict[str, float]:
    start = time.perf_counter()
    proc = subprocess.Popen(
        ["taskset", "-c", "0", *command], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed: {stderr[-500:]}")
    return {"seconds": elapsed, "peak_rss_mb": usage.ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--appends", type=int, default=3000)
    parser.add_argument("--append-runs", type=int, default=3, help="append runs; the median is reported")
    parser.add_argument("--verify-records", type=int, default=1_000_000)
    parser.add_argument("--report-records", type=int, default=100_000)
    parser.add_argument("--dir", type=Path, help="work directory (default: a temporary one)")
    args = parser.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="nomyo-audit-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    from cryptography.hazmat.primitives import serialization

    (work / "key.pub").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"}

    runs = []
    for run in range(args.append_runs):  # a fresh log each time; the disk's flush time varies
        append = subprocess.run(
            [sys.executable, __file__, "append-child", str(work / f"append-{run}.db"), str(args.appends)]
            + ([] if WITH_LOGS else ["--no-logs"]),
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(json.loads(append.stdout))
    runs.sort(key=lambda r: r["per_second"])
    results["append"] = {**runs[len(runs) // 2], "runs_per_second": [r["per_second"] for r in runs]}

    build_large_log(work / "large.db", args.verify_records, key)
    results["verify"] = {
        "records": args.verify_records,
        "db_mb": (work / "large.db").stat().st_size / 2**20,
        **timed([*CLI, "log", "verify", "--log", str(work / "large.db"), "--key", str(work / "key.pub")]),
    }

    build_large_log(work / "report.db", args.report_records, key)
    results["report"] = {
        "records": args.report_records,
        **timed(
            [
                *CLI,
                "report",
                "--log",
                str(work / "report.db"),
                "--format",
                "html,md,json,junit,csv",
                "-o",
                str(work / "report"),
            ]
        ),
    }

    print(json.dumps(results, indent=2))
    a, v, r = results["append"], results["verify"], results["report"]
    print(
        f"\nappend: {a['per_second']:,.0f} durable appends/s on one core, median of "
        f"{', '.join(f'{r:,.0f}' for r in a['runs_per_second'])} ({a['record_bytes']} B records) "
        "(target >= 2,000)"
    )
    print(
        f"log verify: {v['records']:,} records in {v['seconds']:.1f} s, peak RSS {v['peak_rss_mb']:.0f} MB "
        "(target <= 20 s)"
    )
    print(
        f"report: {r['records']:,} records in {r['seconds']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB "
        "(target <= 10 s, <= 500 MB)"
    )


if __name__ == "__main__":
    if "--no-logs" in sys.argv:
        sys.argv.remove("--no-logs")
    if len(sys.argv) == 4 and sys.argv[1] == "append-child":
        phase_append(Path(sys.argv[2]), int(sys.argv[3]))
    else:
        main()
