"""``nomyo-audit log {show, verify, checkpoint, prove, verify-proof}`` and ``keys generate``."""

from __future__ import annotations

import datetime as _dt
import json
import sys
from pathlib import Path
from typing import Any

import click

from ..audit.keys import ed25519_private, ed25519_public, generate_audit_key
from ..audit.log import AuditLog, IntegrityError, LogError, verify_tlog_proof


def parse_time(value: str | None) -> float | None:
    """Epoch seconds from an epoch number, a date (2026-11-25) or an ISO 8601 time (UTC if no zone)."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: use epoch seconds, 2026-11-25 or 2026-11-25T10:00:00Z"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_dt.timezone.utc)
    return parsed.timestamp()


def parse_period(since: str | None, until: str | None) -> tuple[float | None, float | None]:
    """``--since`` and ``--until`` as epoch seconds; a period that ends before it starts is a usage error."""
    lo, hi = parse_time(since), parse_time(until)
    if lo is not None and hi is not None and lo > hi:
        raise click.BadParameter(f"--since {since} is after --until {until}", param_hint="--since")
    return lo, hi


def open_log(path: Path, *, write: bool = False, **kwargs: Any) -> AuditLog:
    """An existing log: read-only (never creates or writes a file) unless ``write``.

    Missing, empty, foreign files are exit 2; a damaged log, exit 3. To write, the
    file is first checked read-only, so a writer never creates a log by accident.
    """
    log = AuditLog.open(path)
    if not write:
        return log
    log.close()
    return AuditLog(path, **kwargs)


LOG_OPTION = click.option(
    "--log",
    "log_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="NOMYO_AUDIT_LOG",
    required=True,
    help="The audit log (SQLite file); default $NOMYO_AUDIT_LOG.",
)


@click.group("log")
def log_group() -> None:
    """Inspect, verify, checkpoint and prove the tamper-evident audit log.

    \b
    Example:
      nomyo-audit log verify --log audit.db --key audit.key.pub
    """


@log_group.command("show")
@LOG_OPTION
@click.option("--since", help="From this time (epoch, date or ISO 8601).")
@click.option("--until", help="Before this time.")
@click.option("--payload-id", help="Only this request.")
@click.option(
    "--outcome", help="Only records whose outcome starts with this (ok, policy_denied, http_error...)."
)
@click.option("--limit", type=int, default=100, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def show(
    log_path: Path,
    since: str | None,
    until: str | None,
    payload_id: str | None,
    outcome: str | None,
    limit: int,
    fmt: str,
) -> None:
    """List records (never prompts or completions: the log holds none).

    \b
    Example:
      nomyo-audit log show --log audit.db --outcome policy_denied --format json
    """
    with open_log(log_path) as log:
        shown = 0
        for record in log.store.records(parse_time(since), parse_time(until)):
            if payload_id and record.payload_id != payload_id:
                continue
            doc = json.loads(record.data)
            if outcome and not str(doc.get("outcome", "")).startswith(outcome):
                continue
            if fmt == "json":
                click.echo(json.dumps(doc))
            else:
                verdict = (doc.get("verdict") or {}).get("result") or "-"
                policy = (doc.get("policy") or {}).get("outcome") or "-"
                click.echo(
                    f"{doc['seq']:>8}  {doc['time']}  {doc['payload_id']}  {doc['outcome']:<24} "
                    f"verdict={verdict} policy={policy} model={doc.get('model')}"
                )
            shown += 1
            if shown >= limit:
                break


@log_group.command("verify")
@LOG_OPTION
@click.option(
    "--key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The checkpoint signer's public key (from a trusted place, not from the log).",
)
def verify_log(log_path: Path, key: Path | None) -> None:
    """Recompute the Merkle tree, check every record and checkpoint; name the first bad one.

    Exit status 0 when intact, 3 when anything was altered.

    \b
    Example:
      nomyo-audit log verify --log audit.db --key audit.key.pub
    """
    public = ed25519_public(key) if key is not None else None
    with open_log(log_path) as log:
        progress = _progress(log.size)
        report = log.verify(public, progress=progress)
        if progress is not None:
            click.echo("", err=True)
    if report.ok:
        click.echo(f"ok: {report.size} records, {report.checkpoints} checkpoints, root {report.root.hex()}")
        if public is None and report.checkpoints:
            click.echo(
                "note: checkpoint signatures were checked with the key stored in the log; "
                "pass --key for a trusted one",
                err=True,
            )
        return
    for problem in report.problems:
        click.echo(f"FAIL {problem}")
    raise IntegrityError(f"the audit log {log_path} is not intact ({len(report.problems)} problem(s))")


def _progress(total: int) -> Any:
    if not sys.stderr.isatty() or total < 50_000:
        return None

    def update(done: int) -> None:
        click.echo(
            f"\rverifying {done:,}/{total:,} records ({100 * done // max(total, 1)}%)", err=True, nl=False
        )

    return update


@log_group.command("digest")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@LOG_OPTION
def digest(file: Path, log_path: Path) -> None:
    """Compute the keyed digest a record holds for a plaintext you have (request or response JSON).

    Records keep HMAC-SHA256(log salt, canonical JSON) instead of prompts and
    completions; with the plaintext and this log, an auditor checks a record's
    request_digest or response_digest (a response's _metadata is left out).

    \b
    Example:
      nomyo-audit log digest request.json --log audit.db
    """
    from ..audit.records import keyed_digest

    try:
        value = json.loads(file.read_text())
    except ValueError:
        raise LogError(f"{file}: not JSON") from None
    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if k != "_metadata"}
    with open_log(log_path) as log:
        click.echo(keyed_digest(log.salt, value))


@log_group.command("checkpoint")
@LOG_OPTION
@click.option(
    "--key",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Ed25519 private key (nomyo-audit keys generate).",
)
def checkpoint(log_path: Path, key: Path) -> None:
    """Sign a checkpoint (C2SP signed note) of the log's current size and root.

    \b
    Example:
      nomyo-audit log checkpoint --log audit.db --key audit.key
    """
    with open_log(log_path, write=True) as log:
        click.echo(log.checkpoint(ed25519_private(key)), nl=False)


@log_group.command("prove")
@click.argument("payload_id")
@LOG_OPTION
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write the proof here.")
def prove(payload_id: str, log_path: Path, output: Path | None) -> None:
    """Export a C2SP tlog-proof that a request's record is in the log (verifies offline).

    \b
    Example:
      nomyo-audit log prove 5128aaf2-1ef9-4a21-aec8-2f6a6062008d --log audit.db -o r.tlog-proof
    """
    with open_log(log_path) as log:
        proof = log.prove(payload_id)
    if output is None:
        click.echo(proof, nl=False)
    else:
        output.write_text(proof)


@log_group.command("verify-proof")
@click.argument("proof", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--key", type=click.Path(dir_okay=False, path_type=Path), required=True)
def verify_proof(proof: Path, key: Path) -> None:
    """Check a tlog-proof offline: the checkpoint's signature and the record's inclusion.

    \b
    Example:
      nomyo-audit log verify-proof r.tlog-proof --key audit.key.pub
    """
    result = verify_tlog_proof(proof.read_text(), ed25519_public(key))
    click.echo(f"ok: record {result['index']} is in {result['origin']} at size {result['size']}")


@click.group("keys")
def keys_group() -> None:
    """Make signing keys.

    \b
    Example:
      nomyo-audit keys generate --kind audit -o audit.key
    """


@keys_group.command("generate")
@click.option("--kind", type=click.Choice(["audit"]), default="audit", show_default=True)
@click.option(
    "--algorithm",
    type=click.Choice(["ed25519", "ecdsa-p256", "rsa-pss"]),
    default="ed25519",
    show_default=True,
    help="Checkpoints need ed25519; reports accept all three.",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
def generate(kind: str, algorithm: str, output: Path) -> None:
    """Write a private key (PEM, 0600) and OUTPUT.pub; existing files are never overwritten.

    \b
    Example:
      nomyo-audit keys generate --kind audit -o audit.key
    """
    private, public = generate_audit_key(output, algorithm)
    click.echo(f"wrote {private} (private, 0600) and {public}", err=True)
