"""``nomyo-audit policy {lint, show, from-evidence}``."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
import yaml

from .._files import write_file
from ..errors import EvidenceError, ExitCode
from ..policy import PolicyError, load_policy, verify_record
from ..policy._learn import EventReferences
from ..tpm._verify import Verdict
from ._verify import records_from


@click.group("policy")
def policy_group() -> None:
    """Check, show and bootstrap attestation policies.

    \b
    Example:
      nomyo-audit policy lint policies/*.yaml
    """


@policy_group.command("lint")
@click.argument("files", nargs=-1, required=True)
def lint(files: tuple[str, ...]) -> None:
    """Validate policy files (schema, extends, cycles, size); exit 2 if any is invalid.

    Every file is checked and every error in it reported, each with file:line.

    \b
    Example:
      nomyo-audit policy lint policies/production.yaml
    """
    bad = 0
    for name in files:
        try:
            policy = load_policy(name)
        except PolicyError as exc:
            bad += 1
            click.echo(str(exc), err=True)
        else:
            click.echo(f"ok {name}: {policy.name} sha256:{policy.digest}")
    if bad:  # an invalid policy is invalid input (docs/ci.md), not a finding about evidence
        raise click.exceptions.Exit(ExitCode.USAGE)


@policy_group.command("show")
@click.argument("file")
def show(file: str) -> None:
    """Print a policy as applied: after extends, with its digest.

    \b
    Example:
      nomyo-audit policy show policies/maximum.yaml
    """
    policy = load_policy(file)
    click.echo(f"# {policy.name} sha256:{policy.digest} (resolved from {file})")
    click.echo(yaml.safe_dump(dict(policy.document), sort_keys=False, default_flow_style=None), nl=False)


@policy_group.command("from-evidence")
@click.argument("files", nargs=-1, required=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--name", default="golden", show_default=True, help="metadata.name of the new policy.")
@click.option("--pin-aik/--no-pin-aik", default=True, show_default=True, help="Pin the AIKs seen.")
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
@click.option(
    "--allow-software-attester",
    is_flag=True,
    help="Use evidence a software attester made (no hardware: for demos and tests only).",
)
@click.option(
    "--allow-zero-pcrs",
    is_flag=True,
    help="Make all-zero PCR values golden (nothing was measured into them).",
)
@click.option(
    "--golden-pcrs/--no-golden-pcrs",
    default=True,
    show_default=True,
    help="Golden values also for the PCRs an event log or IMA list proves (--no-golden-pcrs: the "
    "event rules judge those PCRs' events, so an update is accepted by adding its digest).",
)
def from_evidence(
    files: tuple[str, ...],
    output: Path,
    name: str,
    pin_aik: bool,
    force: bool,
    allow_software_attester: bool,
    allow_zero_pcrs: bool,
    golden_pcrs: bool,
) -> None:
    """Bootstrap golden PCR values, AIK pins and event references from observed evidence.

    Only evidence that verifies contributes: values from a quote that does not
    verify are never made golden. Evidence from a software attester, and PCRs
    that hold all zeros, are refused unless allowed explicitly: golden values
    made from them would accept machines that prove nothing. From the events a
    quote proves (event_log_b64, ima_log_b64), it learns secure_boot,
    boot_events (firmware, boot applications), kernel_cmdline, ima digests and
    serving_stack. Review the result before you rely on it.

    \b
    Example:
      nomyo-audit policy from-evidence replies.jsonl -o golden.yaml
    """
    if os.path.lexists(output) and not force:  # a dangling symlink too: it would be written through
        raise PolicyError(f"{output} exists; pass --force to overwrite it")
    golden: dict[str, dict[str, list[str]]] = {}
    selection: dict[str, set[int]] = {}
    pins: list[str] = []
    events = EventReferences()
    used = skipped = 0
    for file in files:
        for record in records_from(file):
            verdict = verify_record(record)
            if (
                verdict.finding("signature").status != "pass"
                or verdict.finding("pcr_digest").status != "pass"
            ):
                skipped += 1
                click.echo(f"skipped {record.source}: evidence does not verify", err=True)
                continue
            if not allow_software_attester:
                _refuse_software_attester(record.source, verdict)
            if not allow_zero_pcrs:
                _refuse_zero_pcrs(record.source, verdict.facts["pcr_values"])
            used += 1
            for bank, values in verdict.facts["pcr_values"].items():
                for index, value in values.items():
                    known = golden.setdefault(bank, {}).setdefault(index, [])
                    if value not in known:
                        known.append(value)
                    selection.setdefault(bank, set()).add(int(index))
            if verdict.facts["aik_fingerprint"] not in pins:
                pins.append(verdict.facts["aik_fingerprint"])
            events.add(verdict)
    if not used:
        raise EvidenceError(f"no verified evidence in {', '.join(files)}", code="no_evidence")
    judged_by_events = set() if golden_pcrs else events.judged_pcrs()
    pcrs = {
        bank: {
            int(i): v
            for i, v in sorted(golden[bank].items(), key=lambda kv: int(kv[0]))
            if int(i) not in judged_by_events
        }
        for bank in golden
    }
    spec: dict[str, Any] = {
        "require_attestation": True,
        "pcr_selection": {bank: sorted(indices) for bank, indices in selection.items()},
        "pcrs": {bank: values for bank, values in pcrs.items() if values},
        "aik_trust": {"mode": "pinned", "pinned": pins} if pin_aik else {"mode": "any"},
        **events.spec(),
        "on_failure": "deny",
    }
    if not spec["pcrs"]:
        del spec["pcrs"]
    document = {
        "apiVersion": "nomyo-audit/v1",
        "kind": "AttestationPolicy",
        "metadata": {"name": name, "description": f"Golden values from {used} verified record(s)."},
        "spec": spec,
    }
    header = f"# Generated by nomyo-audit policy from-evidence from {used} verified record(s). Review it.\n"
    text = header + yaml.safe_dump(document, sort_keys=False)
    write_file(output, text.encode(), mode=0o644, overwrite=force)  # never through a symlink
    load_policy(output)  # what we write must lint
    click.echo(
        f"wrote {output}: {sum(len(v) for v in pcrs.values())} PCR(s), {len(pins)} AIK(s), "
        f"event references from {events.logs} event log(s) and {events.ima_lists} IMA list(s); "
        f"{skipped} record(s) skipped",
        err=True,
    )
    sys.stdout.flush()


def _refuse_software_attester(source: str, verdict: Verdict) -> None:
    """A software TPM's quote proves the software ran, not on which machine: no golden values from it."""
    if verdict.finding("attester").code == "software_attester":
        raise EvidenceError(
            f"{source}: the evidence comes from a software attester (no hardware): golden values made "
            "from it would accept any machine that runs the same software. Use evidence from your "
            "routers' TPMs, or pass --allow-software-attester for a demo or a test.",
            code="software_attester",
        )


def _refuse_zero_pcrs(source: str, pcr_values: Mapping[str, Mapping[str, str]]) -> None:
    """An all-zero PCR was never extended: as a golden value it accepts a machine that measures nothing."""
    zero = [
        f"{bank} PCR {index}"
        for bank, values in pcr_values.items()
        for index, value in sorted(values.items(), key=lambda kv: int(kv[0]))
        if not value.strip("0")
    ]
    if zero:
        raise EvidenceError(
            f"{source}: {', '.join(zero)} hold all zeros: nothing was measured into them, so as golden "
            "values they would accept a machine that measures nothing. Quote PCRs your boot chain "
            "measures, or pass --allow-zero-pcrs.",
            code="unmeasured_pcrs",
        )
