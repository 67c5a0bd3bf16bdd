"""One AIK, many threads: what the verifier caches per AIK never carries one quote's facts into another's.

The verifier caches everything derived from an AIK alone (its key, name, findings), because a router
signs every response with the same AIK. A server verifies responses on many threads, so these tests
verify different quotes against one AIK at once, with the interpreter switching threads as often as
it can, and check each verdict is the one that quote deserves.
"""

from __future__ import annotations

import base64
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from nomyo_audit.attest import SoftwareTPM, TPMAttester
from nomyo_audit.tpm import (
    response_binding,
    response_content_digest,
    verify_attestation,
)

THREADS = 8
ROUNDS = 3


@pytest.fixture(autouse=True)
def switch_threads_often() -> Iterator[None]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def _cases(tpm: SoftwareTPM, tag: str) -> list[tuple[dict[str, Any], str, bytes, dict[str, str], str]]:
    """(evidence, payload_id, content digest, expected failing checks, expected derivation) per quote."""
    cases = []
    for i in range(12):
        pid = f"{tag}-{i}"
        completion = {"id": pid, "choices": [{"message": {"content": "x" * i}}]}
        digest = response_content_digest(completion)
        banks = ("sha256:0,7,10", "sha256:0,1", "sha1:0+sha256:7")[i % 3]
        block = TPMAttester(tpm, banks).evidence(response_binding(pid, digest))
        kind = i % 4
        if kind == 0:  # genuine
            cases.append((block, pid, digest, {}, "nomyo-audit-v1"))
        elif kind == 1:  # a PCR value changed after the quote
            bank = next(iter(block["pcr_values"]))
            index = next(iter(block["pcr_values"][bank]))
            values = {b: dict(v) for b, v in block["pcr_values"].items()}
            values[bank][index] = "ab" * (len(values[bank][index]) // 2)
            cases.append(
                ({**block, "pcr_values": values}, pid, digest, {"pcr_digest": "pcr_digest_mismatch"}, "")
            )
        elif kind == 2:  # the quote of another request
            cases.append((block, pid + "-other", digest, {"nonce_binding": "nonce_mismatch"}, ""))
        else:  # the same quote as a TPM2B_ATTEST
            raw = base64.b64decode(block["quote_b64"])
            sized = base64.b64encode(len(raw).to_bytes(2, "big") + raw).decode()
            cases.append(({**block, "quote_b64": sized}, pid, digest, {}, "nomyo-audit-v1"))
    return cases


@pytest.mark.parametrize("aik", ["ecc256-ecdsa", "rsa2048-rsassa"])
def test_threads_verifying_different_quotes_against_one_aik_get_their_own_verdicts(aik):
    for round_ in range(ROUNDS):
        tpm = SoftwareTPM(aik)  # a fresh AIK each round: the threads race to fill its cache
        tpm.extend("sha256", 0, f"round {round_}".encode())
        cases = _cases(tpm, f"{aik}-{round_}")
        start = threading.Barrier(THREADS)

        def run(offset: int, cases=cases, start=start) -> list[tuple[int, Any]]:
            start.wait()
            order = cases[offset:] + cases[:offset]  # each thread starts with a different quote
            return [
                ((offset + n) % len(cases), verify_attestation(block, pid, content_digest=digest))
                for n, (block, pid, digest, _, _) in enumerate(order * 4)
            ]

        with ThreadPoolExecutor(THREADS) as pool:
            results = [r for rs in pool.map(run, range(THREADS)) for r in rs]

        assert len(results) == THREADS * len(cases) * 4
        for index, verdict in results:
            block, pid, _, expected, derivation = cases[index]
            assert {f.check: f.code for f in verdict.failures} == expected, (index, verdict.failures)
            assert verdict.payload_id == pid
            assert verdict.facts["pcr_banks"] == block["pcr_banks"]
            assert verdict.facts["quote_encoding"] == ("TPM2B_ATTEST" if index % 4 == 3 else "TPMS_ATTEST")
            if expected:
                assert "nonce_derivation" not in verdict.facts or "pcr_values" not in verdict.facts
            else:
                assert verdict.facts["pcr_values"] == block["pcr_values"]
                assert verdict.facts["nonce_derivation"] == derivation


def test_a_verdicts_facts_are_its_own():
    """Changing one verdict's facts changes no other verdict, and no later one."""
    tpm = SoftwareTPM("ecc256-ecdsa")
    (block, pid, digest, _, _), *_ = _cases(tpm, "own")
    first = verify_attestation(block, pid, content_digest=digest)
    second = verify_attestation(block, pid, content_digest=digest)
    first.facts["aik_type"] = "changed"
    first.facts["pcr_values"]["sha256"]["0"] = "changed"
    third = verify_attestation(block, pid, content_digest=digest)
    assert second.facts["aik_type"] == third.facts["aik_type"] == "ecc"
    assert second.facts["pcr_values"] == third.facts["pcr_values"] == block["pcr_values"]
