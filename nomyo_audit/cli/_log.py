"""``nomyo-audit log {show, verify, checkpoint, prove, verify-proof}`` and ``keys generate``."""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import json
from pathlib import Path
from typing import Any

import click

from .._files import write_file
from ..audit import (
    AuditLog,
    IntegrityError,
    LogError,
    VerifyReport,
    ed25519_private,
    ed25519_public,
    generate_audit_key,
    verify_tlog_proof,
)
from ._log_location import LOG_LOCATION
from ._log_migrate import migrate_command
from ._progress import Progress

#: Larger inputs (a proof, a request, a checkpoint file) are refused rather than read whole.
MAX_TEXT_FILE = 64 * 1024 * 1024


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


def open_log(path: Path | str, *, write: bool = False, **kwargs: Any) -> AuditLog:
    """An existing log (a path or a PostgreSQL URL): read-only (never creates or writes) unless ``write``.

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
    type=LOG_LOCATION,
    envvar="NOMYO_AUDIT_LOG",
    required=True,
    help="The audit log: an SQLite file or a postgresql:// URL; default $NOMYO_AUDIT_LOG.",
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
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
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
        for record in log.store.records(*parse_period(since, until)):
            if payload_id and record.payload_id != payload_id:
                continue
            doc = json.loads(record.data)
            if outcome and not str(doc.get("outcome", "")).startswith(outcome):
                continue
            if fmt == "json":
                click.echo(json.dumps(doc))
            else:
                verdict = _shown(_field(doc.get("verdict"), "result"))
                policy = _shown(_field(doc.get("policy"), "outcome"))
                seq, time, pid, result = (
                    _shown(doc.get(k)) for k in ("seq", "time", "payload_id", "outcome")
                )
                click.echo(
                    f"{seq:>8}  {time}  {pid}  {result:<24} "
                    f"verdict={verdict} policy={policy} model={_shown(doc.get('model'))}"
                    + "".join(f" {k}={_shown(doc[k])}" for k in ("service", "tenant") if k in doc)
                )
            shown += 1
            if shown >= limit:
                break


def _field(value: Any, key: str) -> Any:
    return (value.get(key) if isinstance(value, dict) else None) or "-"


def _shown(value: Any) -> str:
    """A record's value for the terminal: a writer chose it (AuditLog.append takes any bytes), so
    text that is not printable (an escape sequence, a line break, a zero-width or right-to-left
    character) is shown escaped, as ``repr`` writes it."""
    text = value if isinstance(value, str) else str(value)
    return text if text.isprintable() else repr(text)


@log_group.command("verify")
@LOG_OPTION
@click.option(
    "--key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The checkpoint signer's public key (from a trusted place, not from the log). With it, "
    "the log must hold a checkpoint that key signed.",
)
@click.option(
    "--checkpoint",
    "kept",
    type=click.Path(path_type=Path),
    multiple=True,
    help="A checkpoint kept elsewhere (a signed note, a signed report's directory, report.json or "
    "report.dsse.json): the log must be at least as large and match it. Repeatable.",
)
@click.option("--witness", "witnesses", multiple=True, help="A witness's cosignature/v1 vkey: the log's "
              "cosigned checkpoint must carry its valid cosignature. Repeatable (docs/witness.md).")
@click.option("--witness-threshold", type=click.IntRange(min=1), help="Cosignatures required (default: all).")
def verify_log(
    log_path: Path, key: Path | None, kept: tuple[Path, ...], witnesses: tuple[str, ...] = (),
    witness_threshold: int | None = None,
) -> None:
    """Recompute the Merkle tree from the record bytes; check every row and checkpoint.

    Exit status 0 when intact, 3 when anything was altered, deleted, damaged or rolled back
    behind a --checkpoint. A log alone cannot show that its newest records were removed after
    its last checkpoint: keep checkpoints elsewhere and pass them with --checkpoint.

    \b
    Example:
      nomyo-audit log verify --log audit.db --key audit.key.pub --checkpoint ci/checkpoint.txt
    """
    public = ed25519_public(key) if key is not None else None
    notes = [read_checkpoint_file(path) for path in kept]
    with open_log(log_path) as log, Progress("verifying", log.store.count()) as progress:
        if witnesses or witness_threshold is not None:
            from ._witness import verify_witnessed  # the cosigned checkpoint, then its root below

            notes.append(verify_witnessed(log, witnesses, witness_threshold, public))
        report = log.verify(public, progress, checkpoints=notes)
    if not report.ok:
        for problem in report.problems:
            click.echo(f"FAIL {problem}")
        count = len(report.problems)
        raise IntegrityError(f"the audit log {log.location} is not intact ({count} problem(s))")
    click.echo(f"ok: {report.size} records, {report.checkpoints} checkpoints, root {report.root.hex()}")
    _describe(report, trusted=public is not None)


def _describe(report: VerifyReport, *, trusted: bool) -> None:
    latest = report.checkpoint
    if latest is not None:
        when = latest.time if latest.time_signed else f"{latest.time} (unsigned, older checkpoint)"
        click.echo(f"latest checkpoint: size {latest.size}, signed {when} by key {latest.signer[:16]}...")
    if report.external:
        click.echo(f"consistent with {report.external} checkpoint(s) kept elsewhere")
    for note in report.notes:
        click.echo(f"note: {note}", err=True)
    if not trusted and report.checkpoints:
        click.echo(
            "note: checkpoint signatures were checked with the key stored in the log; "
            "pass --key for a trusted one",
            err=True,
        )


def read_text_file(path: Path, what: str) -> str:
    """A small UTF-8 text file, or a usage error (exit 2) that says why not."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_TEXT_FILE + 1)
    except FileNotFoundError:
        raise click.BadParameter(f"{path}: no such file", param_hint=what) from None
    except IsADirectoryError:
        raise click.BadParameter(f"{path}: a directory, not a file", param_hint=what) from None
    except OSError as exc:
        raise click.BadParameter(f"{path}: cannot read it ({exc.strerror})", param_hint=what) from None
    if len(data) > MAX_TEXT_FILE:
        raise click.BadParameter(f"{path}: larger than {MAX_TEXT_FILE // 2**20} MiB", param_hint=what)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise click.BadParameter(f"{path}: not UTF-8 text", param_hint=what) from None
    if "\x00" in text:
        raise click.BadParameter(f"{path}: binary data, not UTF-8 text", param_hint=what) from None
    return text


def read_checkpoint_file(path: Path) -> str:
    """The signed checkpoint note in ``path``: a note itself, or the one a signed report carries."""
    if path.is_dir():
        path = path / "report.json" if (path / "report.json").is_file() else path / "report.dsse.json"
    text = read_text_file(path, "--checkpoint")
    if not text.lstrip().startswith("{"):
        return text
    try:
        document = json.loads(text)
        if isinstance(document, dict) and isinstance(document.get("payload"), str):  # a DSSE envelope
            document = json.loads(base64.b64decode(document["payload"], validate=True))
    except (ValueError, binascii.Error):
        raise click.BadParameter(
            f"{path}: neither a signed note nor a report's JSON", param_hint="--checkpoint"
        ) from None
    note = _find_note(document)
    if note is None:
        raise click.BadParameter(f"{path}: carries no signed checkpoint", param_hint="--checkpoint")
    return note


def _find_note(value: Any, depth: int = 0) -> str | None:
    """The ``checkpoint.note`` string anywhere in a report or statement (the signature is checked later)."""
    if depth > 8:
        return None
    if isinstance(value, dict):
        checkpoint = value.get("checkpoint")
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get("note"), str):
            return str(checkpoint["note"])
        children: Any = value.values()
    elif isinstance(value, list):
        children = value
    else:
        return None
    for child in children:
        if (found := _find_note(child, depth + 1)) is not None:
            return found
    return None


@log_group.command("digest")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
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
    from ..audit._records import keyed_digest

    try:
        value = json.loads(read_text_file(file, "FILE"))
    except (ValueError, RecursionError):
        raise LogError(f"{file}: not JSON") from None
    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if k != "_metadata"}
    with open_log(log_path) as log:
        digest = keyed_digest(log.salt, value)
        click.echo(digest)
        try:
            legacy = keyed_digest(log.salt, value, version=2)
        except (ValueError, TypeError):
            legacy = digest
        if legacy != digest:  # records written before RFC 8785 (v2) hold this one
            click.echo(f"{legacy}  (v2 records)")


@log_group.command("checkpoint")
@LOG_OPTION
@click.option(
    "--key",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Ed25519 private key (nomyo-audit keys generate); must be the log's signer.",
)
@click.option(
    "--new-signer",
    is_flag=True,
    help="Sign with a key other than the one that signed the log's checkpoints so far, and make it "
    "the log's signer from now on (key rotation).",
)
def checkpoint(log_path: Path, key: Path, new_signer: bool) -> None:
    """Sign a checkpoint (C2SP signed note) of the log's current size and root.

    The first key that signs a log's checkpoint becomes its signer; another key is
    refused (exit 2) unless --new-signer says the change is meant.

    \b
    Example:
      nomyo-audit log checkpoint --log audit.db --key audit.key
    """
    with open_log(log_path, write=True) as log:
        click.echo(log.checkpoint(ed25519_private(key), new_signer=new_signer), nl=False)
        if log.store.meta("witnesses") is not None:
            from ._witness import cosign_after_checkpoint  # witnesses configured: ask them now

            cosign_after_checkpoint(log)


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
        write_file(output, proof.encode(), mode=0o644, overwrite=True)


@log_group.command("verify-proof")
@click.argument("proof", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--key", type=click.Path(dir_okay=False, path_type=Path), required=True)
def verify_proof(proof: Path, key: Path) -> None:
    """Check a tlog-proof offline: the checkpoint's signature and the record's inclusion.

    \b
    Example:
      nomyo-audit log verify-proof r.tlog-proof --key audit.key.pub
    """
    result = verify_tlog_proof(read_text_file(proof, "PROOF"), ed25519_public(key))
    click.echo(f"ok: record {result.index} is in {result.origin} at size {result.size}")


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


log_group.add_command(migrate_command)
