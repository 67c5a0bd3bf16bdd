"""EAR output of ``verify``: ``--format ear`` (JSON claims-sets) and ``--format ear-jwt --sign KEY``
(one signed JWT per appraised record, one a line, in record order)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import click

from ..audit._ear_jwt import jwt_algorithm, sign_ear
from ..audit._keys import SigningKey, load_private_key
from ..policy import Appraisal, Policy
from ..tpm._ear import to_ear

__all__ = ["SIGN_OPTION", "ear_chunks", "ear_claims", "ear_signing_key"]

SIGN_OPTION = click.option(
    "--sign",
    "sign_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --format ear-jwt: sign each attestation result with this private key "
    "(Ed25519: EdDSA, ECDSA P-256: ES256; nomyo-audit keys generate).",
)


def ear_signing_key(fmt: str, sign_path: Path | None) -> SigningKey | None:
    """The key ``--sign`` names, checked before any record is read; usage errors for a format and
    an option that do not go together. Raises ConfigurationError for an unreadable or unsuitable key."""
    if fmt == "ear-jwt" and sign_path is None:
        raise click.UsageError("--format ear-jwt needs --sign KEY (an Ed25519 or P-256 private key)")
    if fmt != "ear-jwt" and sign_path is not None:
        raise click.UsageError("--sign signs --format ear-jwt")
    if sign_path is None:
        return None
    key = load_private_key(sign_path)
    jwt_algorithm(key)  # an RSA or P-384 key is refused now, not after the first record
    return key


def ear_claims(appraisal: Appraisal, policy: Policy | None, issued_at: int) -> dict[str, Any]:
    """One appraisal as an EAR claims-set, its policy result included."""
    return to_ear(appraisal.verdict, issued_at=issued_at, policy_result=appraisal.result, policy=policy)


def ear_chunks(
    results: Iterable[Appraisal], policy: Policy | None, now: float, key: SigningKey
) -> Iterator[str]:
    """One compact JWT a line per appraisal, as the records stream past."""
    for appraisal in results:
        yield sign_ear(ear_claims(appraisal, policy, int(now)), key) + "\n"
