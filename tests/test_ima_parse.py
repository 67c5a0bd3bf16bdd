"""IMA measurement lists against lists and PCR values from IBM's TSS and Keylime (tests/fixtures/ima)."""

from __future__ import annotations

import hashlib
import io
import struct
from pathlib import Path

import pytest

from nomyo_audit.errors import EventLogError
from nomyo_audit.eventlog import (
    ImaEntry,
    iter_ima_log,
    match_ima_log,
    parse_ima_log,
    replay_ima_log,
    summarize_ima,
)

FIXTURES = Path(__file__).parent / "fixtures" / "ima"
BANKS = ("sha1", "sha256", "sha384", "sha512")


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def ibm_pcr10() -> dict[str, bytes]:
    lines = fixture("ibmtss_imakvtpcr10.txt").decode().splitlines()
    return {
        bank: bytes.fromhex(line.split(":")[1].replace(" ", ""))
        for bank, line in zip(BANKS, lines, strict=True)
    }


def kernel_hash_input(entry: ImaEntry) -> bytes:
    """ima_calc_field_array_hash, written from the kernel source independently of the parser."""
    if entry.template_name != "ima":
        return entry.template_data
    name = entry.template_data[24:]
    return entry.template_data[:20] + name.ljust(256, b"\0")


def to_ascii(entry: ImaEntry) -> bytes:
    """ima_ascii_measurements_show for ima-sig entries: what the kernel prints for the same entry."""
    assert entry.template_name == "ima-sig" and entry.file_digest is not None
    fields = [f"{entry.digest_algorithm}:{entry.file_digest.hex()}".encode(), (entry.path or "").encode()]
    fields.append(entry.signature.hex().encode() if entry.signature else b"")
    return b"%d %s ima-sig %s\n" % (entry.pcr, entry.template_hash.hex().encode(), b" ".join(fields))


@pytest.mark.parametrize("name", ["ibmtss_sha1.log", "ibmtss_sha256.log"])
def test_ibm_vtpm_lists_replay_to_the_published_pcr10_in_every_bank(name: str) -> None:
    log = parse_ima_log(fixture(name))
    assert log.format == "binary" and len(log.entries) == 362
    expected = ibm_pcr10()
    for bank in BANKS:
        assert replay_ima_log(log, bank) == {10: expected[bank]}, bank
    match = match_ima_log(log, {bank: {10: value} for bank, value in expected.items()})
    assert match.ok and [m.status for m in match.pcrs] == ["match"] * 4
    assert match.proven_numbers() == frozenset(range(362))


def test_the_sha1_and_sha256_lists_hold_the_same_entries() -> None:
    sha1, sha256 = parse_ima_log(fixture("ibmtss_sha1.log")), parse_ima_log(fixture("ibmtss_sha256.log"))
    assert [len(e.template_hash) for e in sha256.entries[:1]] == [32]
    assert [e.template_data for e in sha1.entries] == [e.template_data for e in sha256.entries]
    first = sha1.entries[0]
    assert (first.path, first.digest_algorithm, first.template_name) == (
        "boot_aggregate",
        "sha256",
        "ima-sig",
    )


@pytest.mark.parametrize("name", ["ibmtss_sha1.log", "ibmtss_sha256.log", "ibmtss_imatest.log"])
def test_every_listed_template_hash_is_the_kernel_hash_of_the_parsed_data(name: str) -> None:
    log = parse_ima_log(fixture(name))
    for entry in log.entries:
        if not entry.violation:
            algorithm = {20: "sha1", 32: "sha256"}[len(entry.template_hash)]
            assert hashlib.new(algorithm, kernel_hash_input(entry)).digest() == entry.template_hash, (
                entry.number
            )


def test_ibm_template_test_list_decodes_every_template() -> None:
    log = parse_ima_log(fixture("ibmtss_imatest.log"))
    by_template = {entry.template_name: entry for entry in log.entries}
    assert {"ima", "ima-ng", "ima-ngv2", "ima-sig", "ima-sigv2", "ima-buf", "ima-modsig", "d-ng|sig"} <= set(
        by_template
    )
    assert by_template["ima"].digest_algorithm == "sha1" and len(by_template["ima"].file_digest or b"") == 20
    assert by_template["ima-ngv2"].path is not None and by_template["ima-ngv2"].file_digest is not None
    assert by_template["ima-buf"].buffer is not None
    unknown = by_template["evm-sig"]
    assert (unknown.path, unknown.file_digest) == (None, None) and unknown.template_data


@pytest.mark.parametrize(
    "name", ["rust_keylime_ascii_runtime_measurements", "keylime_measurements.txt", "keylime_signatures.txt",
             "keylime_keyrings.txt"],
)  # fmt: skip
def test_ascii_lines_a_kernel_wrote_rebuild_to_data_with_their_template_hash(name: str) -> None:
    log = parse_ima_log(fixture(name))
    assert log.format == "ascii" and log.entries
    for entry in log.entries:
        assert hashlib.sha1(kernel_hash_input(entry)).digest() == entry.template_hash, entry.number


def test_keylime_ima_buf_and_ima_sig_fields() -> None:
    keyring = parse_ima_log(fixture("keylime_keyrings.txt")).entries[0]
    assert keyring.path == ".ima" and keyring.buffer is not None and keyring.buffer[:2] == b"\x30\x82"
    assert hashlib.sha256(keyring.buffer).digest() == keyring.file_digest
    signed = parse_ima_log(fixture("keylime_signatures.txt")).entries[0]
    assert signed.path == "/usr/bin/dd" and signed.signature is not None and signed.signature[:1] == b"\x03"
    unsigned = parse_ima_log(fixture("keylime_measurements.txt")).entries[0]
    assert unsigned.path == "boot_aggregate" and unsigned.signature is None


def test_binary_and_ascii_of_the_same_list_give_the_same_entries_and_pcrs() -> None:
    binary = parse_ima_log(fixture("ibmtss_sha1.log"))
    ascii_ = parse_ima_log(b"".join(to_ascii(entry) for entry in binary.entries))
    assert ascii_.format == "ascii"
    assert [e for e in ascii_.entries] == list(binary.entries)
    assert replay_ima_log(ascii_, "sha256") == replay_ima_log(binary, "sha256")


def test_streaming_reads_the_same_entries() -> None:
    data = fixture("ibmtss_sha1.log")
    assert tuple(iter_ima_log(io.BytesIO(data))) == parse_ima_log(data).entries
    assert tuple(iter_ima_log(io.BytesIO(data), "binary")) == parse_ima_log(data, "binary").entries


def test_a_list_read_after_the_quote_is_a_proven_prefix() -> None:
    log = parse_ima_log(fixture("ibmtss_sha1.log"))
    quoted_at_100 = {"sha256": {10: parse_and_replay(fixture("ibmtss_sha1.log"), 100)}}
    match = match_ima_log(log, quoted_at_100)
    (pcr,) = match.pcrs
    assert (pcr.status, pcr.proven, pcr.total, pcr.diverges_at) == ("prefix", 100, 362, 100)
    assert not match.ok and match.proven_numbers() == frozenset(range(100))
    assert summarize_ima(log, match) == {
        "log_sha256": hashlib.sha256(fixture("ibmtss_sha1.log")).hexdigest(),
        "bank": "sha256", "entries": 362, "proven": 100, "violations": 0,
    }  # fmt: skip


def parse_and_replay(data: bytes, count: int) -> bytes:
    value = bytes(32)
    for entry in parse_ima_log(data).entries[:count]:
        value = hashlib.sha256(value + hashlib.sha256(kernel_hash_input(entry)).digest()).digest()
    return value


def test_changed_template_data_does_not_replay_even_with_the_listed_hash_kept() -> None:
    data = bytearray(fixture("ibmtss_sha1.log"))
    at = data.index(b"/usr/lib/systemd/systemd")
    data[at + 1 : at + 4] = b"bin"  # same length: only the file name changes, the template hash stays
    match = match_ima_log(parse_ima_log(bytes(data)), {"sha1": {10: ibm_pcr10()["sha1"]}})
    (pcr,) = match.pcrs
    assert pcr.status == "mismatch" and pcr.proven == 0


def test_a_violation_extends_all_ff_in_every_bank() -> None:
    line = b"10 " + b"0" * 40 + b" ima-ng sha256:" + b"0" * 64 + b" /var/log/messages\n"
    (entry,) = parse_ima_log(line).entries
    assert entry.violation
    for bank, size in (("sha1", 20), ("sha256", 32), ("sha384", 48)):
        expected = hashlib.new(bank, bytes(size) + b"\xff" * size).digest()
        assert replay_ima_log(parse_ima_log(line), bank) == {10: expected}


def test_unknown_ascii_template_replays_only_in_its_listed_bank() -> None:
    template_hash = hashlib.sha1(b"x").digest()
    log = parse_ima_log(b"10 " + template_hash.hex().encode() + b" my-template aa:bb /x\n")
    (entry,) = log.entries
    assert not entry.replayable and entry.path is None
    assert replay_ima_log(log, "sha1") == {10: hashlib.sha1(bytes(20) + template_hash).digest()}
    with pytest.raises(EventLogError) as caught:
        replay_ima_log(log, "sha256")
    assert caught.value.code == "ima_unknown_template"
    assert match_ima_log(log, {"sha256": {10: bytes(32)}}).unquoted == (10,)


def test_big_endian_lists_are_read_in_their_byte_order() -> None:
    little = fixture("ibmtss_sha1.log")
    big = bytearray()
    for entry in parse_ima_log(little).entries:
        name = entry.template_name.encode()
        fields, offset, swapped = entry.template_data, 0, b""
        while offset < len(fields):
            (size,) = struct.unpack_from("<I", fields, offset)
            swapped += struct.pack(">I", size) + fields[offset + 4 : offset + 4 + size]
            offset += 4 + size
        big += struct.pack(">I", entry.pcr) + entry.template_hash + struct.pack(">I", len(name)) + name
        big += struct.pack(">I", len(swapped)) + swapped
    entries = parse_ima_log(bytes(big)).entries
    assert [(e.pcr, e.path, e.file_digest) for e in entries] == [
        (e.pcr, e.path, e.file_digest) for e in parse_ima_log(little).entries
    ]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"\x0a\x00\x00\x00" + bytes(10), "ima_truncated"),
        (b"\x0a\x00\x00\x00" + bytes(20) + b"\x06\x00\x00\x00ima-ng\xff\xff\xff\x7f", "ima_too_large"),
        (b"\x0a\x00\x00\x00" + bytes(20) + b"\x00\x01\x00\x00", "ima_malformed"),
        (b"\x1f\x00\x00\x00" + bytes(20) + b"\x06\x00\x00\x00ima-ng\x00\x00\x00\x00", "ima_malformed"),
        (b"10 zz ima-ng sha256:00 /x\n", "ima_malformed"),
        (b"10 " + b"0" * 40 + b" ima-ng sha256:00 /x\n", "ima_malformed"),
        (b"10 " + b"1" * 40 + b" ima-ng nocolon /x\n", "ima_malformed"),
        (b"10 " + b"1" * 40 + b" ima 0011 /x\n", "ima_malformed"),
    ],
)
def test_bad_lists_are_specific_errors(data: bytes, code: str) -> None:
    with pytest.raises(EventLogError) as caught:
        parse_ima_log(data)
    assert caught.value.code == code


def test_caps() -> None:
    from nomyo_audit.eventlog import MAX_IMA_LOG_BYTES

    with pytest.raises(EventLogError) as caught:
        parse_ima_log(b"\0" * (MAX_IMA_LOG_BYTES + 1))
    assert caught.value.code == "ima_too_large"
    with pytest.raises(EventLogError) as caught:
        parse_ima_log(b"10 " + b"a" * (3 << 20) + b"\n")
    assert caught.value.code == "ima_too_large"


def test_empty_list() -> None:
    log = parse_ima_log(b"")
    assert log.entries == () and replay_ima_log(log, "sha256") == {}
    assert match_ima_log(log, {"sha256": {10: bytes(32)}}).pcrs == ()
