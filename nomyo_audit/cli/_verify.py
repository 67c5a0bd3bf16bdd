"""``nomyo-audit verify``: appraise saved responses or ``_metadata`` offline."""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import itertools
import json
import os
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import click

from ..audit._log import AuditLog
from ..errors import ConfigurationError, EvidenceError, ExitCode
from ..policy import Policy, PolicyResult, evaluate, load_policy
from ..tpm._binding import recorded_content_digest, response_content_digest
from ..tpm._ear import to_ear
from ..tpm._verify import Verdict, verify_attestation
from ._log import parse_period, parse_time
from ._progress import Progress


@dataclass(frozen=True)
class Record:
    """One response or ``_metadata`` read from an input, and where it came from."""

    source: str
    metadata: dict[str, Any]
    content_digest: bytes | None
    digest_origin: str  # "content" (re-hashed), "recorded" (from the record) or "none"
    response: dict[str, Any] | None = None
    received_at: float | None = None  # an audit record's own time: when the client received the reply


#: (record, its verdict, its policy result or None), one per record, as they are appraised.
Appraisal = tuple[Record, Verdict, "PolicyResult | None"]


def read_records(name: str) -> Iterator[Record]:
    """Every record in a file (``-`` is stdin): one JSON value, a JSON array, or JSON Lines."""
    label = "<stdin>" if name == "-" else name
    try:
        raw = sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
    except OSError as exc:
        raise EvidenceError(f"{name}: cannot read: {exc.strerror or exc}", code="unreadable") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise EvidenceError(f"{label}:{line}: not UTF-8 text (byte {exc.start})", code="unreadable") from None
    try:
        whole = json.loads(text)
    except RecursionError:
        raise EvidenceError(f"{label}: JSON nested too deeply", code="invalid_json") from None
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
                except RecursionError:
                    raise EvidenceError(
                        f"{label}:{number}: JSON nested too deeply", code="invalid_json"
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


def junit_xml(results: Iterable[Appraisal]) -> str:
    """One <testsuite> per record, one <testcase> per policy rule (or per check, without a policy)."""
    return "".join(junit_chunks(results))


def junit_chunks(results: Iterable[Appraisal]) -> Iterator[str]:
    """The JUnit document in pieces, a <testsuite> at a time: nothing per record is kept."""
    yield '<?xml version="1.0" encoding="UTF-8"?>\n<testsuites name="nomyo-audit verify">\n'
    for record, verdict, result in results:
        suite = _junit_suite(record, verdict, result)
        ET.indent(suite, level=1)
        yield "  " + ET.tostring(suite, encoding="unicode") + "\n"
    yield "</testsuites>\n"


def _junit_suite(record: Record, verdict: Verdict, result: PolicyResult | None) -> ET.Element:
    cases: list[tuple[str, str, str, str]] = (
        [(r.rule, r.status, r.detail, result.policy_name) for r in result.rules]
        if result is not None
        else [(f.check, f.status, f"{f.code}: {f.detail}", "verifier") for f in verdict.findings]
    )
    suite = ET.Element(
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
    return suite


def json_array_chunks(documents: Iterable[Any]) -> Iterator[str]:
    """``json.dumps(list(documents), indent=2)`` written a document at a time."""
    first = True
    for document in documents:
        yield ("[\n" if first else ",\n") + textwrap.indent(json.dumps(document, indent=2), "  ")
        first = False
    yield "[]\n" if first else "\n]\n"


def _evaluation_time(value: str | None) -> float | None:
    """``--at``: None (each record's own time), now, or the forms --since takes."""
    if value is None:
        return None
    if value == "now":
        return time.time()
    try:
        return parse_time(value)
    except click.BadParameter as exc:
        raise click.BadParameter(exc.message, param_hint="--at") from None


def _record_time(document: dict[str, Any]) -> float | None:
    """A record's ``time`` (hashed with it): when the client received the reply."""
    value = document.get("time")
    if not isinstance(value, str):
        return None
    try:
        return _dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def log_records(log: AuditLog, since: float | None, until: float | None) -> Iterator[Record]:
    """The records of an audit log, as verification inputs (their stored evidence), one at a time."""
    from ..audit._records import recorded_content_digest

    for stored in log.store.records(since, until):
        doc = json.loads(stored.data)
        metadata = doc.get("metadata")
        metadata = metadata if isinstance(metadata, dict) else {}
        # the quote is checked against the request the record was written for, never the router's word
        metadata["payload_id"] = doc.get("payload_id")
        metadata.setdefault("security_tier", doc.get("security_tier"))
        digest = recorded_content_digest(doc)
        yield Record(
            f"{log.path}#{doc['seq']}",
            metadata,
            digest,
            "recorded" if digest else "none",
            received_at=_record_time(doc),
        )


@dataclass
class Tally:
    """What the run found, counted as the results stream past."""

    total: int = 0
    failed: int = 0


def appraise_all(
    records: Iterable[Record],
    policy: Policy | None,
    at: float | None,
    now: float,
    tally: Tally,
    step: Callable[[int], None],
) -> Iterator[Appraisal]:
    """Appraise each record as it is read; max_age is judged at ``at``, else at the record's own time.

    A stored record carries when the client received the reply, so re-appraising
    a log a year later gives the freshness outcome it had then. Evidence from
    files carries no such time: it is judged now, unless ``at`` says otherwise.
    """
    for record in records:
        verdict = appraise(record)
        result = None
        if policy is not None:
            target = record.response if record.response is not None else record.metadata
            result = evaluate(policy, target, now=_judged_at(record, at, now), verdict=verdict)
            failed = result.outcome == "deny"
        else:
            failed = not verdict.passed
        tally.total += 1
        tally.failed += failed
        step(tally.total)
        yield record, verdict, result


def _judged_at(record: Record, at: float | None, now: float) -> float:
    if at is not None:
        return at
    return record.received_at if record.received_at is not None else now


def render(fmt: str, results: Iterable[Appraisal], policy: Policy | None, now: float) -> Iterator[str]:
    """The chosen format, a record at a time."""
    if fmt == "text":
        return (_text(record, verdict, result) + "\n" for record, verdict, result in results)
    if fmt == "json":
        return json_array_chunks(
            {
                "source": r.source,
                "binding_digest": r.digest_origin,
                **v.to_dict(),
                "policy": p.to_dict() if p is not None else None,
            }
            for r, v, p in results
        )
    if fmt == "junit":
        return junit_chunks(results)
    policy_id = f"{policy.name}@sha256:{policy.digest}" if policy is not None else "nomyo-audit/verify-only"
    return json_array_chunks(to_ear(v, issued_at=int(now), policy_id=policy_id) for _, v, _ in results)


class _Stdout:
    def write(self, text: str) -> None:
        click.echo(text, nl=False)


@contextlib.contextmanager
def output_stream(path: Path | None) -> Iterator[TextIO | _Stdout]:
    """stdout, or ``path`` written through a temporary file that replaces it only when complete.

    An unwritable path is a usage error found before any work is done; a run
    that stops half way leaves no half-written report behind.
    """
    if path is None:
        yield _Stdout()
        return
    if path.is_dir():
        raise _cannot_write(path, errno.EISDIR)
    if path.exists() and not os.access(path, os.W_OK):
        raise _cannot_write(path, errno.EACCES)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as exc:
        raise _cannot_write(path, exc.errno or errno.EIO) from None
    try:
        with open(descriptor, "w", encoding="utf-8") as stream:
            yield stream
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _cannot_write(path: Path, number: int) -> ConfigurationError:
    return ConfigurationError(f"cannot write {path}: {os.strerror(number)}", code="unwritable_output")


@click.command()
@click.argument("files", nargs=-1)
@click.option(
    "--policy", "policy_file", envvar="NOMYO_POLICY", help="Appraise against this policy (exit 1 if denied)."
)
@click.option(
    "--at",
    "at",
    help="Judge max_age at this time (now, epoch, date or ISO 8601). Default: with --log each "
    "record's own time (when the reply was received), for files now.",
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
    at: str | None,
    fmt: str,
    output: Path | None,
    log_path: Path | None,
    since: str | None,
    until: str | None,
) -> None:
    """Verify the TPM evidence in saved responses or _metadata (JSON, JSON Lines, '-' for stdin).

    With --log, every record stored in an audit log is appraised again, for
    example against a policy with a newly published golden value. Each record
    is judged as of when its reply was received, so the outcome does not
    change with the day of the re-appraisal (--at overrides). Records stream
    through: memory stays flat however large the log.

    Exit status: 0 all verified (or allowed by the policy), 1 a verification
    failed or the policy denied, 2 unreadable or invalid input. A summary goes
    to stderr.

    \b
    Example:
      nomyo-audit verify --policy policies/production.yaml --format junit -o report.xml replies.jsonl
    """
    if not files and log_path is None:
        raise click.UsageError("give evidence files, '-' for stdin, or --log")
    if (since is not None or until is not None) and log_path is None:
        raise click.UsageError("--since and --until select records of --log")
    lo, hi = parse_period(since, until)
    fixed_at = _evaluation_time(at)
    policy = load_policy(policy_file) if policy_file else None
    now = time.time()
    tally = Tally()
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(output_stream(output))
        sources: list[Iterable[Record]] = [read_records(name) for name in files]
        total = None
        if log_path is not None:
            log = stack.enter_context(AuditLog.open(log_path))  # read-only: never creates a file
            total = log.size if not files and lo is None and hi is None else None
            sources.append(log_records(log, lo, hi))
        # on a terminal showing the text report itself, the records scrolling past are the progress
        shown = output is not None or fmt != "text" or not sys.stdout.isatty()
        progress = stack.enter_context(Progress("verifying", total))
        step = progress if shown else _ignore
        results = appraise_all(itertools.chain.from_iterable(sources), policy, fixed_at, now, tally, step)
        for chunk in render(fmt, results, policy, now):
            out.write(chunk)
    summary = "allowed" if policy is not None else "passed"
    click.echo(
        f"{tally.total} verified: {tally.total - tally.failed} {summary}, {tally.failed} failed", err=True
    )
    if tally.failed:
        raise click.exceptions.Exit(ExitCode.FINDING)


def _ignore(done: int) -> None:
    pass
