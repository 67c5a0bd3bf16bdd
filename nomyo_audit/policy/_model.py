"""A resolved attestation policy: plain data, no I/O."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal, TypedDict, cast

from .._canonical import CanonicalJSONError, canonical_json
from ..errors import NomyoAuditError, SecurityError

__all__ = [
    "MAX_DURATION",
    "AikTrustSpec",
    "BootEventsSpec",
    "CudaDeviceSpec",
    "ImaSpec",
    "KernelCmdlineSpec",
    "Policy",
    "PolicyError",
    "PolicySpec",
    "PolicyViolationError",
    "ServingStackSpec",
    "parse_duration",
]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class PolicyError(NomyoAuditError):
    """A policy file is unreadable or invalid; the message names file, line and field."""

    code = "policy_invalid"
    exit_code = 2


class PolicyViolationError(SecurityError):
    """The evidence does not satisfy a policy whose ``on_failure`` is ``deny``.

    ``result`` is the :class:`PolicyResult`; the response content is
    not kept. ``metadata`` is the evidence the denial rests on, for the audit record.
    """

    code = "policy_denied"

    def __init__(self, message: str, result: Any, metadata: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.result = result
        self.metadata = metadata


#: The longest duration a policy may give (100 years). Durations are added to clocks (a key
#: attestation's expiry, a freshness window): one with hundreds of digits fits no float.
MAX_DURATION = 100 * 365 * 86400


def parse_duration(value: int | str) -> int:
    """Seconds from ``30``, ``"30s"``, ``"5m"``, ``"2h"`` or ``"1d"``, at most :data:`MAX_DURATION`.

    Raises :class:`PolicyError` for anything else, or a duration over 100 years.
    """
    if isinstance(value, int):
        seconds = value
    else:
        match = re.fullmatch(r"(\d{1,20})([smhd])", value)
        if not match:
            shown = value if len(value) <= 32 else value[:32] + "..."
            raise PolicyError(f"{shown!r} is not a duration like 30s, 5m, 2h or 1d (of at most 100 years)")
        seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if seconds > MAX_DURATION:
        raise PolicyError(f"a duration is at most 100 years ({MAX_DURATION} s)")
    return seconds


class AikTrustSpec(TypedDict, total=False):
    """``spec.aik_trust``: which attestation keys a policy trusts."""

    #: ``any`` (any key whose signature verifies: not anchored), ``pinned`` (listed keys), ``ek``
    #: (a credential activation against a certified EK), ``ca`` (an AK certificate chain), or a cloud's
    #: anchor of the vTPM AK: ``gce-ak-cert``, ``azure-sev-snp``, ``azure-tdx`` (``tpm_attestation.platform``)
    mode: Literal["any", "pinned", "ek", "ca", "gce-ak-cert", "azure-sev-snp", "azure-tdx"]
    #: AIK fingerprints (SHA-256 of the DER public key) or TPM names, hex. ``pinned`` trusts only
    #: these; with another mode they are an added restriction (``ek``/``ca``: anchored AND pinned)
    pinned: list[str]
    #: trust roots (``ek``: TPM manufacturer roots, ``ca``: enrollment CA roots): PEM/DER files or
    #: directories, relative to the policy file; without it, the shipped manufacturer roots
    roots: list[str]
    #: the older name of ``roots``
    ca_certificates: list[str]
    #: TPM manufacturers accepted (``id:49465800`` or a name such as ``Infineon``); any when absent
    manufacturers: list[str]


class CudaDeviceSpec(TypedDict, total=False):
    """``spec.cuda_device``: what the router must report about its GPU."""

    available: bool
    #: allowed device hashes, hex
    device_hashes: list[str]


class BootEventsSpec(TypedDict, total=False):
    """``spec.boot_events``: allow- and deny-lists of the digests of proven boot events (hex)."""

    #: every proven PCR 0 firmware blob / POST code is one of these
    firmware: list[str]
    #: every proven PCR 4 boot application (boot loader, shim, kernel as an EFI image) is one of these
    boot_applications: list[str]
    #: no proven event in any PCR has one of these digests (like a dbx)
    deny: list[str]


class KernelCmdlineSpec(TypedDict, total=False):
    """``spec.kernel_cmdline``: regular expressions (``re.search``) on the proven kernel command lines."""

    #: each matches some proven command line
    require: list[str]
    #: none matches any proven command line
    forbid: list[str]


class ImaSpec(TypedDict, total=False):
    """``spec.ima``: what the proven IMA measurement list may hold (Keylime runtime policy semantics)."""

    #: a Keylime runtime policy (JSON), relative to the policy file; the loader reads it and merges
    #: its digests and excludes into ``digests``/``excludes`` of the spec (not of the document)
    runtime_policy: str
    #: SHA-256 (hex) of the runtime policy's bytes: written by the loader into the resolved document,
    #: so the policy's digest changes with the runtime policy; stated in a file, it pins the content
    runtime_policy_sha256: str
    #: path -> allowed file digests (hex)
    digests: dict[str, list[str]]
    #: regular expressions of paths that are not appraised
    excludes: list[str]


class ServingStackSpec(TypedDict, total=False):
    """``spec.serving_stack``: the measured router build and models (PCR 23 events, proven)."""

    #: ``fnmatch`` patterns of the measured router version
    router_versions: list[str]
    #: measured router code digests (hex SHA-256)
    router_code: list[str]
    #: model name -> allowed weights digests, or ``any`` (measured, any digest)
    models: dict[str, list[str] | Literal["any"]]


class PolicySpec(TypedDict, total=False):
    """A policy's rules (its ``spec``) as policy files state them (docs/policies.md), so mypy
    checks the keys rules read. :func:`load_policy` validates a file against the schema
    (:func:`policy_schema`) before its spec is used as one of these."""

    require_attestation: bool
    security_tiers: list[str]
    #: model name patterns (``fnmatch``)
    models: list[str]
    #: golden values: ``{bank: {index: [hex, ...] or "any"}}``
    pcrs: dict[str, dict[str, list[str] | Literal["any"]]]
    #: PCRs the quote must cover: ``{bank: [index, ...]}``
    pcr_selection: dict[str, list[int]]
    #: extraData derivations accepted
    nonce_binding: list[str]
    #: the quote must bind the protocol 1.0 client key (``nomyo-audit-v2``, ``facts.key_binding``)
    require_key_binding: bool
    aik_trust: AikTrustSpec
    memory_protection: list[str]
    cuda_device: CudaDeviceSpec
    #: durations: seconds, or text like ``30s``, ``5m``, ``2h``, ``1d``
    max_age: int | str
    clock_skew: int | str
    require_key_attestation: bool
    key_attestation_ttl: int | str
    on_failure: Literal["deny", "warn"]
    #: the proven SecureBoot variable (PCR 7)
    secure_boot: Literal["enabled", "disabled"]
    boot_events: BootEventsSpec
    kernel_cmdline: KernelCmdlineSpec
    ima: ImaSpec
    serving_stack: ServingStackSpec


@dataclass(frozen=True)
class Policy:
    """A policy after ``extends`` was applied. ``digest`` identifies it exactly.

    The digest is SHA-256 over the canonical JSON of the resolved document
    (apiVersion, kind, metadata, spec), so reformatting a file or splitting
    it into ``extends`` layers does not change it, and any change in meaning does.
    """

    name: str
    description: str
    spec: PolicySpec
    source: str = "<memory>"
    document: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @cached_property
    def digest(self) -> str:
        """SHA-256 (hex) of the RFC 8785 canonical JSON of the resolved document (docs/protocol.md).

        For every document of strings, integers, booleans, lists and objects with keys in the
        Basic Multilingual Plane (every policy the loader accepts whose numbers are integers),
        the bytes are the sorted-keys JSON the digest was taken over before, so the digest did
        not change. Raises :class:`PolicyError` (``policy_not_canonical``) for a document with
        no canonical JSON (NaN, a lone surrogate), which the loader refuses before.
        """
        try:
            return hashlib.sha256(canonical_json(dict(self.document))).hexdigest()
        except CanonicalJSONError as exc:
            raise PolicyError(f"{self.source}: {exc.message}", code="policy_not_canonical") from None

    @property
    def on_failure(self) -> str:
        """``deny`` (the default: a failing rule stops the request) or ``warn`` (it is only reported)."""
        stated: str = self.spec.get("on_failure", "deny")
        return str(stated)

    @property
    def clock_skew(self) -> int:
        """Seconds of clock difference ``max_age`` tolerates (default 60). Raises :class:`PolicyError`."""
        stated: int | str = self.spec.get("clock_skew", 60)
        return parse_duration(stated)

    @property
    def key_attestation_ttl(self) -> int:
        """Seconds a router key's attestation is trusted before it is asked for again (default 5m).

        Raises :class:`PolicyError` for a duration that is not one.
        """
        stated: int | str = self.spec.get("key_attestation_ttl", "5m")
        return parse_duration(stated)

    @property
    def require_key_attestation(self) -> bool:
        """Whether the router's key must be attested (:data:`KEY_SCOPE` rules) before a prompt is sent."""
        stated: bool = self.spec.get("require_key_attestation", False)
        return bool(stated)

    @classmethod
    def from_document(cls, document: Mapping[str, Any], source: str = "<memory>") -> Policy:
        """The policy a resolved document states, named after ``source`` in messages.

        The document is not validated here (:func:`validate_document` does that;
        :func:`load_policy` does both). Raises nothing.
        """
        metadata = document.get("metadata", {})
        return cls(
            name=str(metadata.get("name", "")),
            description=str(metadata.get("description", "")),
            spec=cast(PolicySpec, dict(document.get("spec", {}))),
            source=source,
            document={k: document[k] for k in ("apiVersion", "kind", "metadata", "spec") if k in document},
        )
