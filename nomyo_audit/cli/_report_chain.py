"""The I/O edge of chained reports: read signed report directories, stream the log's leaves.

``report --previous DIR`` and ``verify-report A B C`` / ``--previous`` call these; the logic is
:mod:`nomyo_audit.audit._report_chain`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..audit import AuditLog, VerifyingKey, leaf_hash, verify_checkpoint, verify_report_dir
from ..audit._keys import SigningKey
from ..audit._merkle import Frontier
from ..audit._note import NoteError
from ..audit._records import rfc3339
from ..audit._render import FORMATS
from ..audit._report_chain import (
    ChainError,
    CitedCheckpoint,
    UnchainableReport,
    chain_section,
    chainable,
    consistency_from_leaves,
    coverage_findings,
    previous_sha256_of,
    report_sha256,
    verify_chain_proof,
    verify_link,
)
from ..errors import ExitCode, IntegrityError
from ._log import parse_time

REPORT_JSON = FORMATS["json"]


def signed_report(directory: Path, key: VerifyingKey) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """A report directory's verified report.json document, its SHA-256 (its identity in a chain) and
    the signed statement.

    The envelope's signature and every signed file's digest are checked first (exit 3 when not
    signed by ``key`` or altered); a report.json the envelope does not sign is refused.
    """
    statement = verify_report_dir(directory, key)
    subjects = statement.get("subject") or []
    if not any(isinstance(s, Mapping) and s.get("name") == REPORT_JSON for s in subjects):
        raise ChainError(f"{directory}: the signed report does not sign a {REPORT_JSON}")
    base = directory if directory.is_dir() else directory.parent
    data = (base / REPORT_JSON).read_bytes()
    try:
        document = json.loads(data)
    except ValueError:
        raise ChainError(f"{base / REPORT_JSON}: not JSON") from None
    if not isinstance(document, dict):
        raise ChainError(f"{base / REPORT_JSON}: not a report document")
    return document, report_sha256(data), statement


class Previous:
    """The report a new one chains from: read and checked before the log is read."""

    def __init__(self, directory: Path, sign_key: SigningKey | None) -> None:
        if sign_key is None:
            raise UnchainableReport(
                "--previous needs --sign: an unsigned report cannot be chained from or to"
            )
        self.directory = directory
        self.document, self.sha256, _ = signed_report(directory, sign_key.public_key())
        covers = self.document.get("covers")
        period = covers.get("period") if isinstance(covers, Mapping) else None
        self.until = period.get("until") if isinstance(period, Mapping) else None

    def since(self, since: float | None) -> float | None:
        """The new report's start: the previous period's end; a --since elsewhere is refused (exit 2)."""
        ended = parse_time(self.until) if isinstance(self.until, str) else None
        if ended is None:
            return since
        if since is None:
            return ended
        if since != ended:
            which = "overlaps" if since < ended else "leaves a gap after"
            raise click.BadParameter(
                f"{rfc3339(since)} {which} the previous report's period, which ends {self.until}; "
                "omit --since to start where it ended",
                param_hint="--since",
            )
        return since

    def chain(
        self, log: AuditLog, own: Mapping[str, Any] | None, trusted: Ed25519PublicKey | None
    ) -> dict[str, Any]:
        """The new report's ``chain`` section, with the proof from the previous checkpoint to ``own``."""
        cited = chainable(self.document, log.origin, f"the previous report {self.directory}")
        if own is None:
            raise UnchainableReport(
                "the log has no signed checkpoint for this report to cover; "
                "run 'nomyo-audit log checkpoint' first"
            )
        if trusted is not None:
            try:
                verify_checkpoint(cited.note, trusted)
            except NoteError as exc:
                raise ChainError(
                    f"the previous report's checkpoint is not signed by --log-key: {exc}"
                ) from None
        new = CitedCheckpoint.from_claim(own, "this report")
        return chain_section(self.sha256, cited, consistency_from_leaves(_leaves(log), cited, new))


def _leaves(log: AuditLog) -> Iterator[bytes]:
    """Each record's leaf hash, recomputed from its bytes, in order (the roots they give are checked)."""
    for _, _, leaf in _scan(log):
        yield leaf


def _scan(log: AuditLog) -> Iterator[tuple[int, Any, bytes]]:
    """(seq, time column, leaf hash recomputed from the bytes) of every row, in order, in one pass."""
    for seq, _, moment, data, _ in log.store.scan():
        yield seq, moment, leaf_hash(data if type(data) is bytes else b"\x00not-a-record-%d" % seq)


@dataclass(frozen=True)
class _LogClaims:
    """What one signed report says of the log: (what, size, root hex) pairs, and its period's span."""

    target: Path
    roots: list[tuple[str, int, str]]
    period: tuple[float | None, float | None, int] | None  # since, until, records read (log size)
    span: tuple[int, int] | None


def _log_claims(target: Path, statement: Mapping[str, Any]) -> _LogClaims:
    predicate = statement.get("predicate")
    predicate = predicate if isinstance(predicate, Mapping) else {}
    roots = [
        (what, *_size_and_root(predicate.get(what)))
        for what in ("checkpoint", "log")
        if predicate.get(what) is not None
    ]
    if not roots:
        raise IntegrityError("the signed report names no log size and root to check the log against")
    covers = predicate.get("covers")
    covers = covers if isinstance(covers, Mapping) else {}
    span, period = covers.get("span"), covers.get("period")
    read = next((size for what, size, _ in roots if what == "log"), None)
    if not isinstance(span, Mapping) or not isinstance(period, Mapping) or read is None:
        return _LogClaims(target, roots, None, None)  # a report made before spans were stated
    start, end = span.get("from"), span.get("to")
    if type(start) is not int or type(end) is not int:
        raise IntegrityError(f"{target}: the signed report's covers.span is malformed")
    bounds = [period.get(k) for k in ("since", "until")]
    if not all(b is None or isinstance(b, str) for b in bounds):
        raise IntegrityError(f"{target}: the signed report's covers.period is malformed")
    try:
        since, until = (parse_time(b) for b in bounds)
    except click.BadParameter:
        raise IntegrityError(f"{target}: the signed report's covers.period is malformed") from None
    return _LogClaims(target, roots, (since, until, read), (start, end))


def check_against_log(
    targets: Sequence[Path], statements: Sequence[Mapping[str, Any]], log_path: Path | str
) -> None:
    """Check every report of a series against the log, reading it once: each root the report signed
    (checkpoint, log), recomputed from the record bytes, and its ``covers.span``, recomputed from the
    time column as ``report`` selected it (the records of ``[since, until)`` among those it read).

    Raises :class:`IntegrityError` (exit 3) for a root or span the log does not give."""
    claims = [_log_claims(target, statement) for target, statement in zip(targets, statements, strict=True)]
    sizes = {size for claim in claims for _, size, _ in claim.roots}
    spans = {id(claim): [0, 0] for claim in claims if claim.period is not None}
    limit = max([*sizes, *(claim.period[2] for claim in claims if claim.period is not None)])
    whole = Frontier()
    roots = {0: whole.root()}
    with AuditLog.open(log_path) as log:
        for seq, moment, leaf in _scan(log) if limit else ():
            if type(moment) not in (int, float):
                raise IntegrityError(f"record {seq}: its time column is not a time (altered)")
            for claim in claims:
                if claim.period is not None and seq < claim.period[2]:
                    since, until, _ = claim.period
                    if until is None or moment < until:
                        span = spans[id(claim)]
                        span[1] = seq + 1
                        if since is not None and moment < since:
                            span[0] = seq + 1
            whole.append(leaf)
            if whole.size in sizes:
                roots[whole.size] = whole.root()
            if whole.size >= limit:
                break
        for claim in claims:
            for what, size, root in claim.roots:
                if roots.get(size, b"").hex() != root:
                    log.root_at(size)  # names a missing, repeated or altered record when that is why
                    raise IntegrityError(
                        f"the root of {log.location}'s first {size} records does not match the report's "
                        f"{'checkpoint' if what == 'checkpoint' else 'log root'} "
                        "(records were altered, removed or replaced)"
                    )
    for claim in claims:
        if claim.span is not None and tuple(spans[id(claim)]) != claim.span:
            start, end = spans[id(claim)]
            raise IntegrityError(
                f"{claim.target}: the signed report says its period holds {_records(*claim.span)} of the "
                f"log (covers.span), but the log holds {_records(start, end)} in it"
            )
    for claim in claims:
        for what, size, root in claim.roots:
            named = "checkpoint" if what == "checkpoint" else "log root (every record it counted)"
            click.echo(f"ok: the report's {named} (size {size}, root {root[:16]}...) matches {log.location}")
        if claim.span is not None:
            click.echo(f"ok: {claim.target}'s period holds exactly the records it states (covers.span)")


def _records(start: int, end: int) -> str:
    if end <= start:
        return f"no record (none from record {start})"
    return f"record {start}" if end == start + 1 else f"records {start} to {end - 1}"


def _size_and_root(claim: Any) -> tuple[int, str]:
    """The (size, root hex) a signed report names for the log; a malformed one is an integrity failure."""
    size = claim.get("size") if isinstance(claim, Mapping) else None
    root = claim.get("root") if isinstance(claim, Mapping) else None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0 or not isinstance(root, str):
        raise IntegrityError("the signed report names no log size and root to check the log against")
    return size, root


def verify_series(directories: Sequence[Path], key: VerifyingKey) -> tuple[list[dict[str, Any]], list[str]]:
    """Check every report's signature, its own consistency proof, and each link (oldest first).

    Echoes what held and returns the signed statements and the coverage findings (gaps, overlaps: exit 1,
    the caller's to report after its other checks). Raises :class:`ChainError` (exit 3) for a
    broken link and :class:`nomyo_audit.audit.EnvelopeError` for a report altered or not signed.
    """
    series: list[tuple[str, dict[str, Any]]] = []
    statements: list[dict[str, Any]] = []
    sha256 = ""
    for index, directory in enumerate(directories):
        name = str(directory)
        document, digest, statement = signed_report(directory, key)
        statements.append(statement)
        if series:
            try:
                verify_link(series[-1][1], sha256, document, (series[-1][0], name))
            except ChainError:
                _refuse_misorder(document, digest, series, directories[index + 1 :], name)
                raise
        elif (cited := verify_chain_proof(document, name)) is not None and len(directories) == 1:
            click.echo(
                f"ok: {name}'s consistency proof verifies from checkpoint {cited.describe()}; "
                "pass --previous DIR to check the report it chains from"
            )
        series.append((name, document))
        sha256 = digest
    if len(series) > 1:
        click.echo(f"ok: {len(series)} reports chain: each proves the log only grew since the one before")
    findings = coverage_findings(series)
    if len(series) > 1 and not findings:
        click.echo("ok: the periods meet and the records counted continue with no gap or overlap")
    return statements, findings


def _refuse_misorder(
    document: Mapping[str, Any],
    digest: str,
    earlier: Sequence[tuple[str, Mapping[str, Any]]],
    later: Sequence[Path],
    name: str,
) -> None:
    """A link that failed because the reports were given in another order than oldest first (one
    given earlier chains from this one, or this one from one given later): a usage error (exit 2)
    naming the order, not 'missing or replaced', which would send an auditor after a tampered archive.
    Only explains a failure already found; the files read here decide nothing."""
    for before, report in earlier:
        if previous_sha256_of(report) == digest:
            raise click.UsageError(
                f"{before} chains from {name}, given after it: give the reports oldest first"
            )
    wanted = previous_sha256_of(document)
    for directory in later:
        base = directory if directory.is_dir() else directory.parent
        try:
            digest = report_sha256((base / REPORT_JSON).read_bytes())
        except OSError:
            continue
        if digest == wanted:
            raise click.UsageError(
                f"{name} chains from {directory}, given after it: give the reports oldest first"
            )


def report_findings(findings: Sequence[str]) -> None:
    """Show coverage findings and exit 1 when there are any."""
    for finding in findings:
        click.echo(f"finding: {finding}", err=True)
    if findings:
        raise click.exceptions.Exit(ExitCode.FINDING)
