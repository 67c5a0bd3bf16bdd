"""ImaLogWriter: the list it writes parses, and a real TPM (swtpm) extended with its digests matches it."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess

import pytest

from nomyo_audit.eventlog import ImaLogWriter, match_ima_log, parse_ima_log, replay_ima_log
from tests.conftest import require

BANKS = ("sha1", "sha256", "sha384")


def pcrs_for(bank: str, seed: bytes) -> dict[int, bytes]:
    return {index: hashlib.new(bank, seed + bytes([index])).digest() for index in range(10)}


def test_written_list_parses_as_ima_ng_and_replays_to_the_returned_digests() -> None:
    writer = ImaLogWriter(BANKS)
    extends = [writer.add_boot_aggregate(pcrs_for("sha256", b"boot"))]
    extends.append(writer.add_file("/usr/lib/modules/evil.ko", hashlib.sha256(b"module").digest()))
    extends.append(writer.add_file("/opt/model/weights.bin", hashlib.sha1(b"w").digest(), "sha1"))
    log = parse_ima_log(writer.to_bytes())
    assert [(e.template_name, e.pcr, e.path, e.digest_algorithm) for e in log.entries] == [
        ("ima-ng", 10, "boot_aggregate", "sha256"),
        ("ima-ng", 10, "/usr/lib/modules/evil.ko", "sha256"),
        ("ima-ng", 10, "/opt/model/weights.bin", "sha1"),
    ]
    assert log.entries[1].file_digest == hashlib.sha256(b"module").digest()
    for entry in log.entries:
        assert hashlib.sha1(entry.template_data).digest() == entry.template_hash
    for bank in BANKS:
        value = bytes(hashlib.new(bank).digest_size)
        for extend in extends:
            value = hashlib.new(bank, value + extend[bank]).digest()
        assert replay_ima_log(log, bank) == {10: value}


def test_boot_aggregate_is_pcrs_0_to_7_in_sha1_and_0_to_9_otherwise() -> None:
    sha1, sha256 = pcrs_for("sha1", b"b"), pcrs_for("sha256", b"b")
    writer = ImaLogWriter(("sha256",))
    writer.add_boot_aggregate(sha1, "sha1")
    writer.add_boot_aggregate(sha256, "sha256")
    first, second = parse_ima_log(writer.to_bytes()).entries
    assert first.file_digest == hashlib.sha1(b"".join(sha1[i] for i in range(8))).digest()
    assert second.file_digest == hashlib.sha256(b"".join(sha256[i] for i in range(10))).digest()
    with pytest.raises(ValueError, match="PCRs"):
        writer.add_boot_aggregate({index: bytes(32) for index in range(8)}, "sha256")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda w: w.add_file("", bytes(32)), "path"),
        (lambda w: w.add_file("/a\0b", bytes(32)), "path"),
        (lambda w: w.add_file("/a", bytes(31)), "digest"),
        (lambda w: w.add_file("/a", bytes(32), "nosuch"), "digest"),
    ],
)
def test_bad_input_is_refused(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(ImaLogWriter())


def test_a_real_tpm_ends_where_the_list_replays(tmp_path) -> None:
    """Extend swtpm's PCR 10 with what the writer returns (tpm2_pcrextend), read it back (tpm2_pcrread)."""
    from nomyo_audit.attest._swtpm import SwtpmProcess, swtpm_available

    require(swtpm_available(), "swtpm is not installed")
    require(shutil.which("tpm2_pcrextend") is not None, "tpm2-tools is not installed")
    with SwtpmProcess() as tpm:
        env = {**os.environ, "TPM2TOOLS_TCTI": f"swtpm:host={tpm.host},port={tpm.port}"}

        def tool(*args: str) -> str:
            return subprocess.run(
                args, env=env, check=True, capture_output=True, text=True, timeout=60
            ).stdout

        def read(bank: str, pcrs: str) -> dict[int, bytes]:
            out = tmp_path / "pcrs.bin"
            tool("tpm2_pcrread", f"{bank}:{pcrs}", "-o", str(out))
            data, size = out.read_bytes(), hashlib.new(bank).digest_size
            indices = [int(index) for index in pcrs.split(",")]
            return {index: data[i * size : (i + 1) * size] for i, index in enumerate(indices)}

        writer = ImaLogWriter(("sha1", "sha256"))
        extends = [writer.add_boot_aggregate(read("sha256", "0,1,2,3,4,5,6,7,8,9"))]
        extends.append(writer.add_file("/usr/bin/python3", hashlib.sha256(b"python").digest()))
        extends.append(writer.add_file("/usr/lib/modules/unexpected.ko", hashlib.sha256(b"ko").digest()))
        for extend in extends:
            tool("tpm2_pcrextend", f"10:sha1={extend['sha1'].hex()},sha256={extend['sha256'].hex()}")
        quoted = {bank: read(bank, "10") for bank in ("sha1", "sha256")}
    log = parse_ima_log(writer.to_bytes())
    match = match_ima_log(log, quoted)
    assert match.ok and len(match.pcrs) == 2 and match.proven_numbers() == frozenset({0, 1, 2})
