"""The schema of the event rules (issue 14): what a policy file may say about measured boot, IMA and
the serving stack, and the errors (file:line, field) for what it may not."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from nomyo_audit.policy import PolicyError, load_policy

HEADER = "apiVersion: nomyo-audit/v1\nkind: AttestationPolicy\nmetadata:\n  name: measured\n"
SHA256 = "ab" * 32


def write(tmp_path: Path, spec: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(HEADER + "spec:\n" + textwrap.indent(textwrap.dedent(spec), "  "))
    return path


def test_every_event_rule_is_accepted(tmp_path):
    path = write(
        tmp_path,
        f"""\
        secure_boot: enabled
        boot_events:
          firmware: ["{SHA256}"]
          boot_applications: ["{SHA256}"]
          deny: ["{"cd" * 20}"]
        kernel_cmdline:
          require: ['(^| )ima_policy=tcb( |$)']
          forbid: ['(^| )init=']
        ima:
          digests: {{/usr/bin/python3: ["{SHA256}"]}}
          excludes: ['^/tmp/']
        serving_stack:
          router_versions: ["0.*"]
          router_code: ["{SHA256}"]
          models: {{qwen3: ["{SHA256}"], echo: any}}
        """,
    )
    spec = load_policy(path).spec
    assert spec["secure_boot"] == "enabled"
    assert spec["serving_stack"]["models"]["echo"] == "any"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("secure_boot: on\n", "spec.secure_boot"),
        ("boot_events: {firmware: [abc]}\n", "spec.boot_events.firmware.0: 'abc' is not a hex"),
        ("boot_events: {}\n", "spec.boot_events"),
        ("boot_events: {allow: []}\n", "unknown key(s) 'allow'"),
        ("kernel_cmdline: {require: ['(']}\n", "kernel_cmdline.require.0: '(' is not a regular expression"),
        (f"kernel_cmdline: {{forbid: ['{'a' * 1025}']}}\n", "spec.kernel_cmdline.forbid.0"),
        ("ima: {excludes: ['[']}\n", "spec.ima.excludes.0: '[' is not a regular expression"),
        ("serving_stack: {models: {qwen3: [xyz]}}\n", "spec.serving_stack.models.qwen3.0"),
        ("serving_stack: {router_versions: []}\n", "spec.serving_stack.router_versions: must not be empty"),
    ],
)
def test_invalid_event_rules_name_line_and_field(tmp_path, spec, message):
    path = write(tmp_path, spec)
    with pytest.raises(PolicyError) as raised:
        load_policy(path)
    assert message in str(raised.value)
    assert f"{path}:6 " in str(raised.value)
