"""``nomyo-audit report`` and ``nomyo-audit verify-report``."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from ..audit.keys import load_private_key, load_public_key
from ..audit.log import AuditLog, IntegrityError
from ..audit.merkle import Frontier
from ..audit.note import parse_checkpoint
from ..audit.records import rfc3339
from ..audit.render import FORMATS, verify_report_dir, write_report
from ..audit.report import build_report
from ..policy import load_policy
from .log import LOG_OPTION, open_log, parse_time


def log_state(log: AuditLog) -> dict[str, Any]:
    frontier = log.store.frontier()
    state: dict[str, Any] = {"size": frontier.size, "root": frontier.root().hex(), "checkpoint": None}
    latest = log.latest_checkpoint()
    if latest is not None:
        checkpoint, _ = parse_checkpoint(latest[2])
        state["checkpoint"] = {
            "origin": checkpoint.origin,
            "size": checkpoint.size,
            "root": checkpoint.root.hex(),
            "note": latest[2],
        }
    return state


def _records(log: AuditLog, since: float | None, until: float | None) -> Iterator[dict[str, Any]]:
    show = sys.stderr.isatty() and log.size >= 50_000  # a progress line on a terminal, for long runs
    for n, stored in enumerate(log.store.records(since, until), 1):
        if show and n % 10_000 == 0:
            click.echo(f"\rreading {n:,}/{log.size:,} records", err=True, nl=False)
        yield json.loads(stored.data)
    if show:
        click.echo("", err=True)


@click.command()
@LOG_OPTION
@click.option("--since", help="From this time (epoch, date or ISO 8601).")
@click.option("--until", help="Before this time.")
@click.option(
    "--policy", "policy_file", envvar="NOMYO_POLICY", help="Re-appraise every record against this policy."
)
@click.option(
    "--format",
    "formats",
    default="html,md,json",
    show_default=True,
    help=f"Comma-separated: {', '.join(FORMATS)}.",
)
@click.option(
    "--sign",
    "sign_key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Sign the report (DSSE + in-toto) with this Ed25519, ECDSA P-256 or RSA private key.",
)
@click.option(
    "--generated-at", help="Generation time to print (default now): the same value re-renders identically."
)
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), required=True)
def report(
    log_path: Path,
    since: str | None,
    until: str | None,
    policy_file: str | None,
    formats: str,
    sign_key: Path | None,
    generated_at: str | None,
    output: Path,
) -> None:
    """Render a compliance report from the audit log, in several formats from one run.

    \b
    Example:
      nomyo-audit report --log audit.db --policy production \\
        --format html,md,json,junit,csv --sign audit.key -o out/
    """
    chosen = [f.strip() for f in formats.split(",") if f.strip()]
    policy = load_policy(policy_file) if policy_file else None
    key = load_private_key(sign_key) if sign_key is not None else None
    start = time.monotonic()
    with open_log(log_path) as log:
        state = log_state(log)
        lo, hi = parse_time(since), parse_time(until)
        document = build_report(
            _records(log, lo, hi),
            generated_at=generated_at or rfc3339(time.time()),
            log_state=state,
            policy=policy,
            period=(rfc3339(lo) if lo else None, rfc3339(hi) if hi else None),
        )
    written = write_report(document, chosen, output, key)
    click.echo(
        f"{document['summary']['requests']} records in {time.monotonic() - start:.1f}s -> "
        + ", ".join(str(p) for p in written.values()),
        err=True,
    )
    if state["checkpoint"] is None:
        click.echo("note: the log has no signed checkpoint; run 'nomyo-audit log checkpoint' first", err=True)


@click.command("verify-report")
@click.argument("target", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--key", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The signer's public key."
)
@click.option(
    "--log",
    "log_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also check that the report's checkpoint is consistent with this log.",
)
def verify_report(target: Path, key: Path, log_path: Path | None) -> None:
    """Check a signed report: the signature, every rendered file's digest and (with --log) its checkpoint.

    Exit status 0 when intact, 3 when anything was altered.

    \b
    Example:
      nomyo-audit verify-report out/ --key audit.key.pub --log audit.db
    """
    doc = verify_report_dir(target, load_public_key(key))
    predicate = doc.get("predicate", {})
    checkpoint = predicate.get("checkpoint") or {}
    click.echo(f"ok: signature and {len(doc.get('subject', []))} file digest(s) verify")
    if log_path is None:
        return
    size, root = checkpoint.get("size"), checkpoint.get("root")
    if size is None:
        size, root = predicate.get("log", {}).get("size"), predicate.get("log", {}).get("root")
    with open_log(log_path) as log:
        frontier = Frontier()
        for stored, _ in zip(log.store.records(), range(int(size)), strict=False):
            frontier.append(stored.leaf)
    if frontier.size != size or frontier.root().hex() != root:
        raise IntegrityError(f"the report's checkpoint (size {size}) is not consistent with {log_path}")
    click.echo(f"ok: the report's checkpoint (size {size}, root {str(root)[:16]}...) matches {log_path}")
