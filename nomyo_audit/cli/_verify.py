"""``nomyo-audit verify``: appraise saved responses or ``_metadata`` offline.

The appraisal itself (reading records, verifying, evaluating a policy, JUnit)
is :mod:`nomyo_audit.policy`; this module parses the options, streams the
records through it and prints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import itertools
import json
import os
import sys
import textwrap
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

import click

from ..audit._keys import SigningKey
from ..audit._log import AuditLog
from ..audit._merkle import leaf_hash
from ..audit._store import StoredRecord
from ..errors import ConfigurationError, ExitCode, IntegrityError
from ..policy import (
    Appraisal,
    Policy,
    Record,
    appraise_all,
    junit_chunks,
    load_policy,
    parse_records,
    read_records,
    stored_records,
)
from ..tpm import TrustStore
from ._bundle import KEY_OPTION, OFFLINE_OPTION, verify_offline
from ._ear import SIGN_OPTION, ear_chunks, ear_claims, ear_signing_key
from ._log import parse_period, parse_time
from ._log_location import LOG_LOCATION
from ._progress import Progress


def records_from(name: str) -> Iterator[Record]:
    """The records of one command-line input: a file, or ``-`` for stdin (read when iteration starts)."""
    if name == "-":
        yield from parse_records(sys.stdin.buffer.read(), "<stdin>")
    else:
        yield from read_records(name)


def _text(appraisal: Appraisal) -> str:
    record, verdict, result = appraisal.record, appraisal.verdict, appraisal.result
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


@dataclasses.dataclass
class Tally:
    """What the run found, counted as the results stream past."""

    total: int = 0
    failed: int = 0


def counted(
    appraisals: Iterable[Appraisal], tally: Tally, step: Callable[[int], None]
) -> Iterator[Appraisal]:
    """The appraisals as they stream past, counted into ``tally``; ``step`` reports progress."""
    for appraisal in appraisals:
        tally.total += 1
        tally.failed += appraisal.failed
        step(tally.total)
        yield appraisal


def render(
    fmt: str, results: Iterable[Appraisal], policy: Policy | None, now: float, key: SigningKey | None = None
) -> Iterator[str]:
    """The chosen format, a record at a time (``key`` signs ``ear-jwt``)."""
    if fmt == "text":
        return (_text(appraisal) + "\n" for appraisal in results)
    if fmt == "json":
        return json_array_chunks(
            {
                "source": a.record.source,
                "binding_digest": a.record.digest_origin,
                **a.verdict.to_dict(),
                "policy": a.result.to_dict() if a.result is not None else None,
            }
            for a in results
        )
    if fmt == "junit":
        return junit_chunks(results)
    if fmt == "ear-jwt" and key is not None:
        return ear_chunks(results, policy, now, key)
    return json_array_chunks(ear_claims(a, policy, int(now)) for a in results)


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
    type=click.Choice(["text", "json", "junit", "ear", "ear-jwt"]),
    default="text",
    show_default=True,
    help="text for people; json verdicts; junit for CI test views; ear: IETF RATS attestation results; "
    "ear-jwt: each signed with --sign, one JWT a line.",
)
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write the report here."
)
@click.option(
    "--log",
    "log_path",
    type=LOG_LOCATION,
    help="Re-appraise every record stored in this audit log (a file or a postgresql:// URL; offline).",
)
@click.option("--since", help="With --log: from this time (epoch, date or ISO 8601).")
@click.option("--until", help="With --log: before this time.")
@click.option(
    "--tpm-roots",
    "--roots",
    "tpm_roots",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Re-check each AIK's anchor against the TPM manufacturer or enrollment CA roots in this "
    "directory (a record's own anchor evidence at the time it was validated).",
)
@click.option(
    "--nonce",
    "nonce_hex",
    metavar="HEX",
    help="Each quote's extraData must be exactly this nonce (hex; '' for none): evidence made outside "
    "NOMYO, instead of the binding to the payload id and content.",
)
@OFFLINE_OPTION
@KEY_OPTION
@SIGN_OPTION
def verify(
    files: tuple[str, ...],
    policy_file: str | None,
    at: str | None,
    fmt: str,
    output: Path | None,
    log_path: Path | str | None,
    since: str | None,
    until: str | None,
    tpm_roots: Path | None,
    nonce_hex: str | None = None,
    offline: bool = False,
    key_path: Path | None = None,
    sign_path: Path | None = None,
) -> None:
    """Verify the TPM evidence in saved responses or _metadata (JSON, JSON Lines, '-' for stdin).

    With --log, every record stored in an audit log is appraised again, for
    example against a policy with a newly published golden value. Each record
    is judged as of when its reply was received, so the outcome does not
    change with the day of the re-appraisal (--at overrides). Records stream
    through: memory stays flat however large the log.

    With --tpm-roots, each AIK's anchor (an AK certificate chain, or the credential activation
    the client recorded) is re-checked against those roots; a policy with aik_trust ek or ca
    uses its own roots (or the shipped manufacturer roots) otherwise. A quote's cloud anchor
    (tpm_attestation.platform: a GCE AK certificate, an Azure SEV-SNP or TDX report) is re-checked
    the same way.

    With --nonce HEX, each quote's extraData must be exactly that nonce: evidence made outside
    NOMYO (a GCE or Azure vTPM quote for a verifier's challenge) verifies from the command line.

    With --offline, FILES are evidence bundles (nomyo-audit bundle), checked with no network:
    the checkpoint signed by --key, the record's inclusion, the event logs' digests, the quote
    and the anchor (against --roots, else the shipped roots), and --policy; exit 3 when altered.

    Exit status: 0 all verified (or allowed by the policy), 1 a verification
    failed or the policy denied, 2 unreadable or invalid input. A summary goes
    to stderr; 3 when a record or an event log it keeps by digest is missing or was altered.

    \b
    Example:
      nomyo-audit verify --policy policies/production.yaml --format junit -o report.xml replies.jsonl
    """
    nonce = _nonce(nonce_hex)
    if offline and nonce is not None:
        raise click.UsageError("--nonce checks evidence files or --log, not bundles")
    if nonce is not None and log_path is not None:
        click.echo(
            "note: --nonce checks each record's quote against that nonce: a record's quote is then not "
            "bound to its request and reply",
            err=True,
        )
    if offline:  # bundles: nomyo_audit.cli._bundle (exit 3 altered, 1 failed or denied)
        return verify_offline(
            files, key_path=key_path, roots_dir=tpm_roots, policy_file=policy_file, fmt=fmt, output=output
        )
    if not files and log_path is None:
        raise click.UsageError("give evidence files, '-' for stdin, or --log")
    ear_key = ear_signing_key(fmt, sign_path)
    if (since is not None or until is not None) and log_path is None:
        raise click.UsageError("--since and --until select records of --log")
    lo, hi = parse_period(since, until)
    fixed_at = _evaluation_time(at)
    policy = load_policy(policy_file) if policy_file else None
    roots = TrustStore.from_directory(tpm_roots) if tpm_roots is not None else None
    now = time.time()
    tally = Tally()
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(output_stream(output))
        sources: list[Iterable[Record]] = [records_from(name) for name in files]
        total = None
        if log_path is not None:
            log = stack.enter_context(AuditLog.open(log_path))  # read-only: never creates a file
            total = log.size if not files and lo is None and hi is None else None
            rows = _intact(log.store.records(lo, hi))
            stack.callback(rows.close)  # the cursor closes before the log, even when a record fails
            sources.append(stored_records(rows, log.location, log.store.blob))
        # on a terminal showing the text report itself, the records scrolling past are the progress
        shown = output is not None or fmt != "text" or not sys.stdout.isatty()
        progress = stack.enter_context(Progress("verifying", total))
        step = progress if shown else _ignore
        records: Iterable[Record] = itertools.chain.from_iterable(sources)
        if nonce is not None:
            records = (dataclasses.replace(r, expected_nonce=nonce) for r in records)
        results = counted(appraise_all(records, policy, at=fixed_at, now=now, roots=roots), tally, step)
        for chunk in render(fmt, results, policy, now, ear_key):
            out.write(chunk)
    summary = "allowed" if policy is not None else "passed"
    click.echo(
        f"{tally.total} verified: {tally.total - tally.failed} {summary}, {tally.failed} failed", err=True
    )
    if tally.failed:
        raise click.exceptions.Exit(ExitCode.FINDING)


def _nonce(text: str | None) -> bytes | None:
    """``--nonce``: hex of at most 64 bytes (a TPM2B_DATA), or None when not given."""
    if text is None:
        return None
    try:
        nonce = bytes.fromhex(text)
    except ValueError:
        raise click.BadParameter("is not hexadecimal", param_hint="--nonce") from None
    if len(nonce) > 64:
        raise click.BadParameter("a quote's extraData holds at most 64 bytes", param_hint="--nonce")
    return nonce


def _intact(rows: Iterator[StoredRecord]) -> Generator[bytes, None, None]:
    """Each record's bytes, once they match their Merkle leaf hash: a record edited in place (its
    anchor evidence, its verdict) is an integrity failure, never re-appraised as if it were kept.
    ``nomyo-audit log verify --key`` checks the whole tree against the signed checkpoints."""
    try:
        for row in rows:
            if leaf_hash(row.data) != row.leaf:
                raise IntegrityError(f"record {row.seq}: its bytes do not match its leaf hash (altered)")
            yield row.data
    finally:  # the log's cursor closes before the log does
        close = getattr(rows, "close", None)
        if close is not None:
            close()


def _ignore(done: int) -> None:
    pass
