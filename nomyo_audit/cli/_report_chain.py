"""The I/O edge of chained reports: read signed report directories, stream the log's leaves.

``report --previous DIR`` and ``verify-report A B C`` / ``--previous`` call these; the logic is
:mod:`nomyo_audit.audit._report_chain`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import click
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..audit import AuditLog, VerifyingKey, leaf_hash, verify_checkpoint, verify_report_dir
from ..audit._keys import SigningKey
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
    report_sha256,
    verify_chain_proof,
    verify_link,
)
from ..errors import ExitCode
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
    for seq, _, _, data, _ in log.store.scan():
        yield leaf_hash(data if type(data) is bytes else b"\x00not-a-record-%d" % seq)


def verify_series(directories: Sequence[Path], key: VerifyingKey) -> tuple[list[dict[str, Any]], list[str]]:
    """Check every report's signature, its own consistency proof, and each link (oldest first).

    Echoes what held and returns the signed statements and the coverage findings (gaps, overlaps: exit 1,
    the caller's to report after its other checks). Raises :class:`ChainError` (exit 3) for a
    broken link and :class:`nomyo_audit.audit.EnvelopeError` for a report altered or not signed.
    """
    series: list[tuple[str, dict[str, Any]]] = []
    statements: list[dict[str, Any]] = []
    sha256 = ""
    for directory in directories:
        name = str(directory)
        document, digest, statement = signed_report(directory, key)
        statements.append(statement)
        if series:
            verify_link(series[-1][1], sha256, document, (series[-1][0], name))
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


def report_findings(findings: Sequence[str]) -> None:
    """Show coverage findings and exit 1 when there are any."""
    for finding in findings:
        click.echo(f"finding: {finding}", err=True)
    if findings:
        raise click.exceptions.Exit(ExitCode.FINDING)
