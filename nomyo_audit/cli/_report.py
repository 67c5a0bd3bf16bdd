"""``nomyo-audit report`` and ``nomyo-audit verify-report``.

A report is only as true as the log under it: ``report`` verifies the whole
log (every record's bytes against the Merkle tree, every checkpoint against
the records) before it renders or signs anything, and refuses a log that does
not verify. ``verify-report --log`` recomputes the log's root at the report's
checkpoint size from the record bytes themselves, never from a stored hash.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from ..audit import (
    FORMATS,
    AuditLog,
    build_report,
    ed25519_public,
    load_private_key,
    load_public_key,
    write_report,
)
from ..audit._records import rfc3339
from ..audit._store import StoredRecord
from ..policy import load_policy
from ._bundle import write_failure_bundles
from ._log import LOG_OPTION, parse_period, parse_time
from ._log_location import LOG_LOCATION
from ._progress import Progress
from ._report_chain import Previous, check_against_log, report_findings, verify_series
from ._report_ear import EAR_JWT_FILE, EAR_JWT_OPTION, ear_report_key, remove_partial, write_ear_tokens
from ._report_scope import SCOPE_OPTIONS, in_scope, same_scope, scope_note, scope_of, scoped

_RFC3339 = re.compile(r"^\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(\.\d{1,9})?([Zz]|[+-]\d\d:\d\d)$")


def _rows(
    log: AuditLog, size: int, since: float | None, until: float | None, span: list[int], what: str = "reading"
) -> Iterator[StoredRecord]:
    """The stored records of the period among the first ``size`` (the records just verified).

    ``span`` becomes ``[start, end]``: the period's records are exactly records start to end-1 of
    the log (the time column never goes back), so a chained report can show no record fell between.
    """
    span[:] = [0, 0]
    with Progress(what, size) as step:
        for stored in log.store.records(None, until):
            if stored.seq >= size:
                return
            span[1] = stored.seq + 1
            if since is not None and stored.time < since:
                span[0] = stored.seq + 1
                continue
            step(stored.seq + 1)
            yield stored


def _records(rows: Iterator[StoredRecord]) -> Iterator[Any]:
    """Each row's record document; bytes that verified but are not JSON are None (a malformed record)."""
    for stored in rows:
        try:
            yield json.loads(stored.data)
        except ValueError:
            yield None


def _generated_at(value: str | None) -> str:
    if value is None:
        return rfc3339(time.time())
    try:
        if _RFC3339.match(value):
            _dt.datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
            return value
    except ValueError:
        pass
    raise click.BadParameter(
        f"{value!r} is not an RFC 3339 time (for example 2026-11-25T12:00:00Z)", param_hint="--generated-at"
    )


def _moment(value: str | None, flag: str) -> float | None:
    try:
        return parse_time(value)
    except click.BadParameter as exc:
        raise click.BadParameter(exc.message, param_hint=flag) from None


@click.command()
@LOG_OPTION
@click.option("--since", help="From this time (epoch, date or ISO 8601).")
@click.option("--until", help="Before this time.")
@click.option(
    "--policy", "policy_file", envvar="NOMYO_POLICY", help="Re-appraise every record against this policy."
)
@click.option(
    "--at",
    "at_time",
    help="With --policy: judge freshness (max_age, clock_skew) at this time instead of each record's own.",
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
    "--log-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The checkpoint signer's public key (from a trusted place); default: the key the log names.",
)
@click.option(
    "--generated-at",
    help="Generation time to print, RFC 3339 (default now): the same value re-renders identically.",
)
@click.option("--force", is_flag=True, help="Replace report files already in the output directory.")
@click.option(
    "--previous",
    type=click.Path(exists=True, path_type=Path),
    help="Chain from this signed report: prove the log only grew since its checkpoint; "
    "the period starts where its period ended.",
)
@click.option(
    "--bundles",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also write an offline evidence bundle per failed record here (nomyo-audit verify FILE --offline).",
)
@EAR_JWT_OPTION
@SCOPE_OPTIONS
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), required=True)
def report(
    log_path: Path | str,
    since: str | None,
    until: str | None,
    policy_file: str | None,
    at_time: str | None,
    formats: str,
    sign_key: Path | None,
    log_key: Path | None,
    generated_at: str | None,
    force: bool,
    previous: Path | None,
    output: Path,
    bundles: Path | None = None,
    ear_jwt: bool = False,
    service: str | None = None,
    router: str | None = None,
    tenant: str | None = None,
) -> None:
    """Verify the audit log, then render a compliance report from it in several formats from one run.

    Exit status 0 when written, 3 when the log does not verify (nothing is
    rendered or signed then), 2 for bad input or an existing report file
    (--force replaces files; a symlink is never written through).

    \b
    Example:
      nomyo-audit report --log audit.db --policy production \\
        --format html,md,json,junit,csv --sign audit.key -o out/
    """
    chosen = [f.strip() for f in formats.split(",") if f.strip()]
    scope = scope_of(service, router, tenant)
    stamp = _generated_at(generated_at)
    lo, hi = (_to_milliseconds(bound) for bound in parse_period(since, until))  # as the report states them
    at = _moment(at_time, "--at")
    policy = load_policy(policy_file) if policy_file else None
    key = load_private_key(sign_key) if sign_key is not None else None
    ear_key = ear_report_key(key) if ear_jwt else None
    tokens: Path | None = None
    chained = Previous(previous, key) if previous is not None else None
    if chained is not None:
        same_scope(chained.document, scope)
    lo = chained.since(lo) if chained is not None else lo
    if lo is not None and hi is not None and lo > hi:
        raise click.BadParameter("the period starts after --until", param_hint="--until")
    trusted = ed25519_public(log_key) if log_key is not None else None
    start, span = time.monotonic(), [0, 0]
    with AuditLog.open(log_path) as log:
        with Progress("verifying the log", log.store.count()) as step:
            state = log.verified_state(trusted, progress=step)
        document = build_report(
            _records(_rows(log, state.size, lo, hi, span)),
            generated_at=stamp,
            log_state=state,
            policy=policy,
            period=(rfc3339(lo) if lo is not None else None, rfc3339(hi) if hi is not None else None),
            at=at,
            blob=log.store.blob,
            scope=scope,
        )
        document["covers"]["span"] = {"from": span[0], "to": span[1]}
        if chained is not None:
            document["chain"] = chained.chain(log, document["covers"]["checkpoint"], trusted)
        if bundles is not None:  # listed (file, sha256) in the document, so the signed report covers them
            failures = document["failures"]
            document["bundles"] = write_failure_bundles(log, failures, bundles, output, overwrite=force)
        if ear_key is not None:  # streamed to a temporary file that write_report signs and moves in
            tokens = write_ear_tokens(
                in_scope(_rows(log, state.size, lo, hi, [0, 0], "signing EAR JWTs"), scope),
                output,
                origin=log.location,
                key=ear_key,
                issued_at=int(parse_time(stamp) or 0),
                policy=policy,
                at=at,
                blob=log.store.blob,
            )
    try:
        streamed = {EAR_JWT_FILE: tokens} if tokens is not None else None
        written = write_report(document, chosen, output, key, overwrite=force, streamed=streamed)
    finally:
        remove_partial(tokens)
    click.echo(
        f"{document['summary']['requests']} records{scoped(document)} in {time.monotonic() - start:.1f}s -> "
        + ", ".join(str(p) for p in written.values()),
        err=True,
    )
    if hi is not None and hi > time.time():
        click.echo(
            "note: the period has not ended: records written later before --until are in no report "
            "(the next chained report names them as a gap)",
            err=True,
        )
    if state.checkpoint is None:
        click.echo("note: the log has no signed checkpoint; run 'nomyo-audit log checkpoint' first", err=True)
    elif state.checkpoint.size < state.size:
        first, last = state.checkpoint.size, state.size - 1
        one = first == last
        which, them = (f"record {first} is", "it") if one else (f"records {first} to {last} are", "them")
        click.echo(
            f"note: {which} after the latest checkpoint, so no signature covers {them} yet; "
            "run 'nomyo-audit log checkpoint' first",
            err=True,
        )
    elif trusted is None:
        click.echo(
            "note: checkpoint signatures were checked with the key stored in the log; "
            "pass --log-key for a trusted one",
            err=True,
        )


@click.command("verify-report")
@click.argument("targets", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--key", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The signer's public key."
)
@click.option(
    "--log",
    "log_path",
    type=LOG_LOCATION,
    help="Also check that this log's records, hashed again, give the report's checkpoint root.",
)
@click.option(
    "--previous",
    "previous",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="The report this one chains from (repeat for earlier ones, oldest first).",
)
def verify_report(
    targets: tuple[Path, ...], key: Path, log_path: Path | str | None, previous: tuple[Path, ...]
) -> None:
    """Check a signed report: the signature, every rendered file's digest and (with --log) its checkpoint.

    Several reports (oldest first, or --previous) are checked as a chain: each one's signature, its
    consistency proof from the previous report's checkpoint, that it names exactly that report,
    and that the periods and records continue with no gap or overlap.

    Exit status 0 when intact, 1 for a gap or overlap, 3 when anything was altered or the chain breaks.

    \b
    Example:
      nomyo-audit verify-report out/ --key audit.key.pub --log audit.db
      nomyo-audit verify-report 2026-11/ 2026-12/ 2027-01/ --key audit.key.pub
    """
    series = [*previous, *targets]
    public = load_public_key(key)
    statements, findings = verify_series(series, public)
    for target, doc in zip(series, statements, strict=True):
        click.echo(f"ok: {target}: signature and {len(doc.get('subject', []))} file digest(s) verify")
        click.echo(scope_note(target, doc), nl=False)
    if log_path is not None:  # one pass over the log for the whole series
        check_against_log(series, statements, log_path)
    report_findings(findings)


def _to_milliseconds(moment: float | None) -> float | None:
    """A period bound at the millisecond precision a report states it with, so the stated period is
    exactly the one selected (and the next chained report starts exactly where this one ended)."""
    return None if moment is None else parse_time(rfc3339(moment))
