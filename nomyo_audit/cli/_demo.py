"""``nomyo-audit demo``: the whole loop on loopback, with nothing to prepare."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..errors import ConfigurationError
from ._log_location import LOG_LOCATION

DEMO_PROMPTS = (
    "Summarise our Q3 incident report.",
    "Draft a reply to the auditor.",
    "List the open security findings.",
)


def _tpm2_usable() -> bool:
    from ..attest._swtpm import swtpm_available

    try:
        import tpm2_pytss  # noqa: F401
    except ImportError:
        return False
    return swtpm_available()


@click.command()
@click.option(
    "--attester",
    type=click.Choice(["auto", "swtpm", "software"]),
    default="auto",
    show_default=True,
    help="auto: swtpm when installed (with the 'tpm' extra), else the software attester.",
)
@click.option(
    "--dir",
    "workdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to leave the log, keys and report (default: ./nomyo-audit-demo/<time>).",
)
@click.option(
    "--protocol",
    type=click.Choice(["2", "1.0"]),
    default="2",
    show_default=True,
    help="2: HPKE (X-Wing), nothing to substitute on the wire; 1.0: the NOMYO protocol, key-bound quotes.",
)
@click.option(
    "--log",
    "log_location",
    type=LOG_LOCATION,
    help="The audit log: an SQLite file or a postgresql:// URL of an empty database (default: DIR/audit.db).",
)
def demo(attester: str, workdir: Path | None, protocol: str, log_location: Path | str | None = None) -> None:
    """Run the whole loop on loopback: TPM, router, policy-gated chats, audit log, signed report.

    Everything runs on 127.0.0.1 and stops when the command ends; the audit
    log, keys and report stay in --dir.

    \b
    Example:
      nomyo-audit demo
    """
    try:
        from ..router import RouterConfig, RouterThread
        from ..router._attestation import make_attester
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigurationError(
            f"the demo needs the 'router' extra: pip install 'nomyo-audit[router]' ({exc})"
        ) from None
    from .._version import __version__
    from ..attest import TPMAttester
    from ..attest._swtpm import SwtpmProcess
    from ..audit._keys import (
        ed25519_private,
        ed25519_public,
        generate_audit_key,
        load_private_key,
        load_public_key,
    )
    from ..audit._log import AuditLog
    from ..audit._records import rfc3339
    from ..audit._render import verify_report_dir, write_report
    from ..audit._report import build_report
    from ..client import SecureChatCompletion
    from ..client._keys import generate_key_pair
    from ..policy import PolicyViolationError
    from ..router._serving_stack import measure_serving_stack
    from ..tpm._measurements import DEMO_PCRS, TAMPER_MODULE, measure_demo_boot
    from ._demo_anchor import anchor_summary, demo_policy, forged_quote_verdict
    from ._log_location import display_location

    step = _stepper()
    workdir = workdir or Path("nomyo-audit-demo") / _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    workdir.mkdir(parents=True, exist_ok=True)
    if any(workdir.iterdir()):
        raise ConfigurationError(f"{workdir} is not empty: choose another --dir")
    fallback = attester == "auto" and not _tpm2_usable()
    if attester == "auto":
        attester = "software" if fallback else "swtpm"
    key_path, public_path = generate_audit_key(workdir / "audit.key")
    log_path = log_location if log_location is not None else workdir / "audit.db"
    shown_log = display_location(log_path)

    with contextlib.ExitStack() as stack:
        if attester == "swtpm":
            swtpm = stack.enter_context(SwtpmProcess())
            spec = swtpm.spec
            step(f"software TPM (swtpm) started at {spec.split(':', 1)[1]}, EK certificate from its local CA")
        else:
            spec = "software"
            step(
                "swtpm is not available: using the SOFTWARE attester (an in-process key; not hardware-rooted)"
            )
        policy, trusted = demo_policy(swtpm.ca_root_path if attester == "swtpm" else None, workdir)
        tpm_attester = make_attester(spec, pcr_banks=DEMO_PCRS)
        assert isinstance(tpm_attester, TPMAttester)
        measure_demo_boot(tpm_attester.measurements)
        step(
            "measured boot, logged as a real machine logs it: firmware (PCR 0), secure boot on with PK, KEK, "
            "db, dbx (PCR 7), shim and grub (PCR 4), kernel and command line (PCRs 8, 9), IMA (PCR 10)"
        )
        measure_serving_stack(tpm_attester)
        step(f"serving stack measured into PCR 23: nomyo-audit {__version__} (code digest), the echo model")
        router = stack.enter_context(
            RouterThread(RouterConfig(private_key=generate_key_pair().private_key, attester=tpm_attester))
        )
        step(
            f"reference router on {router.url} (protocols 1.0 and 2, echo model, a TPM quote on every reply)"
        )
        log = stack.enter_context(AuditLog(log_path, key=ed25519_private(key_path), checkpoint_every=4))

        step(
            f"client policy: {policy.name} sha256:{policy.digest[:16]}... (golden PCRs, secure boot, "
            "IMA allow-list, serving stack, attest-before-send)"
        )
        step(f"anchoring: {trusted}")

        async def run() -> None:
            async with SecureChatCompletion(
                router.url, allow_http=True, policy=policy, audit_log=log, protocol=protocol
            ) as client:
                step(await _attest_router_key(client.client, policy))
                for prompt in DEMO_PROMPTS:
                    reply = await client.create(
                        "echo", [{"role": "user", "content": prompt}], security_tier="high"
                    )
                    meta = reply["_metadata"]
                    step(
                        f"> {prompt}\n     {reply['choices'][0]['message']['content']}\n     "
                        f"protocol {meta['protocol']}, verdict "
                        f"{meta['verification']['result']}, policy {meta['policy']['outcome']}, "
                        f"payload_id {meta['payload_id']}\n     {anchor_summary(meta)}"
                    )
                tpm_attester.measurements.extend_ima_file(*TAMPER_MODULE)
                step(f"IMA measured a kernel module on the router's machine: {TAMPER_MODULE[0]}")
                prompt = "One more question, after the change."
                try:
                    await client.create("echo", [{"role": "user", "content": prompt}], security_tier="high")
                except PolicyViolationError as denied:
                    failed = "; ".join(f"{r.rule}: {r.detail}" for r in denied.result.failures)
                    step(
                        f"> {prompt}\n     DENIED by policy {policy.name}: {failed}\n     no content returned"
                    )
                else:  # pragma: no cover - would be a bug
                    raise ConfigurationError("the unexpected kernel module was not denied")

        asyncio.run(run())
        step(forged_quote_verdict())
        log.checkpoint()
        report_log = log.verify(ed25519_public(public_path))
        if not report_log.ok:  # pragma: no cover - would be a bug
            raise ConfigurationError(f"the demo's own log does not verify: {report_log.problems}")
        root = report_log.root.hex()[:16]
        step(f"audit log: {report_log.size} records, checkpoint signed, verified (root {root}...)")
        document = build_report(
            (json.loads(r.data) for r in log.store.records()),
            generated_at=rfc3339(time.time()),
            log_state=log.verified_state(),
            policy=policy,
            blob=log.store.blob,  # the event logs the records keep by digest
        )
    report_dir = workdir / "report"
    formats = ["html", "md", "json", "junit", "csv", "oscal"]
    write_report(document, formats, report_dir, load_private_key(key_path))
    statement = verify_report_dir(report_dir, load_public_key(public_path))
    step(
        f"report rendered (html, md, json, junit, csv, oscal), signed (DSSE, in-toto) and verified: "
        f"{len(statement['subject'])} files"
    )
    prog = _program_name()
    click.echo(
        f"""
Done: the router and TPM are stopped; nothing is left running. Everything is in {workdir}/:
  {shown_log if log_location else "audit.db"}  the audit log ({report_log.size} records; no prompt or completion is stored)
  audit.key, audit.key.pub  the log and report signing key (Ed25519)
  report/report.html        the compliance report (also .md, .json, .csv, .junit.xml, .oscal.json, .dsse.json)

Look further:
  {prog} log show --log {shown_log}
  {prog} log verify --log {shown_log} --key {public_path}
  {prog} verify --log {shown_log} --policy {workdir / "policy.yaml"}
  {prog} verify-report {report_dir} --key {public_path} --log {shown_log}
  {prog} log prove {document["failures"][0]["payload_id"] if document["failures"] else "<payload_id>"} --log {shown_log}
"""  # noqa: E501
    )


async def _attest_router_key(client: Any, policy: Any) -> str:
    """Attest-before-send for the protocol the client uses, now rather than on the first prompt."""
    from .._protocol2_keys import usable_suites

    config = await client._v2.negotiate(client, policy)  # None: the client uses protocol 1.0
    if config is None:
        await client.attest_server_key(policy)
        return "protocol 1.0: router key attested (quote over its public key) before any prompt: PASS"
    suite = next(suite for suite in config.suites if suite in usable_suites())
    return (
        f"protocol 2 (HPKE {suite.name}): the router's key configuration {config.key_id} attested "
        "(quote over its digest) before any prompt was sealed; no client key on the wire: PASS"
    )


def _program_name() -> str:
    """How to call this CLI again: ``nomyo-audit`` if it is on PATH, else the path it was run by."""
    if shutil.which("nomyo-audit") or not sys.argv[0].endswith("nomyo-audit"):
        return "nomyo-audit"
    return os.path.relpath(sys.argv[0])


def _stepper() -> Callable[[str], None]:
    count = 0

    def step(text: str) -> None:
        nonlocal count
        count += 1
        click.echo(f"[{count}] {text}")

    return step
