"""Real evidence, made by code we did not write: GCE vTPM quotes with the event log of the same machine.

tests/fixtures/measured/PROVENANCE.md says where each file comes from. go-tpm-tools verifies the two
COS-85 attestations with nonce ``nil`` and ``90 09``; go-attestation the Windows one (SHA-1 quote,
empty nonce). Here our verifier replays the real logs against the real quoted PCRs in every bank,
reads the real secure-boot state from proven events only, refuses a log with one flipped byte, and
tpm2_checkquote (tpm2-tools) judges the same quotes and logs.
"""

from __future__ import annotations

import base64
import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from conftest import require

from nomyo_audit.tpm import verify_attestation
from nomyo_audit.tpm._keys import to_crypto_key
from nomyo_audit.tpm._public import parse_public

FIXTURES = Path(__file__).parent / "fixtures" / "measured"
COS = {"gce-cos-85-no-nonce": b"", "gce-cos-85-nonce9009": bytes.fromhex("9009")}
BANKS = ("sha1", "sha256", "sha384")
ALL_PCRS = ",".join(str(i) for i in range(24))
#: What tpm2_eventlog prints for the log's EV_EFI_VARIABLE_DRIVER_CONFIG SecureBoot event: "01"
SECURE_BOOT = "enabled"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def tpm2b(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def cos_block(name: str, bank: str, log: bytes | None = None) -> dict:
    """The tpm_attestation block a router on that VM would send: one quote of PCRs 0-23 in ``bank``."""
    where = FIXTURES / name
    values = json.loads((where / f"quote_{bank}.pcrs.json").read_text())
    assert values["hash"] == bank
    return {
        "is_available": True,
        "quote_b64": b64((where / f"quote_{bank}.tpms_attest.bin").read_bytes()),
        "signature_b64": b64((where / f"quote_{bank}.tpmt_signature.bin").read_bytes()),
        "aik_pubkey_b64": b64(tpm2b((where / "ak_pub.tpmt_public.bin").read_bytes())),
        "pcr_banks": f"{bank}:{ALL_PCRS}",
        "pcr_values": {bank: values["pcrs"]},
        "event_log_b64": b64((where / "event_log.bin").read_bytes() if log is None else log),
    }


def windows() -> tuple[dict, bytes]:
    """go-attestation's Windows GCE Shielded VM: a SHA-1 quote of PCRs 0-23 by a child AK, and its log."""
    doc = json.loads((FIXTURES / "windows_gcp_shielded_vm" / "windows_gcp_shielded_vm.json").read_text())
    creation = base64.b64decode(doc["AK"]["CreateData"])
    # TPMS_CREATION_DATA: pcrSelect (empty), pcrDigest, locality, parentNameAlg, parentName,
    # parentQualifiedName: the AK is a child key, its quote's qualifiedSigner hashes this parent
    at = 4
    at += 2 + int.from_bytes(creation[at : at + 2], "big") + 1 + 2
    at += 2 + int.from_bytes(creation[at : at + 2], "big")
    parent = creation[at + 2 : at + 2 + int.from_bytes(creation[at : at + 2], "big")]
    pcrs = doc["Log"]["PCRs"]
    assert all(p["DigestAlg"] == 3 for p in pcrs)  # Go's crypto.SHA1
    block = {
        "is_available": True,
        "quote_b64": doc["Quote"]["Quote"],
        "signature_b64": doc["Quote"]["Signature"],
        "aik_pubkey_b64": b64(tpm2b(base64.b64decode(doc["AK"]["Public"]))),
        "aik_parent_qualified_name_b64": b64(parent),
        "pcr_banks": f"sha1:{ALL_PCRS}",
        "pcr_values": {"sha1": {str(p["Index"]): base64.b64decode(p["Digest"]).hex() for p in pcrs}},
        "event_log_b64": doc["Log"]["Raw"],
    }
    return block, base64.b64decode(doc["Log"]["Raw"])


def no_nonce(log: bytes):
    return verify_attestation(cos_block("gce-cos-85-no-nonce", "sha256", log), None, expected_nonce=b"")


def problems(verdict) -> dict[str, str]:
    return {f.check: f.code for f in verdict.findings if f.status == "fail"}


# -- the real logs replay to the real quotes -----------------------------------------------------


@pytest.mark.parametrize("bank", BANKS)
@pytest.mark.parametrize("name", sorted(COS))
def test_real_gce_log_replays_to_the_real_quote_in_each_bank(name, bank):
    verdict = verify_attestation(cos_block(name, bank), None, expected_nonce=COS[name])
    assert verdict.passed, problems(verdict)
    assert verdict.finding("event_log").code == "event_log_matches"
    assert verdict.finding("ima_log").code == "no_ima_log"
    match = verdict.measurements.event_log_match
    # the firmware and boot loader PCRs, each in the quote's own bank; PCR 10 is IMA's, 17-22 DRTM's
    assert {(m.bank, m.pcr) for m in match.pcrs} == {(bank, i) for i in range(10)}
    assert all(m.status == "match" and m.proven == m.total for m in match.pcrs)
    assert verdict.facts["measured_boot"]["log_sha256"] == (
        "a46bb17e9c9cd175543658f52ea43eaadebb60287b05070bf7e18e87092df83c"  # MANIFEST.json
    )
    assert verdict.facts["measured_boot"]["secure_boot"] == SECURE_BOOT
    assert verdict.measurements.proven_events()
    assert "measurements" not in verdict.to_dict()


def test_real_gce_log_needs_the_real_nonce_too():
    """The log replays, but a quote for another nonce still fails: the log adds no trust of its own."""
    block = cos_block("gce-cos-85-nonce9009", "sha256")
    verdict = verify_attestation(block, None, expected_nonce=b"\x90\x08")
    assert problems(verdict) == {"nonce_binding": "nonce_mismatch"}


def test_real_windows_log_replays_to_the_real_sha1_quote():
    block, _ = windows()
    verdict = verify_attestation(block, None, expected_nonce=b"")
    assert verdict.passed, problems(verdict)
    assert verdict.finding("event_log").code == "event_log_matches"
    match = verdict.measurements.event_log_match
    assert {m.bank for m in match.pcrs} == {"sha1"}
    assert {m.pcr for m in match.pcrs} >= {0, 4, 7}  # tpm2_eventlog: events in PCRs 0, 4, 5, 7, 11-14
    assert verdict.facts["measured_boot"]["secure_boot"] == SECURE_BOOT  # tpm2_eventlog: SecureBoot "01"


# -- one flipped byte -----------------------------------------------------------------------------


def _sha256_digest_offset(log: bytes, pcr: int) -> int:
    """Where the SHA-256 digest of the first event extending ``pcr`` starts (read with our parser)."""
    from nomyo_audit.eventlog import parse_event_log

    event = next(e for e in parse_event_log(log).events if e.pcr == pcr and e.number > 0)
    digest = event.digests["sha256"]
    at = log.index(digest, event.offset)
    assert at < event.offset + 64
    return at


@pytest.mark.parametrize("pcr", [0, 4, 7, 9])
def test_one_flipped_byte_in_a_real_digest_fails(pcr):
    log = bytearray((FIXTURES / "gce-cos-85-no-nonce" / "event_log.bin").read_bytes())
    log[_sha256_digest_offset(bytes(log), pcr)] ^= 0x01
    verdict = no_nonce(bytes(log))
    finding = verdict.finding("event_log")
    assert (finding.status, finding.code) == ("fail", "event_log_mismatch")
    assert f"sha256 PCR {pcr}:" in finding.detail and "first divergent: event" in finding.detail
    assert "measured_boot" not in verdict.facts and not verdict.passed


def test_one_flipped_byte_in_the_secure_boot_variable_loses_the_fact():
    """The SecureBoot variable's data is hashed into its digest: a flipped value byte still replays
    (the digest is what the TPM extended) but no longer matches its digest, so secure boot is unproven."""
    log = bytearray((FIXTURES / "gce-cos-85-no-nonce" / "event_log.bin").read_bytes())
    name = "SecureBoot".encode("utf-16-le")
    at = log.index(name) + len(name)  # the variable's one data byte, 0x01, follows its name
    assert log[at] == 1
    log[at] = 0
    verdict = no_nonce(bytes(log))
    assert verdict.finding("event_log").status == "pass"  # every digest still replays
    assert verdict.facts["measured_boot"].get("secure_boot") is None  # not "disabled": unproven


@pytest.mark.parametrize("offset", [0, 20, 40, 4000, 12000, 23969])
def test_any_flipped_byte_in_the_real_log_never_passes_quietly(offset):
    """Wherever the flip lands, the log either fails its check or parses to the same proven digests."""
    original = (FIXTURES / "gce-cos-85-no-nonce" / "event_log.bin").read_bytes()
    log = bytearray(original)
    log[offset] ^= 0x80
    block = cos_block("gce-cos-85-no-nonce", "sha256", bytes(log))
    verdict = verify_attestation(block, None, expected_nonce=b"")
    finding = verdict.finding("event_log")
    if finding.status == "pass":  # the flip was in data no digest covers (a device path, a name)
        good = verify_attestation(cos_block("gce-cos-85-no-nonce", "sha256"), None, expected_nonce=b"")
        proven = [(e.pcr, e.digests["sha256"]) for e in verdict.measurements.proven_events()]
        assert proven == [(e.pcr, e.digests["sha256"]) for e in good.measurements.proven_events()]
    else:
        assert finding.status in ("fail", "skip") and finding.code != "event_log_matches"
        assert "measured_boot" not in verdict.facts


# -- tpm2_checkquote on the same quotes and logs ----------------------------------------------------

_ALG_IDS = {"sha1": 0x0004, "sha256": 0x000B, "sha384": 0x000C}


def _serialized_pcrs(bank: str, values: dict[str, str]) -> bytes:
    """The PCR file tpm2_quote -o writes and tpm2_checkquote -f reads (tpm2-tools' "serialized"
    format: the C structures TPML_PCR_SELECTION, a UINT32 count and TPML_DIGESTs of up to 8, little
    endian, unused entries zero): 5.4 ignores -F values, and its values reader refuses 24 PCRs."""
    selection = struct.pack("<IHB4sx", 1, _ALG_IDS[bank], 3, b"\xff\xff\xff\x00") + bytes(8 * 15)
    digests = [bytes.fromhex(values[str(i)]) for i in range(24)]
    chunks = [digests[i : i + 8] for i in range(0, 24, 8)]
    out = selection + struct.pack("<I", len(chunks))
    for chunk in chunks:
        out += struct.pack("<I", len(chunk))
        padded = chunk + [b""] * (8 - len(chunk))
        out += b"".join(struct.pack("<H", len(d)) + d.ljust(64, b"\0") for d in padded)
    return out


def _checkquote(
    tmp: Path, name: str, bank: str, *, log: bool, nonce: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    from cryptography.hazmat.primitives import serialization

    where = FIXTURES / name
    key = to_crypto_key(parse_public(tpm2b((where / "ak_pub.tpmt_public.bin").read_bytes())))
    (tmp / "ak.pem").write_bytes(
        key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    values = json.loads((where / f"quote_{bank}.pcrs.json").read_text())["pcrs"]
    (tmp / "pcrs.bin").write_bytes(_serialized_pcrs(bank, values))
    command = [
        "tpm2_checkquote", "-u", "ak.pem", "-m", str(where / f"quote_{bank}.tpms_attest.bin"),
        "-s", str(where / f"quote_{bank}.tpmt_signature.bin"), "-f", "pcrs.bin", "-g", "sha256",
        "-q", (COS[name] if nonce is None else nonce).hex(),
    ]  # fmt: skip
    if log:
        command += ["-e", str(where / "event_log.bin")]
    return subprocess.run(command, cwd=tmp, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def tools() -> None:
    require(shutil.which("tpm2_checkquote") is not None, "tpm2-tools is not installed")


@pytest.mark.parametrize("bank", BANKS)
@pytest.mark.parametrize("name", sorted(COS))
def test_tpm2_checkquote_agrees_on_the_real_quote_and_log(tools, name, bank, tmp_path):
    """tpm2_checkquote accepts each real quote (signature, nonce, PCR digest) as we do. With the log
    (-e) it replays the same PCRs 0-9 to the quoted values, and differs on one rule only, named here:
    it demands that the log explain every quoted PCR, so it rejects PCR 10 (IMA's, measured by the
    kernel into its own list) and PCRs 17-22 (DRTM PCRs, all ones since no DRTM launch) because
    the firmware log has no events for them. We are right not to fail these: a PCR the log does not
    extend is not evidence about the log, and no real machine's firmware log covers IMA or DRTM; those
    PCRs still count through the quote itself (golden values, the ima_log check)."""
    assert _checkquote(tmp_path, name, bank, log=False).returncode == 0
    ours = verify_attestation(cos_block(name, bank), None, expected_nonce=COS[name])
    assert ours.passed
    result = _checkquote(tmp_path, name, bank, log=True)
    assert result.returncode != 0 and "Eventlog and quote PCR mismatch" in result.stderr
    warned = [line for line in result.stderr.splitlines() if line.startswith("WARN: PCR")]
    theirs = {int(line.removeprefix("WARN: PCR").split()[0]) for line in warned if "mismatch" in line}
    extended = {m.pcr for m in ours.measurements.event_log_match.pcrs}
    values = ours.facts["pcr_values"][bank]
    # every PCR tpm2_checkquote calls a mismatch is one the log never extends and is not zero
    assert theirs == {i for i in range(24) if i not in extended and int(values[str(i)], 16) != 0}
    assert theirs == {10, 17, 18, 19, 20, 21, 22}


def test_tpm2_checkquote_refuses_the_wrong_nonce_as_we_do(tools, tmp_path):
    name = "gce-cos-85-nonce9009"
    assert _checkquote(tmp_path, name, "sha256", log=False, nonce=b"\x90\x08").returncode != 0
    verdict = verify_attestation(cos_block(name, "sha256"), None, expected_nonce=b"\x90\x08")
    assert verdict.finding("nonce_binding").status == "fail"
