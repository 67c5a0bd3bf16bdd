"""The hot paths of two revisions of nomyo-audit, side by side in one run.

    .venv/bin/python bench/revisions_bench.py BASE_REV [--rounds 7] [--seconds 1.5]

A refactor must not slow the product down. This checks out BASE_REV into a temporary git
worktree and times, for it and for the working tree, in separate processes pinned to one core
and interleaved round by round (so machine noise hits both alike), each hot path a user pays
for on every request:

* ``verify``: ``verify_attestation`` of one RSA-2048 and one ECC P-256 quote (software TPM);
* ``policy``: ``evaluate`` of the shipped production policy over an already made verdict;
* ``record``: building one realistic audit record (``build_record``: canonical JSON, keyed
  digests), which every append pays;
* ``append``: ``AuditLog.append`` with ``synchronous=OFF``, so the code path is timed, not the disk;
* ``log verify``: ``AuditLog.verify`` over 20,000 records.

Each figure is the best round (the least disturbed). Imports are resolved at run time so the
same worker runs the layouts before and after the internal modules were underscored.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

WORKER = r'''
import importlib, json, os, sys, tempfile, time, sqlite3

def first(*names):
    for module, attr in names:
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            continue
    raise ImportError(names)

def api(attr, *modules):
    return first(*[(module, attr) for module in modules])

verify_attestation = api("verify_attestation", "nomyo_audit.tpm", "nomyo_audit.tpm.verify")
SoftwareTPM = api("SoftwareTPM", "nomyo_audit.attest", "nomyo_audit.tpm.software")
TPMAttester = api("TPMAttester", "nomyo_audit.attest", "nomyo_audit.tpm.attester")
binding = api("response_binding", "nomyo_audit.tpm", "nomyo_audit.tpm.binding")
content = api("response_content_digest", "nomyo_audit.tpm", "nomyo_audit.tpm.binding")
measure = api("measure_demo_boot", "nomyo_audit.tpm._measurements", "nomyo_audit.tpm.measurements")
evaluate = api("evaluate", "nomyo_audit.policy")
load_policy = api("load_policy", "nomyo_audit.policy")
build_record = api("build_record", "nomyo_audit.audit", "nomyo_audit.audit.records")
AuditLog = api("AuditLog", "nomyo_audit.audit", "nomyo_audit.audit.log")

SECONDS = float(sys.argv[1])

def rate(fn):
    fn()
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < SECONDS:
        for _ in range(20):
            fn()
        n += 20
    return elapsed / n * 1e6  # microseconds per call

PID = "PAYLOAD-ID"
response = {"id": "chatcmpl-x", "object": "chat.completion", "model": "qwen3-8b",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "x" * 400},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 50, "completion_tokens": 100, "total_tokens": 150}}
digest = content(response)
out = {}
blocks = {}
for kind in ("rsa2048-rsassa", "ecc256-ecdsa"):
    tpm = SoftwareTPM(kind)
    measure(tpm)
    block = TPMAttester(tpm).evidence(binding(PID, digest))
    blocks[kind] = block
    out[f"verify {kind.split('-')[0]}"] = rate(lambda: verify_attestation(block, PID, content_digest=digest))
policy = load_policy("production")
block = blocks["rsa2048-rsassa"]
verdict = verify_attestation(block, PID, content_digest=digest)
metadata = {"payload_id": PID, "processed_at": int(time.time()), "is_encrypted": True,
            "security_tier": "high",
            "memory_protection": {"platform": "linux", "memory_locking": True, "secure_zeroing": True,
                                  "core_dump_prevention": True},
            "cuda_device": {"available": False, "device_hash": None}, "tpm_attestation": block}
now = time.time()
out["policy evaluate"] = rate(lambda: evaluate(policy, metadata, now=now, verdict=verdict))
full = dict(response, _metadata=dict(metadata, verification=verdict.to_dict()))
request = {"model": "qwen3-8b", "messages": [{"role": "user", "content": "q" * 300}]}
salt = os.urandom(32)
def record(seq=0, salt=salt):
    return build_record(seq=seq, timestamp=time.time(), salt=salt, payload_id=PID, router="https://r",
                        server_key="ab" * 32, model="qwen3-8b", security_tier="high", outcome="ok",
                        request=request, response=full, policy=None)
out["record build"] = rate(record)
with tempfile.TemporaryDirectory() as tmp:
    log = AuditLog(os.path.join(tmp, "a.db"))
    db = getattr(log.store, "_db", None)
    if db is not None:
        db.execute("PRAGMA synchronous=OFF")
    out["append (no fsync)"] = rate(lambda: log.append(PID, lambda seq, s: record(seq, s)))
    while log.size < 20000:
        log.append(PID, lambda seq, s: record(seq, s))
    start = time.perf_counter()
    report = log.verify()
    assert report.ok, report.problems
    out["log verify 20k (per record)"] = (time.perf_counter() - start) / log.size * 1e6
    log.close()
print(json.dumps(out))
'''


def run(tree: Path, seconds: float) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    command = [sys.executable, "-c", WORKER, str(seconds)]
    if sys.platform == "linux" and (os.cpu_count() or 1) > 1:
        command = ["taskset", "-c", "1", *command]
    done = subprocess.run(command, env=env, cwd=tree, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"worker failed in {tree}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("base", help="the revision to compare the working tree with")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=1.5, help="time per measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        add = ["git", "worktree", "add", "--detach", "-q", str(base), args.base]
        subprocess.run(add, cwd=REPO, check=True)
        try:
            best: dict[str, dict[str, float]] = {"base": {}, "head": {}}
            for n in range(args.rounds):
                for label, tree in (("base", base), ("head", REPO)) if n % 2 == 0 else (
                    ("head", REPO), ("base", base)):
                    for name, value in run(tree, args.seconds).items():
                        best[label][name] = min(value, best[label].get(name, float("inf")))
                print(f"round {n + 1}/{args.rounds} done", file=sys.stderr)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=REPO, check=False)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"base {args.base} vs working tree, best of {args.rounds} interleaved rounds, microseconds")
    print(f"| {'path':<30} | {'base':>9} | {'head':>9} | {'head/base':>9} |")
    print(f"|{'-' * 32}|{'-' * 11}|{'-' * 11}|{'-' * 11}|")
    for name in best["base"]:
        b, h = best["base"][name], best["head"].get(name, float("nan"))
        print(f"| {name:<30} | {b:>9.2f} | {h:>9.2f} | {h / b:>9.3f} |")


if __name__ == "__main__":
    main()
