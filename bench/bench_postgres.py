"""The fleet audit store (issue 16): PostgreSQL and SQLite side by side, in one run.

    .venv/bin/python bench/bench_postgres.py [--writers 16] [--threads 4] [--seconds 10]
                                             [--verify-records 1000000] [--json out.json]

A throw-away PostgreSQL server (tests/postgres_server.py) with PostgreSQL's durable defaults
(fsync=on, synchronous_commit=on: an acknowledged append is on disk) on 127.0.0.1.

* appends: --writers processes, each with --threads appending threads (as a service's request
  handlers would), append realistic records to ONE log for --seconds after all are ready:
  records built the way the client builds them (build_record over a reply whose _metadata
  carries a TPM quote from the software attester and the client's verdict, detach_logs per
  append; about 3.4 KB each; --with-logs adds the 40 KB event log and 1 MB IMA list, kept once
  by digest). Each append is timed from the call to its acknowledgement (durable, with its
  position). Reported: acknowledged appends/s in aggregate, p50/p99 latency. The same processes,
  threads and records append to one SQLite file (WAL, synchronous=FULL) in the same run.
* verify: --verify-records records bulk-loaded (bulk_load, as `log migrate` does) with a signed
  checkpoint every 100,000, then `nomyo-audit log verify --key` timed in its own process
  pinned to one core (the database server has the other), with its peak RSS (wait4); the same
  records in SQLite, verified the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

import audit_bench  # noqa: E402  (the realistic record of the audit log benchmark)
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from postgres_server import PostgresServer  # noqa: E402

from nomyo_audit.audit import AuditLog, StoredCheckpoint, StoredRecord  # noqa: E402
from nomyo_audit.audit._blobs import detach_logs  # noqa: E402
from nomyo_audit.audit._fields import TIME_COLUMN_EXACT, record_fields  # noqa: E402
from nomyo_audit.audit._merkle import Frontier, leaf_hash  # noqa: E402
from nomyo_audit.audit._note import Checkpoint, sign_checkpoint  # noqa: E402
from nomyo_audit.audit._stores import open_store  # noqa: E402

CLI = audit_bench.CLI
CHECKPOINT_EVERY = 100_000
ORIGIN = "bench.example/fleet"


# -- appends ---------------------------------------------------------------------------------


def writer_child(location: str, key_file: str, threads: int, seconds: float, name: str, logs: bool) -> None:
    """One writer process: say ready, read the start time, append from ``threads`` threads, report."""
    audit_bench.WITH_LOGS = logs
    request, response = audit_bench.template_record()
    replies = [audit_bench.fresh_copy(response) for _ in range(threads)]
    key = serialization.load_pem_private_key(Path(key_file).read_bytes(), None)
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors: list[str] = []
    with AuditLog(location, key=key) as log:  # type: ignore[arg-type]
        print("ready", flush=True)
        start = float(sys.stdin.readline())
        end = start + seconds

        def work(t: int) -> None:
            mine, reply = latencies[t], replies[t]
            while time.time() < start:
                time.sleep(0.001)
            n = 0
            while time.time() < end:
                began = time.perf_counter()
                payload_id = f"{name}-{t}-{n}"
                n += 1
                metadata, blobs = detach_logs(reply["_metadata"])  # what the client's record_call does
                build = audit_bench.record_builder(request, reply, payload_id, metadata)
                try:
                    log.append(payload_id, build, blobs=blobs)
                except Exception as exc:  # counted, never hidden
                    errors.append(f"{type(exc).__name__}: {str(exc)[:160]}")
                    continue
                if time.time() <= end:  # acknowledged within the window
                    mine.append((time.perf_counter() - began) * 1000)

        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for worker in workers:
            worker.start()
        while time.time() < start:
            time.sleep(0.001)
        before = resource.getrusage(resource.RUSAGE_SELF)
        for worker in workers:
            worker.join()
        after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    print(json.dumps({"latencies_ms": [x for per in latencies for x in per], "errors": errors, "cpu": cpu}),
          flush=True)


def server_cpu_seconds(postmaster: int) -> float:
    """CPU seconds of the PostgreSQL server so far: the postmaster, its live and its reaped children."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(stat.parent.name), int(fields[1])
        if pid == postmaster:
            total += sum(int(x) for x in fields[11:15]) / tick  # utime, stime, cutime, cstime
        elif ppid == postmaster:
            total += sum(int(x) for x in fields[11:13]) / tick
    return total


def run_writers(
    location: str, key_file: Path, args: argparse.Namespace, server_pid: int | None
) -> dict[str, Any]:
    server_before = server_cpu_seconds(server_pid) if server_pid else 0.0
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "writer-child", location, str(key_file), str(args.threads),
             str(args.seconds), f"w{n}", "1" if args.with_logs else "0"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        for n in range(args.writers)
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", "a writer did not start"
    start = time.time() + 0.5
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(f"{start}\n")
        proc.stdin.flush()
    latencies: list[float] = []
    errors: list[str] = []
    writer_cpu = 0.0
    for proc in procs:
        assert proc.stdout is not None
        out, _ = proc.communicate(timeout=args.seconds + 300)
        result = json.loads(out.strip().splitlines()[-1])
        writer_cpu += result["cpu"]
        latencies += result["latencies_ms"]
        errors += result["errors"]
    server_cpu = server_cpu_seconds(server_pid) - server_before if server_pid else None
    latencies.sort()
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "acknowledged": len(latencies),
        "per_second": len(latencies) / args.seconds,
        "p50_ms": q[49],
        "p99_ms": q[98],
        "max_ms": latencies[-1],
        "errors": len(errors),
        # CPU while appending (writers: from the start of the window to the last append's end;
        # server: the whole phase, connection set-up included), per acknowledged append
        "writer_cpu_us_per_append": writer_cpu / max(len(latencies), 1) * 1e6,
        "server_cpu_us_per_append": None if server_cpu is None else server_cpu / max(len(latencies), 1) * 1e6,
        "error_kinds": sorted(set(errors))[:10],
    }


# -- verify ----------------------------------------------------------------------------------


def large_log(count: int, key: Ed25519PrivateKey) -> tuple[dict[str, bytes], list[StoredCheckpoint], bytes]:
    """The meta and checkpoints of a ``count``-record log of one realistic record (first pass)."""
    audit_bench.WITH_LOGS = False
    request, response = audit_bench.template_record()
    metadata, _ = detach_logs(response["_metadata"])
    salt = os.urandom(32)
    sample = audit_bench.record_builder(request, response, 0, metadata)(0, salt)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    meta = {"salt": salt, "origin": ORIGIN.encode(), "public_key": raw, "time_column": TIME_COLUMN_EXACT}
    from nomyo_audit.audit._records import rfc3339
    from nomyo_audit.audit._verification import SALT_EXTENSION, TIME_EXTENSION, salt_commitment

    frontier, checkpoints, now = Frontier(), [], time.time()
    extensions = (f"{SALT_EXTENSION} {salt_commitment(salt)}", f"{TIME_EXTENSION} {rfc3339(now)}")
    for record in records_of(sample, count):
        frontier.append(record.leaf)
        if frontier.size % CHECKPOINT_EVERY == 0 or frontier.size == count:
            note = sign_checkpoint(Checkpoint(ORIGIN, frontier.size, frontier.root(), extensions), key)
            checkpoints.append(StoredCheckpoint(frontier.size, frontier.root(), note, now))
    return meta, checkpoints, sample


def records_of(sample: bytes, count: int) -> Iterator[StoredRecord]:
    moment = record_fields(sample)[1]  # type: ignore[index]
    for seq in range(count):
        data = sample.replace(b'"seq":0,', b'"seq":%d,' % seq).replace(b"pid-0", b"pid-%d" % seq)
        yield StoredRecord(seq, f"pid-{seq}", moment, data, leaf_hash(data))


def load_and_verify(location: str, meta: dict[str, bytes], checkpoints: list[StoredCheckpoint], sample: bytes,
                    count: int, key_pub: Path) -> dict[str, Any]:
    store = open_store(location)
    started = time.perf_counter()
    store.bulk_load(meta, records_of(sample, count), checkpoints, [])  # type: ignore[attr-defined]
    loaded = time.perf_counter() - started
    getattr(store, "close", lambda: None)()
    return {"records": count, "load_seconds": loaded,
            **audit_bench.timed([*CLI, "log", "verify", "--log", location, "--key", str(key_pub)])}


# -- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--writers", type=int, default=16)
    parser.add_argument("--threads", type=int, default=4, help="appending threads per writer process")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--verify-records", type=int, default=1_000_000)
    parser.add_argument(
        "--with-logs", action="store_true", help="replies carry a 40 KB event log and 1 MB IMA list"
    )
    parser.add_argument("--skip", choices=["appends", "verify"], action="append", default=[])
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the server and clean up when killed
    work = Path(tempfile.mkdtemp(prefix="nomyo-pg-bench-"))
    key = Ed25519PrivateKey.generate()
    key_file, key_pub = work / "audit.key", work / "audit.key.pub"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo))
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "writers": args.writers, "threads_per_writer": args.threads, "seconds": args.seconds,
    }
    with PostgresServer(durable=True, settings={"max_connections": "400"}) as server:
        results["postgres_settings"] = "defaults (fsync=on, synchronous_commit=on), max_connections=400"
        if "appends" not in args.skip:
            url = server.create_database("appends")
            AuditLog(url, key=key).close()  # made once, as an operator would
            postmaster = int((server.data_dir / "postmaster.pid").read_text().split()[0])
            results["append_postgres"] = run_writers(url, key_file, args, postmaster)
            sqlite_path = str(work / "appends.db")
            AuditLog(sqlite_path, key=key).close()
            results["append_sqlite"] = run_writers(sqlite_path, key_file, args, None)
        if "verify" not in args.skip:
            meta, checkpoints, sample = large_log(args.verify_records, key)
            results["record_bytes"] = len(sample)
            url = server.create_database("verify")
            results["verify_postgres"] = load_and_verify(
                url, meta, checkpoints, sample, args.verify_records, key_pub
            )
            results["verify_sqlite"] = load_and_verify(str(work / "verify.db"), meta, checkpoints, sample,
                                                       args.verify_records, key_pub)
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    for backend in ("postgres", "sqlite"):
        if (a := results.get(f"append_{backend}")) is not None:
            server = a["server_cpu_us_per_append"]
            print(f"appends {backend}: {a['per_second']:,.0f}/s acknowledged, p50 {a['p50_ms']:.1f} ms, "
                  f"p99 {a['p99_ms']:.1f} ms, errors {a['errors']}; CPU per append: writers "
                  f"{a['writer_cpu_us_per_append']:.0f} us" + (f", server {server:.0f} us" if server else ""))
        if (v := results.get(f"verify_{backend}")) is not None:
            print(f"verify {backend}: {v['records']:,} records in {v['seconds']:.1f} s, "
                  f"peak RSS {v['peak_rss_mb']:.0f} MB (load {v['load_seconds']:.0f} s)")


if __name__ == "__main__":
    if len(sys.argv) == 8 and sys.argv[1] == "writer-child":
        location, key_file, threads, seconds, name, logs = sys.argv[2:8]
        writer_child(location, key_file, int(threads), float(seconds), name, logs == "1")
    else:
        main()
