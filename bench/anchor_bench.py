# ruff: noqa: B023, E501  -- each lambda runs inside its own loop iteration; the builder chains read best unwrapped
"""Anchored verification (issue 12 section 7), for bench/verifier_bench.py --anchor.

Per quote with a cached, already validated AK certificate chain against today's unanchored
verification of the same quote (target: within 1.2x), and the one-time costs apart: validating
the AK chain, validating the EK chain, and TPM2_MakeCredential for an activation.
"""

from __future__ import annotations

import base64
import subprocess
import tempfile
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from nomyo_audit.tpm import (
    TrustStore,
    build_ak_certificate,
    make_credential,
    parse_ek_certificate,
    parse_public,
)
from nomyo_audit.tpm._anchor import AnchorEvidence, appraise_anchor
from nomyo_audit.tpm._anchoring import AnchorCache, Anchoring
from nomyo_audit.tpm._verify import verify_attestation


def _ca() -> tuple[Any, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench enrollment CA")])
    now = datetime.now(timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return key, cert


def anchor_rows(
    blocks: dict[str, dict[str, Any]],
    swtpm: Any,
    pid: str,
    digest: bytes,
    rate: Callable[..., float],
    seconds: float,
) -> dict[str, dict[str, float]]:
    """Calls per second for each AIK: unanchored, anchored (cache hit), and the one-time costs."""
    tcti = swtpm.spec
    ek_der = subprocess.run(["tpm2_nvread", "-T", tcti, "0x01c00002"], check=True, capture_output=True).stdout
    ek_der = ek_der[: 4 + int.from_bytes(ek_der[2:4], "big")]
    ek = parse_ek_certificate(ek_der)
    intermediate = x509.load_pem_x509_certificate(Path(swtpm.ca_intermediate_path).read_bytes())
    ek_chain = (ek_der, intermediate.public_bytes(serialization.Encoding.DER))
    ek_store = TrustStore.from_pem(Path(swtpm.ca_root_path).read_bytes())
    with tempfile.TemporaryDirectory() as work:
        subprocess.run(["tpm2_createek", "-T", tcti, "-c", f"{work}/ek.ctx", "-G", "rsa", "-u", f"{work}/ek.pub"],
                       check=True, capture_output=True)  # fmt: skip
        subprocess.run(["tpm2_flushcontext", "-T", tcti, "-t"], check=True, capture_output=True)
        ek_public = parse_public(Path(f"{work}/ek.pub").read_bytes())
    key, cert = _ca()
    ca_store = TrustStore.from_der([cert.public_bytes(serialization.Encoding.DER)])
    now = datetime.now(timezone.utc)
    rows: dict[str, dict[str, float]] = {}
    for kind, plain in blocks.items():
        aik = parse_public(base64.b64decode(plain["aik_pubkey_b64"]))
        ak_der = build_ak_certificate(issuer_key=key, issuer_cert=cert, aik=aik, ek=ek,
                                      not_before=now - timedelta(hours=1), not_after=now + timedelta(days=1))  # fmt: skip
        block = dict(plain, aik_cert_chain_b64=[base64.b64encode(ak_der).decode()])
        anchoring = Anchoring(ca_store, cache=AnchorCache())
        anchored = verify_attestation(block, pid, content_digest=digest, anchor=anchoring)
        assert anchored.passed and anchored.finding("aik_anchor").status == "pass", anchored.failures
        ak_evidence = AnchorEvidence("ca", (ak_der,))
        ek_evidence = AnchorEvidence("ek", ek_chain)
        rows[kind] = {
            "unanchored verify": rate(lambda: verify_attestation(plain, pid, content_digest=digest), seconds),
            "anchored verify (chain cached)": rate(
                lambda: verify_attestation(block, pid, content_digest=digest, anchor=anchoring), seconds
            ),
            "AK chain validation (once per chain)": rate(
                lambda: appraise_anchor(aik, ak_evidence, ca_store, at=now), seconds
            ),
            "EK chain validation (once per activation)": rate(
                lambda: appraise_anchor(aik, ek_evidence, ek_store, at=now), seconds
            ),
            "MakeCredential (once per activation)": rate(
                lambda: make_credential(ek_public, aik.name, b"\x01" * 32), seconds
            ),
        }
    return rows
