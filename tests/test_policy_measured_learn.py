"""``policy from-evidence`` learns event references from proven logs, so a fleet accepts a new
firmware by adding its blob digest, not by recomputing PCR 0."""

from __future__ import annotations

import json

import yaml
from click.testing import CliRunner
from test_policy_measured import NOW, WEIGHTS, machine, reply, sha256

from nomyo_audit.cli._main import cli
from nomyo_audit.policy import evaluate, load_policy

PCRS = "sha256:0,4,7,8,23"


def learn(tmp_path, replies, *options):
    source = tmp_path / "replies.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in replies))
    output = tmp_path / "learned.yaml"
    command = ["policy", "from-evidence", "--allow-software-attester", "--no-pin-aik", *options]
    made = CliRunner().invoke(cli, [*command, str(source), "-o", str(output)])
    assert made.exit_code == 0, made.output
    return load_policy(output), yaml.safe_load(output.read_text())["spec"]


def test_two_firmware_blobs_learned_accept_both_and_a_third_is_denied_naming_it(tmp_path):
    a = machine(PCRS, firmware=(b"firmware 1.0", b"microcode 7"))
    b = machine(PCRS, firmware=(b"firmware 1.1", b"microcode 7"))  # PCR 0 differs by one blob
    replies = [reply(a), reply(b)]
    pcr0 = {r["_metadata"]["tpm_attestation"]["pcr_values"]["sha256"]["0"] for r in replies}
    assert len(pcr0) == 2
    policy, spec = learn(tmp_path, replies, "--no-golden-pcrs")
    assert spec["boot_events"]["firmware"] == [
        sha256(b"firmware 1.0"),
        sha256(b"microcode 7"),
        sha256(b"firmware 1.1"),
    ]
    # PCR 0 and 4 are judged by the allow-lists instead; 7 (db, dbx), 8 (grub commands) and 23 (the
    # configuration) hold events no learned rule judges, so their golden values stay
    assert set(spec["pcrs"]["sha256"]) == {7, 8, 23}
    assert spec["pcr_selection"] == {"sha256": [0, 4, 7, 8, 23]}
    assert spec["serving_stack"] == {
        "router_versions": ["0.9.0"],
        "router_code": [spec["serving_stack"]["router_code"][0]],
        "models": {"qwen3": [WEIGHTS]},
    }
    for response in (reply(a), reply(b)):
        result = evaluate(policy, response, now=NOW)
        assert result.passed, result.summary()
    third = evaluate(policy, reply(machine(PCRS, firmware=(b"firmware 2.0", b"microcode 7"))), now=NOW)
    assert [r.rule for r in third.failures] == ["boot_events"]
    assert sha256(b"firmware 2.0") in third.failures[0].detail


def test_golden_values_are_kept_by_default(tmp_path):
    _, spec = learn(tmp_path, [reply(machine(PCRS))])
    assert set(spec["pcrs"]["sha256"]) == {0, 4, 7, 8, 23}
    assert spec["boot_events"]["boot_applications"] == [sha256(b"shimx64.efi 15.8")]


def test_a_log_that_does_not_match_teaches_nothing(tmp_path):
    from test_policy_measured import tampered_log

    _, spec = learn(tmp_path, [reply(machine(PCRS), mutate=tampered_log)])
    assert not {"boot_events", "serving_stack", "secure_boot", "kernel_cmdline"} & set(spec)
    assert set(spec["pcrs"]["sha256"]) == {0, 4, 7, 8, 23}


def test_an_upstream_model_without_weights_is_learned_as_any(tmp_path):
    _, spec = learn(tmp_path, [reply(machine(PCRS, model=("gpt-4o", None)), model="gpt-4o")])
    assert spec["serving_stack"]["models"] == {"gpt-4o": "any"}


def test_kernel_command_lines_are_learned_exactly(tmp_path):
    lines = ("root=/dev/sda1 ro", "root=/dev/sdb1 ro quiet")
    policy, spec = learn(tmp_path, [reply(machine(PCRS, cmdline=line)) for line in lines])
    seen = r"(?:root=/dev/sda1\ ro|root=/dev/sdb1\ ro\ quiet)\Z"
    assert spec["kernel_cmdline"] == {"require": ["^" + seen], "forbid": ["^(?!" + seen + ")"]}
    other = evaluate(policy, reply(machine(PCRS, cmdline="root=/dev/sda1 ro init=/bin/sh")), now=NOW)
    assert "kernel_cmdline" in [r.rule for r in other.failures]


def test_ima_digests_are_learned_from_proven_entries(tmp_path):
    files = (("/usr/bin/python3", b"python"), ("/usr/lib/libc.so.6", b"libc"))
    pcrs = "sha256:0,4,7,8,10,23"
    policy, spec = learn(tmp_path, [reply(machine(pcrs, ima_files=files))], "--no-golden-pcrs")
    assert set(spec["pcrs"]["sha256"]) == {7, 8, 23}  # PCR 10 is judged by the ima rule
    assert spec["ima"]["digests"]["/usr/bin/python3"] == [sha256(b"python")]
    assert spec["ima"]["digests"]["/usr/lib/libc.so.6"] == [sha256(b"libc")]
    same = evaluate(policy, reply(machine(pcrs, ima_files=files)), now=NOW)
    assert same.passed, same.summary()
    extra = machine(pcrs, ima_files=(*files, ("/tmp/rootkit.ko", b"evil")))
    denied = evaluate(policy, reply(extra), now=NOW)
    assert [r.rule for r in denied.failures] == ["ima"]
    assert f"'/tmp/rootkit.ko' {sha256(b'evil')}" in denied.failures[0].detail
