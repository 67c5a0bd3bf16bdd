"""Anchor appraisal per quote at the cost of a dictionary lookup: the validated-chain cache, and the
:class:`Anchoring` hook :func:`verify_attestation` calls for ``aik_anchor``. Pure, no I/O.

A router quotes every reply with the same AIK and attaches the same chain, so a chain validated
once is not validated again while nothing it depends on changed: the cache is keyed by the chain's
bytes, the activation outcome, the AIK, the trust store and the vendors accepted, and an entry is
used only while the time of appraisal lies inside the chain's validity window. Only passes are
kept (a failure is re-appraised, and says why each time).
"""

from __future__ import annotations

import dataclasses
import hmac
import threading
import time
from collections import OrderedDict
from collections.abc import Collection, Mapping
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, cast

from ..errors import EvidenceError
from ._aik import aik_material
from ._anchor import AnchorEvidence, AnchorResult, appraise_anchor, platform_digest, read_chain
from ._platform import PlatformEvidence, read_platform
from ._public import Public
from ._verdict import Finding, Verdict, VerdictFacts

__all__ = ["AnchorCache", "Anchoring", "evidence_in_block", "recorded_anchoring", "with_anchor"]

#: the aik_anchor finding of evidence that offers no anchor (verify_attestation's too, without an anchor)
NO_ANCHOR = Finding(
    "aik_anchor",
    "skip",
    "aik_not_anchored",
    "AIK not anchored to a hardware root of trust: no certificate chain, so the quote proves "
    "consistency, not genuine hardware",
)


class AnchorCache:
    """Passing appraisals, by everything they depend on, each used only inside its validity window.

    Bounded (least recently used out) and safe to share between threads.
    """

    def __init__(self, max_entries: int = 256) -> None:
        self._entries: OrderedDict[tuple[Any, ...], tuple[Any, AnchorResult]] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()

    def appraise(
        self,
        aik: Public,
        evidence: AnchorEvidence,
        store: Any,
        *,
        at: datetime,
        manufacturers: Collection[str] = (),
    ) -> AnchorResult:
        """:func:`appraise_anchor`, answered from the cache while the same pass still holds at ``at``."""
        vendors = tuple(sorted(manufacturers))
        key = (
            evidence.kind,
            evidence.chain,
            evidence.activation,
            evidence.ek_public,
            evidence.platform,
            aik.name,
            id(store),
            vendors,
        )
        entry = self._entries.get(key)
        if entry is not None and entry[0] is store:
            cached = entry[1]
            # a pass is kept only with its window (see appraise below), so both ends are set
            if cached.valid_from is not None and cached.valid_from <= at <= cached.valid_until:  # type: ignore[operator]
                return cached
        result = appraise_anchor(aik, evidence, store, at=at, manufacturers=vendors)
        if result.finding.status == "pass" and result.valid_from is not None:
            with self._lock:
                self._entries[key] = (store, result)
                self._entries.move_to_end(key)
                while len(self._entries) > self._max:
                    self._entries.popitem(last=False)
        return result

    def clear(self) -> None:
        """Forget every appraisal (a trust store changed on disk, for example)."""
        with self._lock:
            self._entries.clear()


#: the cache shared by every :class:`Anchoring` that is not given its own
SHARED_CACHE = AnchorCache()


class Anchoring:
    """How :func:`verify_attestation` appraises ``aik_anchor``: against ``store`` (a TrustStore),
    with ``evidence`` when the caller holds it (a credential activation it ran), else the anchor
    the quote carries (its ``platform`` object, else its ``aik_cert_chain_b64``). ``at`` is when
    chains are judged (default: the time of each appraisal; an offline re-check gives the recorded time)."""

    __slots__ = ("_last", "at", "cache", "evidence", "failure", "manufacturers", "recorded", "store")

    def __init__(
        self,
        store: Any,
        *,
        evidence: AnchorEvidence | None = None,
        at: datetime | None = None,
        manufacturers: Collection[str] = (),
        cache: AnchorCache | None = None,
        failure: Finding | None = None,
        recorded: bool = False,
    ) -> None:
        self.store = store
        #: the evidence is a record of an activation run earlier (an audit log's), not one run now:
        #: a pass then says that the activation was recorded and not run again
        self.recorded = recorded
        #: the finding of every appraisal when the anchor evidence could not be read (a record's)
        self.failure = failure
        self.evidence = evidence
        self.at = at
        self.manufacturers = tuple(manufacturers)
        self.cache = cache if cache is not None else SHARED_CACHE
        #: the last pass, by the identity of its evidence and AIK objects (both come from caches, so
        #: a router's every quote hits this), with its validity window as epoch seconds
        self._last: tuple[object, object, AnchorResult, float, float] | None = None

    def __call__(self, aik: Public, block: Mapping[str, Any], facts: Any) -> Finding:
        """The ``aik_anchor`` finding for a quote whose signature by ``aik`` verified; the anchor's
        facts go into ``facts``. Raises nothing."""
        if self.failure is not None:
            return self.failure
        evidence = self.evidence
        if evidence is None:
            try:
                evidence = evidence_in_block(block)
            except EvidenceError as exc:
                return Finding("aik_anchor", "fail", exc.code, exc.message)
            if evidence is None:
                return NO_ANCHOR
        elif evidence.platform is None and evidence.platform_sha256 is not None:
            resolved = _recorded_platform(evidence, block)
            if isinstance(resolved, Finding):
                return resolved
            evidence = resolved
        last = self._last
        if last is not None and last[0] is evidence and last[1] is aik:
            moment = self.at.timestamp() if self.at is not None else time.time()
            if last[3] <= moment <= last[4]:
                return _report(last[2], facts)
        at = self.at if self.at is not None else datetime.now(timezone.utc)
        result = self.cache.appraise(aik, evidence, self.store, at=at, manufacturers=self.manufacturers)
        if self.recorded and evidence.kind == "ek" and result.finding.status == "pass":
            result = result._replace(finding=_recorded_activation(result.finding, evidence))
        if result.valid_from is not None and result.valid_until is not None:
            self._last = (
                evidence,
                aik,
                result,
                result.valid_from.timestamp(),
                result.valid_until.timestamp(),
            )
        return _report(result, facts)


def _recorded_platform(recorded: AnchorEvidence, block: Mapping[str, Any]) -> AnchorEvidence | Finding:
    """A recorded platform anchor that keeps only its evidence's digest, with that evidence taken from
    the quote's own block (a record keeps it there once), which must be exactly the evidence recorded."""
    try:
        offered = evidence_in_block(block, recorded.kind)
    except EvidenceError as exc:
        return Finding("aik_anchor", "fail", exc.code, exc.message)
    if offered is None or offered.platform is None:
        detail = f"the recorded {recorded.kind} anchor's platform evidence is not in the quote's evidence"
        return Finding("aik_anchor", "fail", "anchor_platform_missing", detail)
    if not hmac.compare_digest(platform_digest(offered.platform), str(recorded.platform_sha256)):
        detail = f"the quote's platform evidence is not the one the {recorded.kind} anchor was recorded for"
        return Finding("aik_anchor", "fail", "anchor_platform_mismatch", detail)
    return _with_time(offered, recorded.validated_at)


@lru_cache(maxsize=64)
def _with_time(offered: AnchorEvidence, validated_at: datetime | None) -> AnchorEvidence:
    """One object per evidence and time: the identity the :class:`Anchoring` fast path compares."""
    return dataclasses.replace(offered, validated_at=validated_at)


def _report(result: AnchorResult, facts: Any) -> Finding:
    """``result``'s finding, its facts added to ``facts`` (the subjects and the platform facts as
    copies of their own: a cached result is shared by every verdict it answers)."""
    if result.facts:
        facts.update(result.facts)
        facts["chain_subjects"] = list(result.facts["chain_subjects"])
        platform = result.facts.get("platform")
        if isinstance(platform, Mapping):
            facts["platform"] = {k: _copied(v) for k, v in platform.items()}
    return result.finding


def _copied(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    return list(value) if isinstance(value, (list, tuple)) else value


def _recorded_activation(finding: Finding, evidence: AnchorEvidence) -> Finding:
    """An offline re-check cannot run a credential activation again (it is interactive, with the TPM):
    it re-validates the EK chain and checks that the recorded outcome names this AIK and that EK.
    The finding says so: the activation itself rests on the record, not on a new proof."""
    outcome = evidence.activation
    when = outcome.validated_at.isoformat() if outcome is not None else "an unknown time"
    return finding._replace(
        detail=f"credential activation recorded at {when} (not run again: the record vouches for it); "
        f"EK certificate chain re-validated: {finding.detail}"
    )


def recorded_anchoring(store: Any, recorded: object, *, at: datetime | None) -> Anchoring:
    """How to re-check a kept reply's anchor offline against ``store``: with the anchor evidence the
    client recorded (``_metadata.verification.anchor``, an audit record's ``verdict.anchor``), judged
    at the time it was validated then; without one, the quote's own AK certificate chain judged at
    ``at`` (when the reply was received). Evidence that does not read fails ``aik_anchor``."""
    if recorded is None:
        return Anchoring(store, at=at)
    try:
        evidence = AnchorEvidence.from_dict(recorded)
    except EvidenceError as exc:
        return Anchoring(store, failure=Finding("aik_anchor", "fail", exc.code, exc.message))
    return Anchoring(store, evidence=evidence, at=evidence.validated_at or at, recorded=True)


def evidence_in_block(block: Mapping[str, Any], kind: str | None = None) -> AnchorEvidence | None:
    """The anchor a ``tpm_attestation`` block offers, or None: its ``platform`` object (a cloud's
    anchor: ``gce-ak-cert``, ``azure-sev-snp``, ``azure-tdx``), else its AK certificate chain
    (``aik_cert_chain_b64``, ``ca``). Both authenticate themselves. With ``kind``, only an anchor
    of that kind is returned (a block may carry both).

    Raises :class:`EvidenceError`: ``platform_malformed`` for a ``platform`` object that does not
    read (:func:`nomyo_audit.tpm._platform.read_platform`), ``anchor_malformed`` for a chain that is
    not a bounded list of base64 certificates.
    """
    platform = block.get("platform")
    if platform is not None and kind != "ca":
        evidence = _platform_evidence(read_platform(platform))
        if kind is None or evidence.kind == kind:
            return evidence
    chain = block.get("aik_cert_chain_b64")
    if chain is None or kind not in (None, "ca"):
        return None
    if not isinstance(chain, list) or not all(isinstance(c, str) for c in chain):
        raise EvidenceError(
            "aik_cert_chain_b64 is not a list of base64 certificates", code="anchor_malformed"
        )
    return _ca_evidence(tuple(chain))


@lru_cache(maxsize=64)
def _ca_evidence(chain_b64: tuple[str, ...]) -> AnchorEvidence:
    """Decoded once per distinct chain text: a router attaches the same chain to every quote."""
    return AnchorEvidence("ca", read_chain(list(chain_b64), "aik_cert_chain_b64"))


@lru_cache(maxsize=64)
def _platform_evidence(platform: PlatformEvidence) -> AnchorEvidence:
    """One evidence object per platform object (read_platform caches those): the identity the
    :class:`Anchoring` fast path compares."""
    return AnchorEvidence(platform.anchor_kind, (), platform=platform)  # type: ignore[arg-type]


def with_anchor(verdict: Verdict, block: Mapping[str, Any] | None, anchoring: Anchoring) -> Verdict:
    """``verdict`` with its ``aik_anchor`` appraised by ``anchoring``, for a verdict made without one.

    Only a verdict whose signature verified is anchored (nothing in an unsigned quote is believed);
    the AIK is the one that verdict proved. Raises nothing.
    """
    if verdict.finding("signature").status != "pass" or not isinstance(block, Mapping):
        return verdict
    try:
        material = aik_material(block.get("aik_pubkey_b64"))
    except (EvidenceError, TypeError):
        return verdict
    facts = cast(VerdictFacts, dict(verdict.facts))
    if material.facts.get("aik_name") != facts.get("aik_name"):
        return verdict
    finding = anchoring(material.public, block, facts)
    findings = tuple(finding if f.check == "aik_anchor" else f for f in verdict.findings)
    failures = tuple(f for f in findings if f.status == "fail")
    return verdict._replace(findings=findings, facts=facts, failures=failures)
