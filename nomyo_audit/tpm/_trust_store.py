"""Trust anchors for TPM certificate chains: manufacturer EK roots, enrollment-CA roots.

A :class:`TrustStore` is an immutable set of certificates, each one trusted as an anchor (roots,
and the manufacturer intermediates published next to them). It is read from a directory the
user names (``--tpm-roots DIR``, policy ``aik_trust.roots``), from PEM text, or from the
manufacturer roots shipped in the wheel (:meth:`TrustStore.bundled`, docs/tpm-roots.md). Reading
is bounded (file count, file size, certificate size) and every unusable file is a
:class:`~nomyo_audit.errors.CertificateError` with code ``cert_trust_store`` naming the file:
a trust directory that silently drops a root would turn a configuration mistake into a finding
about the TPM.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from functools import lru_cache
from importlib import resources
from pathlib import Path

from ..errors import CertificateError
from ._x509 import RawCertificate, decode_name, read_certificate

__all__ = ["MAX_STORE_FILES", "MAX_STORE_FILE_BYTES", "TrustStore"]

#: At most this many certificate files are read from a trust directory.
MAX_STORE_FILES = 10_000
#: A PEM bundle larger than this is refused (the largest vendor bundle is under 1 MiB).
MAX_STORE_FILE_BYTES = 4 * 1024 * 1024
_SUFFIXES = (".pem", ".crt", ".cer", ".der")
_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+?)-----END CERTIFICATE-----")


def _store_error(message: str) -> CertificateError:
    return CertificateError(message, code="cert_trust_store")


class TrustStore:
    """Certificates trusted as anchors for EK and AK chains, looked up by subject and key."""

    def __init__(self, certificates: Iterable[RawCertificate] = ()) -> None:
        unique: dict[str, RawCertificate] = {}
        for certificate in certificates:
            unique.setdefault(certificate.sha256, certificate)
        self._certificates = tuple(unique.values())
        self._sha256s = frozenset(unique)
        self._by_subject: dict[object, list[RawCertificate]] = {}
        self._anchors: dict[tuple[object, bytes], RawCertificate] = {}
        for certificate in self._certificates:
            self._by_subject.setdefault(decode_name(certificate.subject), []).append(certificate)
            self._anchors.setdefault((decode_name(certificate.subject), certificate.spki), certificate)

    @classmethod
    def from_der(cls, certificates: Iterable[bytes]) -> TrustStore:
        """A store of these DER certificates."""
        return cls(read_certificate(der) for der in certificates)

    @classmethod
    def from_pem(cls, data: bytes | str) -> TrustStore:
        """A store of every certificate in PEM text (one or many ``BEGIN CERTIFICATE`` blocks)."""
        return cls(
            read_certificate(der) for der in _pem_blocks(data.encode() if isinstance(data, str) else data)
        )

    @classmethod
    def from_directory(cls, path: str | Path) -> TrustStore:
        """Every ``*.pem``/``*.crt``/``*.cer``/``*.der`` file under ``path`` (recursively); PEM
        files may hold several certificates. Other files (PROVENANCE.md) are ignored."""
        root = Path(path)
        if not root.is_dir():
            raise _store_error(f"TPM trust directory {root} does not exist or is not a directory")
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in _SUFFIXES and p.is_file())
        if len(files) > MAX_STORE_FILES:
            raise _store_error(
                f"TPM trust directory {root} holds more than {MAX_STORE_FILES} certificate files"
            )
        certificates: list[RawCertificate] = []
        for file in files:
            certificates += _read_file(file)
        if not certificates:
            raise _store_error(f"TPM trust directory {root} holds no certificate")
        return cls(certificates)

    @classmethod
    def bundled(cls) -> TrustStore:
        """The TPM manufacturer roots and intermediates shipped in the wheel (docs/tpm-roots.md)."""
        return _bundled()

    def __len__(self) -> int:
        return len(self._certificates)

    def __or__(self, other: TrustStore) -> TrustStore:
        return TrustStore((*self._certificates, *other._certificates))

    @property
    def certificates(self) -> tuple[RawCertificate, ...]:
        """The anchors, in the order they were read."""
        return self._certificates

    @property
    def sha256s(self) -> frozenset[str]:
        """Hex SHA-256 of each anchor's DER."""
        return self._sha256s

    def issuers_of(self, certificate: RawCertificate) -> list[RawCertificate]:
        """Anchors whose subject is the certificate's issuer (names compared as RFC 5280 7.1 asks)."""
        return list(self._by_subject.get(decode_name(certificate.issuer), ()))

    def anchor_for(self, certificate: RawCertificate) -> RawCertificate | None:
        """The store's own copy of this anchor: same subject and same key (a twin re-encoded by
        another publisher is the same anchor), or None. Path checks must use this copy, never the
        one a chain presents: an anchor's own signature is not checked, so a presented copy's
        validity or constraints prove nothing."""
        if certificate.sha256 in self.sha256s:
            return certificate
        return self._anchors.get((decode_name(certificate.subject), certificate.spki))

    def holds(self, certificate: RawCertificate) -> bool:
        """Whether this certificate is an anchor (:meth:`anchor_for` finds it)."""
        return self.anchor_for(certificate) is not None


def _read_file(file: Path) -> list[RawCertificate]:
    try:
        if file.stat().st_size > MAX_STORE_FILE_BYTES:
            raise _store_error(f"{file} is larger than {MAX_STORE_FILE_BYTES} bytes")
        data = file.read_bytes()
    except OSError as exc:
        raise _store_error(f"{file} cannot be read ({exc.strerror})") from None
    try:
        blocks = _pem_blocks(data) if b"-----BEGIN" in data else [data]
        return [read_certificate(der) for der in blocks]
    except CertificateError as exc:
        raise _store_error(f"{file}: {exc.message}") from None


def _pem_blocks(data: bytes) -> list[bytes]:
    blocks = []
    for match in _PEM.finditer(data):
        try:
            blocks.append(base64.b64decode(b"".join(match.group(1).split()), validate=True))
        except (binascii.Error, ValueError):
            raise _store_error("a PEM certificate block is not valid base64") from None
    if not blocks:
        raise _store_error("no PEM certificate found")
    return blocks


@lru_cache(maxsize=1)
def _bundled() -> TrustStore:
    root = resources.files("nomyo_audit") / "data" / "tpm-roots"
    certificates: list[RawCertificate] = []
    for vendor in sorted(root.iterdir(), key=lambda entry: entry.name):
        if not vendor.is_dir():
            continue
        for entry in sorted(vendor.iterdir(), key=lambda entry: entry.name):
            if entry.name.endswith(".pem"):
                certificates += [read_certificate(der) for der in _pem_blocks(entry.read_bytes())]
    return TrustStore(certificates)
