"""``nomyo-audit verify``: appraise saved responses or ``_metadata`` offline."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from ..errors import EvidenceError, ExitCode
from ..tpm.binding import response_content_digest
from ..tpm.ear import to_ear
from ..tpm.verify import Verdict, verify_attestation


@dataclass(frozen=True)
class Record:
    """One response or ``_metadata`` read from an input, and where it came from."""

    source: str
    metadata: dict[str, Any]
    content_digest: bytes | None
    digest_origin: str  # "content" (re-hashed), "recorded" (from the record) or "none"


def read_records(name: str) -> Iterator[Record]:
    """Every record in a file (``-`` is stdin): one JSON value, a JSON array, or JSON Lines."""
    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EvidenceError(
            f"{name}: cannot read: {getattr(exc, 'strerror', None) or exc}", code="unreadable"
        ) from None
    label = "<stdin>" if name == "-" else name
    try:
        whole = json.loads(text)
    except ValueError:
        whole = None
        values = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    values.append((f"{label}:{number}", json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise EvidenceError(
                        f"{label}:{number}: not JSON ({exc.msg})", code="invalid_json"
                    ) from None
    else:
        items = whole if isinstance(whole, list) else [whole]
        values = [(label if len(items) == 1 else f"{label}[{i}]", v) for i, v in enumerate(items)]
    if not values:
        raise EvidenceError(f"{label}: no records", code="invalid_input")
    for source, value in values:
        yield _record(source, value)


def _record(source: str, value: object) -> Record:
    if isinstance(value, dict) and isinstance(value.get("_metadata"), dict):
        return Record(source, value["_metadata"], response_content_digest(value), "content")
    if isinstance(value, dict) and ("tpm_attestation" in value or "payload_id" in value):
        recorded = (value.get("verification") or {}).get("content_digest")
        if isinstance(recorded, str):
            try:
                return Record(source, value, bytes.fromhex(recorded), "recorded")
            except ValueError:
                pass
        return Record(source, value, None, "none")
    raise EvidenceError(
        f"{source}: neither a response (with _metadata) nor a _metadata object", code="invalid_input"
    )


def appraise(record: Record) -> Verdict:
    payload_id = record.metadata.get("payload_id")
    return verify_attestation(
        record.metadata.get("tpm_attestation"),
        payload_id if isinstance(payload_id, str) else None,
        content_digest=record.content_digest,
    )


def _text(record: Record, verdict: Verdict) -> str:
    lines = [f"{record.source}  payload_id={verdict.payload_id}  {verdict.result.upper()}"]
    for finding in verdict.findings:
        if finding.status == "pass" or finding.code == "not_reached":
            continue
        mark = "FAIL" if finding.status == "fail" else "note"
        lines.append(f"  {mark} {finding.check:<19} {finding.code}: {finding.detail}")
    if record.digest_origin == "recorded":
        lines.append("  note response binding checked against the content digest recorded with the metadata")
    return "\n".join(lines)


@click.command()
@click.argument("files", nargs=-1, required=True)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "ear"]),
    default="text",
    show_default=True,
    help="text: a table for people; json: verdicts; ear: IETF RATS attestation results.",
)
def verify(files: tuple[str, ...], fmt: str) -> None:
    """Verify the TPM evidence in saved responses or _metadata (JSON, JSON Lines, '-' for stdin).

    Exit status: 0 all verified, 1 a verification failed, 2 unreadable or invalid input.

    \b
    Example:
      nomyo-audit chat --format json "hi" > reply.json && nomyo-audit verify reply.json
    """
    results = [(record, appraise(record)) for name in files for record in read_records(name)]
    failed = sum(1 for _, verdict in results if not verdict.passed)
    if fmt == "text":
        for record, verdict in results:
            click.echo(_text(record, verdict))
        click.echo(f"{len(results)} verified: {len(results) - failed} passed, {failed} failed", err=True)
    elif fmt == "json":
        docs = [{"source": r.source, "binding_digest": r.digest_origin, **v.to_dict()} for r, v in results]
        click.echo(json.dumps(docs, indent=2))
    else:
        now = int(time.time())
        click.echo(json.dumps([to_ear(v, issued_at=now) for _, v in results], indent=2))
    if failed:
        raise click.exceptions.Exit(ExitCode.FINDING)
