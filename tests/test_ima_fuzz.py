"""Fuzz both IMA parsers and the policy reader: mutated or truncated input is EventLogError or a success."""

from __future__ import annotations

import io
import random
from pathlib import Path

from nomyo_audit.errors import EventLogError
from nomyo_audit.eventlog import (
    ImaPolicy,
    iter_ima_log,
    match_ima_log,
    parse_ima_log,
    replay_ima_log,
)

FIXTURES = Path(__file__).parent / "fixtures" / "ima"
SEEDS = {
    "binary": (FIXTURES / "ibmtss_imatest.log").read_bytes(),
    "ascii": (FIXTURES / "keylime_signatures.txt").read_bytes()
    + (FIXTURES / "keylime_keyrings.txt").read_bytes(),
}


def mutate(rng: random.Random, data: bytes) -> bytes:
    buffer = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.random()
        at = rng.randrange(max(1, len(buffer)))
        if choice < 0.4 and buffer:
            buffer[at] = rng.randrange(256)
        elif choice < 0.6:
            del buffer[at:]
        elif choice < 0.8:
            buffer[at:at] = rng.choice(
                [b"\xff\xff\xff\x7f", b"\x00\x00\x00\x00", b" ", b":", b"\n", b"\x10\x00"]
            )
        else:
            del buffer[at : at + rng.randint(1, 8)]
    return bytes(buffer)


def exercise(data: bytes, fmt: str) -> None:
    try:
        log = parse_ima_log(data, fmt)  # type: ignore[arg-type]
        for bank in ("sha1", "sha256"):
            try:
                replay_ima_log(log, bank)
            except EventLogError as exc:
                assert exc.code == "ima_unknown_template"
        match_ima_log(log, {"sha1": {10: bytes(20)}, "sha256": {10: bytes(32)}})
    except EventLogError as exc:
        assert exc.code.startswith("ima_"), exc.code
    try:
        for _ in iter_ima_log(io.BytesIO(data), fmt):  # type: ignore[arg-type]
            pass
    except EventLogError as exc:
        assert exc.code.startswith("ima_"), exc.code


def test_fuzz_both_parsers_with_a_fixed_seed() -> None:
    rng = random.Random(14)
    for fmt, seed in SEEDS.items():
        for _ in range(1500):
            exercise(mutate(rng, seed), rng.choice([fmt, "auto"]))


def test_every_truncation_of_a_binary_list_is_ima_truncated_or_a_shorter_list() -> None:
    data = SEEDS["binary"]
    full = len(parse_ima_log(data).entries)
    for end in range(len(data)):
        try:
            assert len(parse_ima_log(data[:end], "binary").entries) < full
        except EventLogError as exc:
            assert exc.code in ("ima_truncated", "ima_malformed"), (end, exc.code)


def test_fuzz_policy_reader() -> None:
    rng = random.Random(14)
    seed = (FIXTURES / "keylime_runtime_policy_data.json").read_bytes()
    for _ in range(500):
        try:
            ImaPolicy.from_keylime(mutate(rng, seed))
        except EventLogError as exc:
            assert exc.code == "ima_policy_invalid"


def test_a_huge_declared_length_in_a_stream_reads_nothing_big() -> None:
    entry = b"\x0a\x00\x00\x00" + bytes(20) + b"\x06\x00\x00\x00ima-ng" + b"\x00\x00\x00\x7f"
    try:
        list(iter_ima_log(io.BytesIO(entry)))
    except EventLogError as exc:
        assert exc.code == "ima_too_large"
    else:
        raise AssertionError("a 2 GiB template data length must be refused before reading")
