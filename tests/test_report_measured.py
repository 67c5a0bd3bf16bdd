"""Reports show, per router, what booted and what served (the verdict facts of proven event logs),
each distinct state with first/last seen, changes highlighted, in every format, signed as before."""

from __future__ import annotations

import csv
import io
import json

from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nomyo_audit.audit import AuditLog, build_record, build_report, render_report
from nomyo_audit.cli import cli, main
from nomyo_audit.errors import ExitCode

SHIM, GRUB, KERNEL = "a1" * 32, "b2" * 32, "c3" * 32
FIRMWARE_OLD, FIRMWARE_NEW = "d4" * 32, "e5" * 32
WEIGHTS, CODE = "f6" * 32, "07" * 32
STATE = {"generated_at": "2026-11-26T00:00:00Z", "log_state": {"size": 0, "root": "", "checkpoint": None}}


def boot(firmware: str, log: str) -> dict:
    return {
        "log_sha256": log,
        "bank": "sha256",
        "pcrs": [0, 4, 7, 8, 9],
        "secure_boot": "enabled",
        "crtm_version": "GCE Virtual Firmware v2",
        "firmware": [
            {"type": "EV_EFI_PLATFORM_FIRMWARE_BLOB", "digest": firmware, "description": "base 0xffc00000"}
        ],
        "boot_applications": [
            {"digest": SHIM, "path": "\\EFI\\BOOT\\BOOTX64.EFI"},
            {"digest": GRUB, "path": "grubx64.efi"},
        ],
        "kernels": [{"digest": KERNEL, "path": "/boot/vmlinuz-6.8.0-1015-gcp"}],
        "kernel_cmdlines": ["BOOT_IMAGE=/boot/vmlinuz-6.8.0-1015-gcp root=/dev/sda1 ro console=ttyS0"],
        "secure_boot_keys": {"PK": "11" * 32},
        "deny_candidates": [SHIM, GRUB],
        "unknown_events": 0,
    }


def stack(version: str, log: str) -> dict:
    return {
        "log_sha256": log,
        "pcr": 23,
        "router": {"name": "nomyo-audit", "version": version, "code_sha256": CODE},
        "config_sha256": "22" * 32,
        "upstream": None,
        "model_tiers": {"*": ["high"]},
        "models": {"qwen3-8b": {"source": "local", "weights_sha256": WEIGHTS, "upstream_identity": None}},
    }


def doc(seq: int, time: str, router: str, facts: dict, policy: dict | None = None) -> dict:
    return {
        "v": 3,
        "seq": seq,
        "time": time,
        "payload_id": f"p{seq}",
        "router": router,
        "model": "qwen3-8b",
        "security_tier": "high",
        "outcome": "ok" if policy is None or policy["outcome"] != "deny" else "policy_denied",
        "metadata": {"tpm_attestation": {"is_available": True, "attester": "tpm2"}},
        "verdict": {"result": "pass", "failed": [], "findings": {}, "facts": facts},
        "policy": policy,
    }


def records() -> list[dict]:
    """Router A changes firmware on day 2 and router version on day 3; router B never changes."""
    a1 = {
        "measured_boot": boot(FIRMWARE_OLD, "01" * 32),
        "serving_stack": stack("0.4.0", "01" * 32),
        "ima": {"log_sha256": "99" * 32, "bank": "sha256", "entries": 120, "proven": 118, "violations": 0},
    }
    a2 = {**a1, "measured_boot": boot(FIRMWARE_NEW, "02" * 32), "serving_stack": stack("0.4.0", "02" * 32)}
    a3 = {
        **a2,
        "serving_stack": stack("0.5.0", "03" * 32),
        "measured_boot": boot(FIRMWARE_NEW, "03" * 32),
        "ima": {**a1["ima"], "entries": 140, "proven": 140},
    }
    b = {"measured_boot": boot(FIRMWARE_OLD, "04" * 32), "serving_stack": stack("0.4.0", "04" * 32)}
    denied = {
        "outcome": "deny",
        "rules": [
            {
                "rule": "ima",
                "status": "fail",
                "detail": "/usr/lib/modules/6.8.0/extra/evil.ko: digest 5e5e5e5e not allowed",
            }
        ],
    }
    out = []
    for n, (day, facts) in enumerate([("01", a1), ("01", a1), ("02", a2), ("03", a3), ("03", a3)]):
        out.append(doc(n, f"2026-11-{day}T10:00:0{n}.000Z", "https://a.example", facts))
    out.append(doc(5, "2026-11-02T11:00:00.000Z", "https://b.example", b))
    out.append(doc(6, "2026-11-02T12:00:00.000Z", "https://b.example", b))
    out.append(doc(7, "2026-11-03T12:00:00.000Z", "https://b.example", {}))
    out.append(doc(8, "2026-11-03T13:00:00.000Z", "https://a.example", a3, policy=denied))
    return out


def test_each_routers_states_with_first_and_last_seen_and_what_changed():
    report = build_report(records(), **STATE)
    a, b = report["measured"]
    assert a["router"] == "https://a.example" and a["changed"] and a["records"] == 6
    assert [(s["first_seen"], s["last_seen"], s["records"]) for s in a["states"]] == [
        ("2026-11-01T10:00:00.000Z", "2026-11-01T10:00:01.000Z", 2),
        ("2026-11-02T10:00:02.000Z", "2026-11-02T10:00:02.000Z", 1),
        ("2026-11-03T10:00:03.000Z", "2026-11-03T13:00:00.000Z", 3),
    ]
    assert [s["changed"] for s in a["states"]] == [[], ["firmware"], ["router"]]
    first = a["states"][0]
    assert first["secure_boot"] == "enabled" and first["firmware"][0]["digest"] == FIRMWARE_OLD
    assert first["boot_applications"][1] == {"digest": GRUB, "path": "grubx64.efi"}
    assert first["kernels"][0]["path"] == "/boot/vmlinuz-6.8.0-1015-gcp"
    assert first["kernel_cmdlines"][0].startswith("BOOT_IMAGE=")
    assert first["router"] == {"name": "nomyo-audit", "version": "0.4.0", "code_sha256": CODE}
    assert first["models"]["qwen3-8b"]["weights_sha256"] == WEIGHTS
    assert a["ima"]["entries"] == [120, 140] and a["ima"]["latest"] == {"entries": 140, "proven": 140}
    assert not b["changed"] and len(b["states"]) == 1 and b["unmeasured"] == 1 and b["ima"] is None


def test_an_ima_denial_is_listed_with_the_file_the_rule_named():
    report = build_report(records(), **STATE)
    (failure,) = report["failures"]
    assert failure["status"] == "denied" and "ima" in failure["reason"]
    assert failure["rules"] == ["ima: /usr/lib/modules/6.8.0/extra/evil.ko: digest 5e5e5e5e not allowed"]
    files = render_report(report, ["html", "md", "csv"])
    for name in ("report.html", "report.md"):
        assert "/usr/lib/modules/6.8.0/extra/evil.ko" in files[name].decode()


def test_every_format_shows_the_states_and_highlights_a_change():
    files = render_report(build_report(records(), **STATE), ["html", "md", "csv", "json"])
    html, md = files["report.html"].decode(), files["report.md"].decode()
    assert '<div class="flag">' in html and "changed: firmware" in html and "changed: router" in html
    assert "measured state changed: 3 states" in html and FIRMWARE_NEW in html and WEIGHTS in html
    assert "grubx64.efi" in html and "console=ttyS0" in html and "0.5.0" in html
    assert "(**CHANGED**: 3 states)" in md and "**changed: firmware**" in md and f"weights `{WEIGHTS}`" in md
    assert "secure boot: enabled" in md and "IMA: 6 records; entries 120 to 140" in md
    assert md.count("**CHANGED**") == 2  # router A's heading and the explanation, not router B
    rows = list(csv.reader(io.StringIO(files["report.csv"].decode())))
    measured = [r for r in rows if r[:1] == ["measured"]]
    assert len(measured) == 4 and measured[1][2].startswith("changed: firmware") and measured[1][3] == "1"
    assert ["ima", "https://a.example", "entries 120-140; proven 140; violations 0", "6"] in rows
    assert json.loads(files["report.json"])["measured"][0]["states"][2]["changed"] == ["router"]


def test_an_older_report_document_without_the_section_still_renders():
    report = build_report(records(), **STATE)
    del report["measured"]
    files = render_report(report, ["html", "md", "csv"])
    assert "No record carries a proven event log" in files["report.md"].decode()


def test_a_signed_report_over_a_real_log_verifies_and_names_the_states(tmp_path):
    key = Ed25519PrivateKey.generate()
    (tmp_path / "k.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    (tmp_path / "k.pub").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    path = tmp_path / "audit.db"
    with AuditLog(path, key=key) as log:
        for record in records():

            def build(seq, salt, r=record):
                verification = {**r["verdict"], "findings": []}
                return build_record(
                    seq=seq,
                    timestamp=1_795_000_000 + seq,
                    salt=salt,
                    payload_id=r["payload_id"],
                    router=r["router"],
                    server_key=None,
                    model="qwen3-8b",
                    security_tier="high",
                    outcome=r["outcome"],
                    request={"m": seq},
                    response=None,
                    policy=r["policy"],
                    metadata={**r["metadata"], "verification": verification},
                )

            log.append(record["payload_id"], build)
        log.checkpoint()
    out = tmp_path / "out"
    assert (
        main(
            [
                "report",
                "--log",
                str(path),
                "--format",
                "html,md,json,csv",
                "--sign",
                str(tmp_path / "k.pem"),
                "-o",
                str(out),
            ]
        )
        == 0
    )
    document = json.loads((out / "report.json").read_text())
    assert [len(m["states"]) for m in document["measured"]] == [3, 1]
    assert "changed: firmware" in (out / "report.md").read_text()
    checked = CliRunner().invoke(
        cli, ["verify-report", str(out), "--key", str(tmp_path / "k.pub"), "--log", str(path)]
    )
    assert checked.exit_code == 0, checked.output
    (out / "report.md").write_text((out / "report.md").read_text().replace("0.5.0", "0.4.0"))
    assert main(["verify-report", str(out), "--key", str(tmp_path / "k.pub")]) == ExitCode.INTEGRITY
