"""Decoders, replay-vs-quote matching, summaries and go-attestation's quirks, on the real logs."""

import hashlib
import json
import struct
from pathlib import Path

import pytest

from nomyo_audit.eventlog import (
    EV_EFI_ACTION,
    EV_EFI_VARIABLE_DRIVER_CONFIG,
    EV_EVENT_TAG,
    EV_SEPARATOR,
    EventLogWriter,
    decode_event,
    match_event_log,
    parse_event_log,
    replay_event_log,
    serving_stack_event,
    summarize_boot,
    summarize_serving_stack,
)

FIXTURES = Path(__file__).parent / "fixtures" / "eventlogs"
LOGS = sorted(path.name for path in FIXTURES.glob("*eventlog"))
EFI_GLOBAL = bytes.fromhex("61dfe48bca93d211aa0d00e098032b8c")


def load(name):
    return parse_event_log((FIXTURES / name).read_bytes())


def gce_quote():
    quoted = {}
    for bank in ("sha1", "sha256", "sha384"):
        pcrs = json.loads((FIXTURES / f"gce_cos_85_no_nonce_pcrs_{bank}.json").read_text())["pcrs"]
        quoted[bank] = {int(k): bytes.fromhex(v) for k, v in pcrs.items()}
    return quoted


def all_proven(log):
    quoted = {bank: replay_event_log(log, bank) for bank in log.banks}
    return match_event_log(log, quoted)


@pytest.mark.parametrize("name", LOGS)
def test_every_real_event_decodes_and_no_digest_of_data_is_wrong(name):
    for event in load(name).events:
        info = decode_event(event)
        assert info.kind != "undecodable", (event.number, info.summary)
        assert info.data_verified is not False, (event.number, info.summary)
        assert len(info.summary) <= 200 and info.summary.isprintable()
        json.dumps(info.fields)


def test_real_gce_quote_proves_every_event_of_its_log():
    log = load("gce_cos_85_no_nonce_eventlog")
    match = match_event_log(log, gce_quote())
    assert match.ok and match.unquoted == ()
    assert {(m.bank, m.status) for m in match.pcrs} == {(b, "match") for b in ("sha1", "sha256", "sha384")}
    assert match.proven_numbers() == {e.number for e in log.events[1:]}


def test_windows_log_matches_its_sha1_pcrs():
    log = load("windows_gcp_shielded_vm_eventlog")
    pcrs = json.loads((FIXTURES / "windows_gcp_shielded_vm_pcrs_sha1.json").read_text())
    match = match_event_log(log, {"sha1": {int(k): bytes.fromhex(v) for k, v in pcrs.items()}})
    assert log.format == "sha1" and match.ok and len(match.proven_numbers()) == len(log.events)


def test_a_changed_event_is_a_mismatch_naming_the_first_divergent_event():
    quoted = gce_quote()
    quoted["sha256"][4] = hashlib.sha256(b"something else").digest()
    match = match_event_log(load("gce_cos_85_no_nonce_eventlog"), quoted)
    bad = [m for m in match.pcrs if m.status != "match"]
    assert [(m.bank, m.pcr, m.status, m.proven) for m in bad] == [("sha256", 4, "mismatch", 0)]
    first_pcr4 = next(e.number for e in load("gce_cos_85_no_nonce_eventlog").events if e.pcr == 4)
    assert bad[0].diverges_at == first_pcr4 and not match.ok


def test_events_after_the_quote_are_a_prefix():
    writer = EventLogWriter(("sha256",))
    digests = [writer.add(23, EV_EVENT_TAG, data)["sha256"] for data in (b"a", b"b", b"c")]
    value = bytes(32)
    for digest in digests[:2]:
        value = hashlib.sha256(value + digest).digest()
    match = match_event_log(parse_event_log(writer.to_bytes()), {"sha256": {23: value}})
    assert [(m.status, m.proven, m.total, m.diverges_at) for m in match.pcrs] == [("prefix", 2, 3, 3)]
    assert match.proven_numbers() == {1, 2} and not match.ok


def test_pcrs_no_bank_quotes_prove_nothing():
    log = load("gce_cos_85_no_nonce_eventlog")
    match = match_event_log(log, {"sha256": {7: gce_quote()["sha256"][7]}})
    assert match.unquoted == (0, 1, 2, 3, 4, 5, 6, 8, 9)
    assert {log.events[n].pcr for n in match.proven_numbers()} == {7}


def test_quirk_ebs_events_missing_from_pcr_5():
    """go-attestation TestEBSVerifyWorkaround: the quoted PCR 5 includes two ExitBootServices actions
    the firmware never logged; with them appended, every logged PCR 5 event is proven."""
    log = load("ebs_event_missing_eventlog")
    quoted = {"sha1": {5: bytes.fromhex("31245808d6d35849bc394f6343f2b3ff908ed5e3")}}
    assert replay_event_log(log, "sha1")[5] != quoted["sha1"][5]
    match = match_event_log(log, quoted)
    assert [(m.pcr, m.status, m.proven, m.total) for m in match.pcrs] == [(5, "match", 3, 3)]


def test_quirk_startup_locality_sets_pcr_0s_initial_value():
    writer = EventLogWriter(("sha256",))
    writer.add(0, 3, b"StartupLocality\x00\x03")
    digest = writer.add(0, EV_SEPARATOR, bytes(4))["sha256"]
    log = parse_event_log(writer.to_bytes())
    assert log.startup_locality == 3
    expected = hashlib.sha256(bytes(31) + b"\x03" + digest).digest()
    assert replay_event_log(log, "sha256") == {0: expected}
    assert match_event_log(log, {"sha256": {0: expected}}).ok


def test_secure_boot_state_of_real_logs():
    sb = load("sb_cert_eventlog")
    assert summarize_boot(sb, all_proven(sb))["secure_boot"] == "enabled"
    ubuntu = load("ubuntu_2104_shielded_vm_no_secure_boot_eventlog")
    summary = summarize_boot(ubuntu, all_proven(ubuntu))
    assert summary["secure_boot"] == "disabled"
    assert summary["crtm_version"] == "GCE Virtual Firmware v1"
    assert summary["kernel_cmdlines"] == [
        next(
            decode_event(e).fields["cmdline"]
            for e in ubuntu.events
            if decode_event(e).kind == "kernel_cmdline"
        )
    ]
    assert summary["kernel_cmdlines"][0].startswith("/boot/vmlinuz-5.11.0-1006-gcp root=PARTUUID=6443a6ae-e")
    assert {"digest": ubuntu.events[95].digests["sha256"].hex(), "path": "/boot/vmlinuz-5.11.0-1006-gcp"} in (
        summary["kernels"]
    )


def test_secure_boot_state_needs_pcr_7_proven():
    sb = load("sb_cert_eventlog")
    quoted = {"sha256": {0: replay_event_log(sb, "sha256")[0]}}
    assert summarize_boot(sb, match_event_log(sb, quoted))["secure_boot"] is None


def _pcr7_log(*events):
    writer = EventLogWriter(("sha256",))
    for event_type, data in events:
        writer.add(7, event_type, data)
    log = parse_event_log(writer.to_bytes())
    return summarize_boot(log, all_proven(log))["secure_boot"]


def _secure_boot_var(value):
    name = "SecureBoot".encode("utf-16-le")
    return EFI_GLOBAL + struct.pack("<QQ", 10, 1) + name + value


def test_quirks_of_pcr_7_separators():
    enabled = (EV_EFI_VARIABLE_DRIVER_CONFIG, _secure_boot_var(b"\x01"))
    assert _pcr7_log(enabled, (EV_SEPARATOR, bytes(4))) == "enabled"
    assert _pcr7_log(enabled) == "enabled"  # no separator logged: still read, as go-attestation does
    assert _pcr7_log(enabled, (EV_SEPARATOR, b"\xff\xff\xff\xff")) is None  # error separator
    assert _pcr7_log(enabled, (EV_SEPARATOR, bytes(4)), (EV_SEPARATOR, bytes(4))) is None  # two separators
    assert _pcr7_log((EV_SEPARATOR, bytes(4)), enabled) is None  # variable after the separator
    assert _pcr7_log(enabled, (EV_EFI_VARIABLE_DRIVER_CONFIG, _secure_boot_var(b"\x00"))) is None  # twice
    assert _pcr7_log(enabled, (EV_EFI_ACTION, b"UEFI Debug Mode")) is None


def test_secure_boot_variable_whose_data_does_not_hash_to_its_digest_is_not_believed():
    writer = EventLogWriter(("sha256",))
    writer.add(
        7, EV_EFI_VARIABLE_DRIVER_CONFIG, _secure_boot_var(b"\x01"), {"sha256": hashlib.sha256(b"x").digest()}
    )
    log = parse_event_log(writer.to_bytes())
    assert decode_event(log.events[1]).data_verified is False
    assert summarize_boot(log, all_proven(log))["secure_boot"] is None


def test_separator_decoding():
    writer = EventLogWriter(("sha256",))
    writer.add(4, EV_SEPARATOR, b"\x01\x00\x00\x00")
    info = decode_event(parse_event_log(writer.to_bytes()).events[1])
    assert (info.kind, info.fields["error"], info.data_verified) == ("separator", True, True)


def test_device_paths_and_grub_commands_of_real_events():
    ubuntu = load("ubuntu_2104_shielded_vm_no_secure_boot_eventlog")
    app = decode_event(ubuntu.events[23])
    assert app.kind == "boot_application" and app.data_verified is None
    # node by node from the bytes tpm2_eventlog prints: 02 01 ACPI PNP0A03 uid 0, 01 01 PCI dev 3 fn 0,
    # 03 02 SCSI PUN 1 LUN 0, 04 01 partition 15 of a GPT disk, 04 04 the file path
    assert app.fields["device_path"] == (
        "PciRoot(0x0)/Pci(0x3,0x0)/Scsi(0x1,0x0)/HD(15,GPT,9cef6107-0e4e-444c-8839-cf71b1250d5c,0x2800,0x35000)"
        "/\\EFI\\ubuntu\\shimx64.efi"
    )
    grub = decode_event(ubuntu.events[30])
    assert (grub.kind, grub.fields, grub.data_verified) == (
        "ipl",
        {"command": "set prefix=(hd0,gpt1)/boot/grub"},
        True,
    )
    boot = decode_event(ubuntu.events[9])
    assert boot.kind == "boot_variable" and boot.fields["order"][0] == "Boot0003" and boot.data_verified
    gpt = decode_event(next(e for e in ubuntu.events if e.type_name == "EV_EFI_GPT_EVENT"))
    assert gpt.kind == "gpt" and gpt.fields["count"] == len(gpt.fields["partitions"]) > 1


def test_unknown_types_are_kept_and_shown():
    writer = EventLogWriter(("sha256",))
    writer.add(12, 0x1234, b"vendor data")
    log = parse_event_log(writer.to_bytes())
    info = decode_event(log.events[1])
    assert (log.events[1].type_name, info.kind, info.data_verified) == ("0x00001234", "unknown", None)
    assert summarize_boot(log, all_proven(log))["unknown_events"] == 1


def test_serving_stack_round_trip_and_only_proven_events_count():
    writer = EventLogWriter()
    code = "ab" * 32
    writer.add(23, EV_EVENT_TAG, serving_stack_event("router", {"name": "nomyo-audit", "version": "0.9.0",
                                                                "code_sha256": code}))  # fmt: skip
    model = {"name": "m", "source": "local", "weights_sha256": "cd" * 32, "upstream_identity": None}
    writer.add(23, EV_EVENT_TAG, serving_stack_event("model", model))
    log = parse_event_log(writer.to_bytes())
    assert decode_event(log.events[1]).kind == "serving_stack"
    stack = summarize_serving_stack(log, all_proven(log))
    assert stack["router"] == {"name": "nomyo-audit", "version": "0.9.0", "code_sha256": code}
    assert stack["models"] == {
        "m": {"source": "local", "weights_sha256": "cd" * 32, "upstream_identity": None}
    }
    assert summarize_serving_stack(log, match_event_log(log, {})) is None
    with pytest.raises(ValueError):
        serving_stack_event("router", {"name": "x"})
