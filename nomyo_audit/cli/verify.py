"""``nomyo-audit verify``: appraise saved responses or ``_metadata`` offline."""

from __future__ import annotations

import json
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from ..errors import EvidenceError, ExitCode
from ..policy import PolicyResult, evaluate, load_policy
from ..tpm.binding import recorded_content_digest, response_content_digest
from ..tpm.ear import to_ear
from ..tpm.verify import Verdict, verify_attestation


@dataclass(frozen=True)
class Record:
    """One response or ``_metadata`` read from an input, and where it came from."""

    source: str
    metadata: dict[str, Any]
    content_digest: bytes | None
    digest_origin: str  # "content" (re-hashed), "recorded" (from the record) or "none"
    response: dict[str, Any] | None = None


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
        return Record(source, value["_metadata"], response_content_digest(value), "content", value)
    if isinstance(value, dict) and ("tpm_attestation" in value or "payload_id" in value):
        recorded = recorded_content_digest(value.get("verification"))
        if recorded is not None:
            return Record(source, value, recorded, "recorded")
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


def _text(record: Record, verdict: Verdict, result: PolicyResult | None) -> str:
    status = verdict.result.upper() if result is None else f"{verdict.result.upper()}, {result.summary()}"
    lines = [f"{record.source}  payload_id={verdict.payload_id}  {status}"]
    for finding in verdict.findings:
        if finding.status == "pass" or finding.code == "not_reached":
            continue
        mark = "FAIL" if finding.status == "fail" else "note"
        lines.append(f"  {mark} {finding.check:<19} {finding.code}: {finding.detail}")
    if record.digest_origin == "recorded":
        lines.append("  note response binding checked against the content digest recorded with the metadata")
    return "\n".join(lines)


def junit_xml(results: list[tuple[Record, Verdict, PolicyResult | None]]) -> str:
    """One <testsuite> per record, one <testcase> per policy rule (or per check, without a policy)."""
    suites = ET.Element("testsuites", name="nomyo-audit verify")
    for record, verdict, result in results:
        cases: list[tuple[str, str, str, str]] = (
            [(r.rule, r.status, r.detail, result.policy_name) for r in result.rules]
            if result is not None
            else [(f.check, f.status, f"{f.code}: {f.detail}", "verifier") for f in verdict.findings]
        )
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=f"{record.source} ({verdict.payload_id})",
            tests=str(len(cases)),
            failures=str(sum(1 for c in cases if c[1] == "fail")),
            errors="0",
            skipped=str(sum(1 for c in cases if c[1] == "skip")),
        )
        for name, status, detail, classname in cases:
            case = ET.SubElement(suite, "testcase", name=name, classname=classname)
            if status == "fail":
                ET.SubElement(case, "failure", message=detail[:500]).text = detail
            elif status == "skip":
                ET.SubElement(case, "skipped", message=detail[:500])
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def _evaluation_time(value: str) -> float:
    if value == "now":
        return time.time()
    try:
        return float(value)
    except ValueError:
        raise click.BadParameter("'now' or seconds since the epoch", param_hint="--at") from None


def log_records(path: Path, since: float | None, until: float | None) -> Iterator[Record]:
    """The records of an audit log, as verification inputs (their stored evidence)."""
    from ..audit.log import AuditLog, LogError
    from ..audit.records import recorded_content_digest

    if not path.exists():
        raise LogError(f"{path}: no such audit log")
    with AuditLog(path) as log:
        for stored in log.store.records(since, until):
            doc = json.loads(stored.data)
            metadata = doc.get("metadata") or {"payload_id": doc.get("payload_id")}
            metadata.setdefault("payload_id", doc.get("payload_id"))
            metadata.setdefault("security_tier", doc.get("security_tier"))
            digest = recorded_content_digest(doc)
            yield Record(f"{path}#{doc['seq']}", metadata, digest, "recorded" if digest else "none")


@click.command()
@click.argument("files", nargs=-1)
@click.option(
    "--policy", "policy_file", envvar="NOMYO_POLICY", help="Appraise against this policy (exit 1 if denied)."
)
@click.option(
    "--at", "at", default="now", show_default=True, help="Evaluation time for max_age: now or epoch seconds."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "junit", "ear"]),
    default="text",
    show_default=True,
    help="text for people; json verdicts; junit for CI test views; ear: IETF RATS attestation results.",
)
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write the report here."
)
@click.option(
    "--log",
    "log_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Re-appraise every record stored in this audit log (offline).",
)
@click.option("--since", help="With --log: from this time (epoch, date or ISO 8601).")
@click.option("--until", help="With --log: before this time.")
def verify(
    files: tuple[str, ...],
    policy_file: str | None,
    at: str,
    fmt: str,
    output: Path | None,
    log_path: Path | None,
    since: str | None,
    until: str | None,
) -> None:
    """Verify the TPM evidence in saved responses or _metadata (JSON, JSON Lines, '-' for stdin).

    With --log, every record stored in an audit log is appraised again, for
    example against a policy with a newly published golden value.

    Exit status: 0 all verified (or allowed by the policy), 1 a verification
    failed or the policy denied, 2 unreadable or invalid input.

    \b
    Example:
      nomyo-audit verify --policy policies/production.yaml --format junit -o report.xml replies.jsonl
    """
    from .log import parse_time

    if not files and log_path is None:
        raise click.UsageError("give evidence files, '-' for stdin, or --log")
    policy = load_policy(policy_file) if policy_file else None
    now = _evaluation_time(at)
    sources: list[Iterator[Record]] = [read_records(name) for name in files]
    if log_path is not None:
        sources.append(log_records(log_path, parse_time(since), parse_time(until)))
    results = []
    for source in sources:
        for record in source:
            verdict = appraise(record)
            result = None
            if policy is not None:
                target = record.response if record.response is not None else record.metadata
                result = evaluate(policy, target, now=now, verdict=verdict)
            results.append((record, verdict, result))
    if policy is None:
        failed = sum(1 for _, verdict, _ in results if not verdict.passed)
    else:
        failed = sum(1 for _, _, result in results if result is not None and result.outcome == "deny")
    if fmt == "text":
        text = "\n".join(_text(record, verdict, result) for record, verdict, result in results) + "\n"
        summary = "allowed" if policy is not None else "passed"
        click.echo(f"{len(results)} verified: {len(results) - failed} {summary}, {failed} failed", err=True)
    elif fmt == "json":
        docs = [
            {
                "source": r.source,
                "binding_digest": r.digest_origin,
                **v.to_dict(),
                "policy": p.to_dict() if p is not None else None,
            }
            for r, v, p in results
        ]
        text = json.dumps(docs, indent=2) + "\n"
    elif fmt == "junit":
        text = junit_xml(results)
    else:
        policy_id = (
            f"{policy.name}@sha256:{policy.digest}" if policy is not None else "nomyo-audit/verify-only"
        )
        text = (
            json.dumps([to_ear(v, issued_at=int(now), policy_id=policy_id) for _, v, _ in results], indent=2)
            + "\n"
        )
    if output is not None:
        output.write_text(text)
    else:
        click.echo(text, nl=False)
    if failed:
        raise click.exceptions.Exit(ExitCode.FINDING)
