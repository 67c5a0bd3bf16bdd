"""The cost of the logs a reply carries, per verification, cold and cached, side by side in one run.

    .venv/bin/python bench/eventlog_bench.py [--seconds 2] [--events 100] [--ima 10000] [--json out.json]

The software TPM measures a firmware-like TCG event log of ``--events`` events into PCRs 0-9 and
an IMA list of ``--ima`` entries (a boot aggregate and files) into PCR 10, through the router's
measuring API, then quotes sha256:0-10 (RSA-2048). Measured on one core:

* ``verify_attestation`` of the same quote without the logs (the floor);
* with the logs, cache warm: what a router sending the same logs with every reply costs (SHA-256
  of each field as sent, look up (digest, quoted values), copy the facts);
* with the logs, cold: the cache cleared before each call (parse, replay, match, summarize);
* the cold parts one by one: each parser alone, each replay and match alone.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import platform
import struct
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from verifier_bench import rate as verifier_rate

from nomyo_audit.attest._attester import TPMAttester
from nomyo_audit.attest._software import SoftwareTPM
from nomyo_audit.eventlog import (
    EV_EFI_BOOT_SERVICES_APPLICATION,
    EV_EFI_PLATFORM_FIRMWARE_BLOB,
    EV_EFI_VARIABLE_DRIVER_CONFIG,
    EV_POST_CODE,
    EV_SEPARATOR,
    match_event_log,
    match_ima_log,
    parse_event_log,
    parse_ima_log,
)
from nomyo_audit.tpm import verify_attestation
from nomyo_audit.tpm._measured import _CACHE

NONCE = b"eventlog-bench"
BANKS = ("sha1", "sha256", "sha384")
FIELDS = ("event_log_b64", "ima_log_b64")


def rate(function: Callable[[], object], seconds: float) -> float:
    """verifier_bench's rate, reading the clock after every call (a cold call takes milliseconds)."""
    return verifier_rate(function, seconds, batch=1)


def measured_machine(events: int, ima: int) -> dict[str, Any]:
    """Evidence with a ``events``-event firmware log and an ``ima``-entry IMA list."""
    attester = TPMAttester(SoftwareTPM(), "sha256:" + ",".join(map(str, range(11))))
    log = attester.measurements
    secure_boot = bytes(16) + struct.pack("<QQ", 10, 1) + "SecureBoot".encode("utf-16-le") + b"\x01"
    log.extend_event(7, EV_EFI_VARIABLE_DRIVER_CONFIG, secure_boot)
    for pcr in range(10):
        log.extend_event(pcr, EV_SEPARATOR, bytes(4))
    for n in range(events - 11):
        digests = {bank: hashlib.new(bank, b"image %d" % n).digest() for bank in BANKS}
        kind = (EV_EFI_PLATFORM_FIRMWARE_BLOB, EV_POST_CODE, EV_EFI_BOOT_SERVICES_APPLICATION)[n % 3]
        log.extend_event((0, 2, 4)[n % 3], kind, struct.pack("<QQ", n << 20, 1 << 20), digests)
    log.extend_ima_boot_aggregate()
    for n in range(ima - 1):
        path = f"/usr/lib/python3/dist-packages/module_{n}.py"
        log.extend_ima_file(path, hashlib.sha256(b"%d" % n).digest())
    return attester.evidence(NONCE)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--ima", type=int, default=10_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core

    block = measured_machine(args.events, args.ima)
    plain = {k: v for k, v in block.items() if k not in FIELDS}
    tcg_bytes = base64.b64decode(block["event_log_b64"])
    ima_bytes = base64.b64decode(block["ima_log_b64"])
    verdict = verify_attestation(block, None, expected_nonce=NONCE)
    assert verdict.passed, verdict.failures
    assert verdict.finding("event_log").code == "event_log_matches"
    assert verdict.finding("ima_log").code == "ima_log_matches"
    assert verdict.facts["ima"]["entries"] == args.ima
    quoted = {"sha256": {int(i): bytes.fromhex(v) for i, v in verdict.facts["pcr_values"]["sha256"].items()}}
    tcg, ima = parse_event_log(tcg_bytes), parse_ima_log(ima_bytes, "binary")
    assert len(tcg.events) - 1 == args.events and len(ima.entries) == args.ima

    seconds = args.seconds

    def cold() -> object:
        _CACHE.clear()
        return verify_attestation(block, None, expected_nonce=NONCE)

    firmware_only = {k: v for k, v in block.items() if k != "ima_log_b64"}

    def cold_firmware() -> object:
        _CACHE.clear()
        return verify_attestation(firmware_only, None, expected_nonce=NONCE)

    rows = {
        "verify, no logs": rate(lambda: verify_attestation(plain, None, expected_nonce=NONCE), args.seconds),
        "verify with both logs, cached": rate(
            lambda: verify_attestation(block, None, expected_nonce=NONCE), args.seconds
        ),
        "verify with both logs, cold": rate(cold, args.seconds),
        "verify with the event log only, cached": rate(
            lambda: verify_attestation(firmware_only, None, expected_nonce=NONCE), seconds
        ),
        "verify with the event log only, cold": rate(cold_firmware, seconds),
        "  SHA-256 of both fields as sent (the cache key, paid on a hit)": rate(
            lambda: [hashlib.sha256(block[f].encode()).digest() for f in FIELDS], seconds
        ),
        "  base64 decode of both fields (paid cold)": rate(
            lambda: [base64.b64decode(block[f]) for f in FIELDS], seconds
        ),
        f"  parse_event_log ({args.events} events)": rate(lambda: parse_event_log(tcg_bytes), seconds),
        "  match_event_log": rate(lambda: match_event_log(tcg, quoted), seconds),
        f"  parse_ima_log ({args.ima} entries)": rate(lambda: parse_ima_log(ima_bytes, "binary"), seconds),
        "  match_ima_log": rate(lambda: match_ima_log(ima, quoted), args.seconds),
    }
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores (pinned to one), "
        f"Python {platform.python_version()}"
    )
    print(
        f"evidence: software TPM, RSA-2048, sha256:0-10; event log {len(tcg_bytes):,} bytes "
        f"({args.events} events, banks {', '.join(tcg.banks)}), IMA list {len(ima_bytes):,} bytes "
        f"({args.ima} entries)\n"
    )
    print("| measured | per second | ms each |\n|---|---:|---:|")
    for name, value in rows.items():
        print(f"| {name} | {value:,.1f} | {1e3 / value:,.3f} |")
    floor = rows["verify, no logs"]
    for name in [n for n in rows if n.startswith("verify with")]:
        added = 1e3 / rows[name] - 1e3 / floor
        print(f"{name}: +{added:.3f} ms over a verification without logs")
    _CACHE.clear()
    tracemalloc.start()
    held = tracemalloc.get_traced_memory()[0]
    verify_attestation(block, None, expected_nonce=NONCE)
    held = tracemalloc.get_traced_memory()[0] - held
    tracemalloc.stop()
    print(f"memory the cache holds for these two logs: {held / 2**20:.1f} MiB")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "python": sys.version}, indent=2))


if __name__ == "__main__":
    main()
