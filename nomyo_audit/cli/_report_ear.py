"""``report --ear-jwt``: each record a report covers as a signed EAR JWT (draft-ietf-rats-ear).

One JSON line per record, ``{"seq", "payload_id", "jwt"}`` in record order, streamed to a temporary
file in the report directory: :func:`nomyo_audit.audit.write_report` signs its digest with the other
report files and moves it into place, so memory stays flat for any number of records and a refused
or failed run leaves no token file. Each record's evidence is verified again (and appraised against
the report's ``--policy``), as ``verify --log --format ear-jwt`` does, and the claims are built and
signed by the same code (:mod:`._ear`). The tokens are signed with the report's own ``--sign`` key
(Ed25519: EdDSA, P-256: ES256): whoever signs the report vouches for its attestation results too.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import click

from ..audit._blobs import BlobReader
from ..audit._ear_jwt import jwt_algorithm, sign_ear
from ..audit._keys import SigningKey
from ..audit._store import StoredRecord
from ..policy import Policy, appraise_all
from ..policy._appraise import stored_record
from ._ear import ear_claims

__all__ = ["EAR_JWT_FILE", "EAR_JWT_OPTION", "ear_report_key", "remove_partial", "write_ear_tokens"]

#: The token file, beside the other report files.
EAR_JWT_FILE = "report.ear.jwt"

EAR_JWT_OPTION = click.option(
    "--ear-jwt",
    is_flag=True,
    help=f"Also write {EAR_JWT_FILE}: each record as an EAR JWT signed with the --sign key "
    "(Ed25519: EdDSA, P-256: ES256), one JSON line per record, signed with the report.",
)


def ear_report_key(key: SigningKey | None) -> SigningKey:
    """The report key, checked to sign JWTs before any record is read (an RSA key signs reports only).

    Raises :class:`click.UsageError` without ``--sign`` and :class:`nomyo_audit.errors.ConfigurationError`
    (``ear_key_unsupported``, exit 2) for a key no EAR JWT is signed with.
    """
    if key is None:
        raise click.UsageError(
            "--ear-jwt signs each record's attestation result with the report's key: give --sign"
        )
    jwt_algorithm(key)
    return key


def write_ear_tokens(
    rows: Iterable[StoredRecord],
    directory: Path,
    *,
    origin: str,
    key: SigningKey,
    issued_at: int,
    policy: Policy | None,
    at: float | None,
    blob: Any,
) -> Path:
    """Stream one token line per row into a temporary file in ``directory``; return its path.

    The caller hands it to ``write_report(streamed=...)``, which signs and moves it, and removes it
    if that never happens. Raises what re-appraising a record raises (an event log it keeps by
    digest missing or altered: :class:`nomyo_audit.errors.IntegrityError`); the file is removed then.
    """
    directory.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(dir=directory, prefix=f".{EAR_JWT_FILE}.", suffix=".partial")
    partial = Path(name)
    try:
        with open(descriptor, "w", encoding="utf-8") as out:
            for line in _lines(rows, origin, key, issued_at, policy, at, BlobReader(blob)):
                out.write(line)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return partial


def _lines(
    rows: Iterable[StoredRecord],
    origin: str,
    key: SigningKey,
    issued_at: int,
    policy: Policy | None,
    at: float | None,
    reader: BlobReader,
) -> Iterator[str]:
    for row in rows:
        try:
            document = json.loads(row.data)
        except ValueError:
            document = None
        if not isinstance(document, dict):  # counted as malformed in the report: no appraisal to sign
            yield _line({"seq": row.seq, "payload_id": None, "jwt": None, "error": "record_not_json"})
            continue
        record = stored_record(document, origin, reader)
        for appraisal in appraise_all([record], policy, at=at, now=issued_at):
            token = sign_ear(ear_claims(appraisal, policy, issued_at), key)
            yield _line({"seq": row.seq, "payload_id": document.get("payload_id"), "jwt": token})


def _line(entry: dict[str, Any]) -> str:
    return json.dumps(entry, separators=(",", ":")) + "\n"


def remove_partial(path: Path | None) -> None:
    """Remove a token file ``write_report`` did not move into place (it refused, or failed)."""
    if path is not None:
        path.unlink(missing_ok=True)
