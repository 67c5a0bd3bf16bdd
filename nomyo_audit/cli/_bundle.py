"""``nomyo-audit bundle``, ``verify FILE --offline`` and ``report --bundles``: offline evidence bundles.

The bundle itself (its form, building it from a log, verifying it) is :mod:`nomyo_audit.audit._bundle`
and :mod:`nomyo_audit.audit._bundle_verify`; this module reads and writes files and prints.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import click

from .._files import FileExistsRefused, write_file
from ..audit._bundle import MAX_BUNDLE_BYTES, build_bundle, build_bundles, parse_bundle
from ..audit._bundle_verify import BundleResult, verify_bundle
from ..audit._keys import ed25519_public
from ..audit._log import AuditLog
from ..errors import EvidenceError, ExitCode
from ..policy import load_policy
from ..tpm import TrustStore
from ._log import LOG_OPTION, open_log

OFFLINE_OPTION = click.option(
    "--offline", is_flag=True, help="FILES are evidence bundles (nomyo-audit bundle): check them air-gapped."
)
KEY_OPTION = click.option(
    "--key",
    "key_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --offline: the checkpoint signer's public key, from a trusted place.",
)


def bundle_bytes(bundle: Mapping[str, Any]) -> bytes:
    """A bundle as its file holds it: JSON, two-space indented, one trailing newline."""
    return (json.dumps(bundle, indent=2) + "\n").encode()


def read_bundle(path: Path, limit: int = MAX_BUNDLE_BYTES) -> dict[str, Any]:
    """A bundle file, read at most ``limit`` + 1 bytes so an oversized one is refused, never held."""
    try:
        with path.open("rb") as stream:
            data = stream.read(limit + 1)
    except OSError as exc:
        raise EvidenceError(f"{path}: cannot read: {exc.strerror or exc}", code="unreadable") from None
    try:
        return parse_bundle(data, limit=limit)
    except EvidenceError as exc:
        raise EvidenceError(f"{path}: {exc.message}", code=exc.code) from None


@click.command("bundle")
@click.argument("payload_id")
@LOG_OPTION
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--force", is_flag=True, help="Replace the output file if it exists.")
def bundle(payload_id: str, log_path: Path, output: Path, force: bool) -> None:
    """Write an offline evidence bundle of one reply: everything needed to re-check it with no network.

    The record, the event logs it keeps by digest, its inclusion proof and the signed checkpoint it
    leads to (with every signature kept), and the anchor evidence (certificate chains) it holds.
    Check it anywhere with 'nomyo-audit verify FILE --offline --key audit.key.pub'.

    Exit status 0 when written, 2 when there is no such record or no checkpoint covers it yet,
    3 when the log's records no longer match its latest checkpoint.

    \b
    Example:
      nomyo-audit bundle 5128aaf2-1ef9-4a21-aec8-2f6a6062008d --log audit.db -o reply.bundle.json
    """
    with open_log(log_path) as log:
        document = build_bundle(log, payload_id)
    write_file(output, bundle_bytes(document), mode=0o644, overwrite=force)
    click.echo(f"wrote {output}: record {document['seq']} of {document['log']['origin']}", err=True)


def verify_offline(
    files: Iterable[str],
    *,
    key_path: Path | None,
    roots_dir: Path | None,
    policy_file: str | None,
    fmt: str,
    output: Path | None = None,
) -> None:
    """``verify FILE... --offline``: check each bundle air-gapped; exit 3 / 1 / 0 for the worst one.

    The results go to stdout, or to ``output`` (replaced whole), the summary to stderr."""
    names = list(files)
    if not names:
        raise click.UsageError("--offline verifies bundle files: give one or more")
    if fmt not in ("text", "json"):
        raise click.UsageError("--offline writes text or json")
    key = ed25519_public(key_path) if key_path is not None else None
    roots = TrustStore.from_directory(roots_dir) if roots_dir is not None else None
    policy = load_policy(policy_file) if policy_file else None
    results: list[tuple[str, BundleResult]] = []
    for name in names:
        results.append((name, verify_bundle(read_bundle(Path(name)), key=key, roots=roots, policy=policy)))
    if fmt == "json":
        text = json.dumps([{"source": name, **r.to_dict()} for name, r in results], indent=2) + "\n"
    else:
        text = "".join(f"{name}: " + "\n".join(result.summary()) + "\n" for name, result in results)
    if output is None:
        click.echo(text, nl=False)
    else:
        write_file(output, text.encode(), mode=0o644, overwrite=True)
    if key is None:
        click.echo("note: no --key: checkpoints were checked with the key each bundle names", err=True)
    worst = max(r.exit_code for _, r in results)
    intact = sum(r.intact for _, r in results)
    click.echo(
        f"{len(results)} bundle(s): {intact} intact, {sum(r.code == 'ok' for _, r in results)} ok", err=True
    )
    if worst != ExitCode.OK:
        raise click.exceptions.Exit(worst)


def write_failure_bundles(
    log: AuditLog,
    failures: Iterable[Mapping[str, Any]],
    directory: Path,
    report_dir: Path,
    *,
    overwrite: bool = False,
) -> list[dict[str, Any]]:
    """One bundle per failed record of a report (``record-<seq>.bundle.json``) in ``directory``.

    Returns what the report document lists under ``bundles``: each bundle's payload id, seq, file
    (relative to ``report_dir``) and SHA-256, so the signed report vouches for the bundles' bytes.
    Records after the latest checkpoint cannot be proven yet: they are named on stderr, not bundled.
    An existing bundle file is replaced only with ``overwrite`` (checked before any is written).
    """
    latest = log.latest_checkpoint()
    covered = latest.size if latest is not None else 0
    wanted = [f for f in failures if isinstance(f.get("payload_id"), str) and isinstance(f.get("seq"), int)]
    provable = [f for f in wanted if f["seq"] < covered]
    if len(provable) < len(wanted):
        click.echo(
            f"note: {len(wanted) - len(provable)} failed record(s) are after the latest checkpoint and were "
            "not bundled: run 'nomyo-audit log checkpoint' first",
            err=True,
        )
    targets = [directory / f"record-{f['seq']}.bundle.json" for f in provable]
    existing = [t for t in targets if t.exists() or t.is_symlink()]
    if existing and not overwrite:
        raise FileExistsRefused(f"{existing[0]} exists (--force replaces bundle files)")
    directory.mkdir(parents=True, exist_ok=True)
    listed = []
    for document in build_bundles(log, [f["payload_id"] for f in provable]) if provable else ():
        data = bundle_bytes(document)
        path = write_file(
            directory / f"record-{document['seq']}.bundle.json", data, mode=0o644, overwrite=True
        )
        listed.append(
            {
                "payload_id": document["payload_id"],
                "seq": document["seq"],
                "file": os.path.relpath(path, report_dir),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
    return listed
