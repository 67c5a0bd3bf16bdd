"""Reports that chain: each report names the one before it and proves the log only grew in between.

A report covers the records of one period (``covers``: first and last ``seq``, the count,
the exact period bounds) and cites one signed checkpoint (``covers.checkpoint``: size, root and
the signed note). Made with ``--previous``, it also carries a ``chain`` section: the previous
report's identity (SHA-256 of its ``report.json``, which that report's envelope signs) and
checkpoint, and an RFC 9162 consistency proof from that checkpoint to its own.

What a verified series proves, and no more:

* **nothing was rewritten**: each consistency proof shows the log at the previous checkpoint is
  a prefix of the log at the next one, so no record either report's checkpoint covers was
  altered, removed or reordered in between;
* **no gap and no overlap**: each period starts exactly where the previous one ended (periods are
  half-open, ``[since, until)``), and the records counted continue the sequence: the first
  ``seq`` of a report is one more than the last ``seq`` the series counted before it. The log's
  time column never goes back, so a period selects a contiguous run of records; a report made
  before its period was over misses the records written later in that period, and the next
  report's first ``seq`` then names exactly which records no report counted;
* every record a report counted is under its checkpoint (``last_seq < checkpoint.size``), so the
  next report's proof covers it too; a report that counted records past its checkpoint cannot be
  chained from (:func:`chainable` refuses it).

Pure: documents and leaf hashes in, sections, proofs and findings out. Reading the log and the
report directories is :mod:`nomyo_audit.cli._report`'s.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigurationError, IntegrityError
from ._merkle import Frontier, ProofError, _split, verify_consistency
from ._note import NoteError, parse_checkpoint

__all__ = [
    "ChainError",
    "CitedCheckpoint",
    "UnchainableReport",
    "chain_section",
    "chainable",
    "consistency_from_leaves",
    "consistency_in_one_pass",
    "coverage_findings",
    "previous_sha256_of",
    "proof_ranges",
    "verify_chain_proof",
    "verify_link",
]


class ChainError(IntegrityError):
    """A report's chain is broken: a report missing or replaced, a proof that fails, a rewritten log."""

    code = "report_chain"


class UnchainableReport(ConfigurationError):
    """A report cannot be chained from as asked (no checkpoint, no period end, another log...)."""

    code = "report_chain_unprovable"


@dataclass(frozen=True)
class CitedCheckpoint:
    """The checkpoint a report covers, exactly: size, root (hex) and the signed note saying both."""

    size: int
    root: str
    note: str

    @classmethod
    def from_claim(cls, claim: Any, whose: str) -> CitedCheckpoint:
        """A checkpoint a signed document states; :class:`ChainError` when malformed or self-contradictory."""
        size = claim.get("size") if isinstance(claim, Mapping) else None
        root = claim.get("root") if isinstance(claim, Mapping) else None
        note = claim.get("note") if isinstance(claim, Mapping) else None
        if type(size) is not int or size < 0 or not isinstance(root, str) or not isinstance(note, str):
            raise ChainError(f"{whose} names no checkpoint (size, root and signed note)")
        try:
            stated = parse_checkpoint(note)[0]
        except NoteError as exc:
            raise ChainError(f"{whose}: its checkpoint note is malformed ({exc})") from None
        if stated.size != size or stated.root.hex() != root:
            raise ChainError(
                f"{whose}: its checkpoint note says size {stated.size}, not the size and root stated"
            )
        return cls(size, root, note)

    @property
    def origin(self) -> str:
        """The log the note names (its first line)."""
        return parse_checkpoint(self.note)[0].origin

    def to_dict(self) -> dict[str, Any]:
        """``{"size", "root", "note"}``: how a report states it."""
        return {"size": self.size, "root": self.root, "note": self.note}

    def describe(self) -> str:
        """``size 40, root 3f2a...``: for messages."""
        return f"size {self.size}, root {self.root[:16]}..."


def covered_checkpoint(report: Mapping[str, Any], whose: str) -> CitedCheckpoint | None:
    """The checkpoint ``report`` covers (``covers.checkpoint``), or None when it cites none."""
    claim = _section(report, "covers").get("checkpoint")
    return None if claim is None else CitedCheckpoint.from_claim(claim, whose)


def chainable(
    previous: Mapping[str, Any], origin: str, whose: str = "the previous report"
) -> CitedCheckpoint:
    """The checkpoint a new report of the log ``origin`` chains from; :class:`UnchainableReport` if none can.

    A chain proves consistency from a signed checkpoint only, so the previous report must cite
    one, of this log, covering every record it counted, and its period must have an end for the
    next one to start at.
    """
    cited = covered_checkpoint(previous, whose)
    if cited is None:
        raise UnchainableReport(
            f"{whose} cites no signed checkpoint, so no consistency can be proven from it "
            "(it was made before 'nomyo-audit log checkpoint')"
        )
    if cited.origin != origin:
        raise UnchainableReport(f"{whose} is of another log ({cited.origin!r}, not {origin!r})")
    covers = _section(previous, "covers")
    last = covers.get("last_seq")
    if type(last) is int and last >= cited.size:
        raise UnchainableReport(
            f"{whose} counted records {cited.size} to {last}, which its checkpoint (size {cited.size}) "
            "does not cover, so no proof from it can show they were not rewritten; "
            "make each report after 'nomyo-audit log checkpoint'"
        )
    if _section(covers, "period").get("until") is None:
        raise UnchainableReport(
            f"{whose} was made without --until: its period has no end for the next one to start at"
        )
    return cited


def proof_ranges(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """The leaf ranges ``[start, end)`` whose subtree roots make PROOF(old_size, D[new_size]), in order.

    RFC 9162 2.1.4.1 (the same recursion as :func:`._merkle.consistency_proof`), naming ranges
    instead of hashing them, so the proof can be computed in one streaming pass.
    """
    if not 0 < old_size <= new_size:
        raise ProofError(f"no consistency proof from size {old_size} to {new_size}")

    def subproof(m: int, start: int, end: int, complete: bool) -> list[tuple[int, int]]:
        n = end - start
        if m == n:
            return [] if complete else [(start, end)]
        k = _split(n)
        if m <= k:
            return [*subproof(m, start, start + k, complete), (start + k, end)]
        return [*subproof(m - k, start + k, end, False), (start, start + k)]

    return subproof(old_size, 0, new_size, True)


def consistency_in_one_pass(
    leaves: Iterable[bytes], old_size: int, new_size: int
) -> tuple[list[bytes], bytes | None, bytes, int]:
    """One pass over the log's leaf hashes (in order), O(log n) memory: the consistency proof from
    ``old_size`` to ``new_size``, the roots at both sizes (the old one None when the leaves stop
    before it), and how many leaves were read (fewer than ``new_size``: the log is shorter).

    Report chains and witness requests both prove consistency this way; each judges the roots.
    """
    ranges = proof_ranges(old_size, new_size) if 0 < old_size < new_size else []
    subtrees: dict[tuple[int, int], Frontier] = {r: Frontier() for r in ranges}
    order, at = sorted(ranges), 0  # the ranges are disjoint: at most one holds each leaf
    whole = Frontier()
    old_root = whole.root() if old_size == 0 else None
    for leaf in leaves:
        if whole.size == new_size:
            break
        while at < len(order) and order[at][1] <= whole.size:
            at += 1
        if at < len(order) and order[at][0] <= whole.size:
            subtrees[order[at]].append(leaf)
        whole.append(leaf)
        if whole.size == old_size:
            old_root = whole.root()
    return [subtrees[r].root() for r in ranges], old_root, whole.root(), whole.size


def consistency_from_leaves(
    leaves: Iterable[bytes], old: CitedCheckpoint, new: CitedCheckpoint
) -> list[bytes]:
    """The consistency proof from ``old`` to ``new``, from the log's leaf hashes (in order), in one pass.

    Memory is O(log n). Raises :class:`ChainError` when the log's root at ``old.size`` is not
    ``old``'s (the log was rewritten since), when the log is shorter than ``new`` or its root
    there is not ``new``'s, or when ``new`` is smaller than ``old`` (the log shrank).
    """
    if new.size < old.size:
        raise ChainError(
            f"this report's checkpoint (size {new.size}) is smaller than the previous report's "
            f"(size {old.size}): the log shrank or was replaced"
        )
    proof, old_root, new_root, read = consistency_in_one_pass(leaves, old.size, new.size)
    if read < new.size:
        raise ChainError(f"the log has {read} records, fewer than its checkpoint's {new.size}")
    if old_root is None or old_root.hex() != old.root:
        raise ChainError(
            f"the log's root at size {old.size} is not the previous report's checkpoint root "
            f"({old.root[:16]}...): the log was rewritten after that report"
        )
    if new_root.hex() != new.root:
        raise ChainError(f"the log's root at size {new.size} is not this report's checkpoint root")
    _check(old, new, proof, "the proof just computed")
    return proof


def chain_section(previous_sha256: str, previous: CitedCheckpoint, proof: Sequence[bytes]) -> dict[str, Any]:
    """The report's ``chain``: the previous report's identity and checkpoint, and the proof from it."""
    return {
        "previous": {"report_sha256": previous_sha256, "checkpoint": previous.to_dict()},
        "consistency_proof": [node.hex() for node in proof],
    }


def verify_chain_proof(report: Mapping[str, Any], whose: str) -> CitedCheckpoint | None:
    """Check ``report``'s own consistency proof; the previous checkpoint it chains from, or None.

    Needs no other file: the proof shows the checkpoint the chain names is a prefix of the one
    ``report`` covers. Raises :class:`ChainError` when the chain section is malformed or the
    proof does not verify.
    """
    chain = report.get("chain")
    if chain is None:
        return None
    chain = _section(report, "chain")
    previous = _section(chain, "previous")
    cited = CitedCheckpoint.from_claim(previous.get("checkpoint"), f"{whose}'s chain")
    own = covered_checkpoint(report, whose)
    if own is None:
        raise ChainError(f"{whose} chains from a previous report but cites no checkpoint of its own")
    if cited.origin != own.origin:  # what chainable refuses to make: a series does not cross logs
        raise ChainError(
            f"{whose} chains from a checkpoint of another log ({cited.origin!r}, not {own.origin!r})"
        )
    nodes = chain.get("consistency_proof")
    try:
        proof = [bytes.fromhex(node) for node in nodes] if isinstance(nodes, list) else None
    except (TypeError, ValueError):
        proof = None
    if proof is None or any(len(node) != 32 for node in proof) or len(proof) > 128:
        raise ChainError(f"{whose}'s consistency proof is not a list of SHA-256 hashes")
    _check(cited, own, proof, f"{whose}'s consistency proof")
    return cited


def verify_link(
    previous: Mapping[str, Any], previous_sha256: str, report: Mapping[str, Any], names: tuple[str, str]
) -> None:
    """Check that ``report`` chains from ``previous`` (whose report.json hashes to ``previous_sha256``).

    Both documents' signatures were checked by the caller. Raises :class:`ChainError` when
    ``report`` chains from no report, from another checkpoint (the previous report was re-made or
    replaced), or from another report (one between them is missing), or its proof fails.
    """
    before, after = names
    cited = verify_chain_proof(report, after)
    if cited is None:
        raise ChainError(f"{after} does not chain from a previous report (made without --previous)")
    theirs = covered_checkpoint(previous, before)
    if theirs != cited:
        stated = theirs.describe() if theirs is not None else "none"
        raise ChainError(
            f"the chain breaks: {after} chains from checkpoint {cited.describe()}, but {before} "
            f"covers checkpoint {stated} ({before} was re-made or replaced)"
        )
    named = previous_sha256_of(report)
    if named != previous_sha256:
        raise ChainError(
            f"the chain breaks: {after} chains from report.json sha256 {str(named)[:16]}..., not "
            f"{before} ({previous_sha256[:16]}...): a report between them is missing or was replaced"
        )


def coverage_findings(series: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """What a chained series (oldest first, links verified) fails to cover: gaps and overlaps.

    Each period must start where the previous one ended, every record a report counted must be
    under its checkpoint (else the next proof does not cover it), and the records counted must
    continue the sequence. Returns one message per finding, none when the series covers a
    contiguous stretch of the log.
    """
    findings: list[str] = []
    last_counted: int | None = None
    for index, (name, report) in enumerate(series):
        covers = _section(report, "covers")
        last = covers.get("last_seq")
        if index:
            before, previous = series[index - 1]
            ended = _moment(_section(_section(previous, "covers"), "period").get("until"))
            starts = _moment(_section(covers, "period").get("since"))
            if ended is None:
                findings.append(f"{before}'s period has no end, so whether {name} follows it cannot be shown")
            elif starts is None or starts < ended:
                findings.append(
                    f"{name}'s period overlaps {before}'s: it starts "
                    f"{'with the log' if starts is None else _stamp(starts)}, before {_stamp(ended)}"
                )
            elif starts > ended:
                findings.append(
                    f"{name}'s period leaves a gap after {before}'s: from {_stamp(ended)} to {_stamp(starts)}"
                    " no report covers"
                )
            cited = covered_checkpoint(previous, before)
            previous_last = _section(previous, "covers").get("last_seq")
            if cited is not None and type(previous_last) is int and previous_last >= cited.size:
                findings.append(
                    f"{before} counted records {cited.size} to {previous_last}, which its checkpoint "
                    "does not cover: no proof shows they were not rewritten"
                )
            findings += _continuity(before, previous, name, report, last_counted)
        if type(last) is int:
            last_counted = last
    return findings


def _continuity(
    before: str, previous: Mapping[str, Any], name: str, report: Mapping[str, Any], last_counted: int | None
) -> list[str]:
    """Whether ``report``'s records continue where ``previous``'s ended: by their spans of the log
    (``covers.span``: the period's records are exactly ``from`` to ``to - 1``, counted or not yet
    written), else by the records counted (an empty report then shows nothing)."""
    ended = _span(previous)
    starts = _span(report)
    if ended is not None and starts is not None:
        first, last_counted = starts[0], ended[1] - 1
    else:
        counted = _section(report, "covers").get("first_seq")
        if type(counted) is not int or last_counted is None:
            return []
        first = counted
    if first > last_counted + 1:
        return [f"records {last_counted + 1} to {first - 1} are in no report (between {before} and {name})"]
    if first <= last_counted:
        return [f"{name} counts records from {first} that {before} or an earlier report counted"]
    return []


def _span(report: Mapping[str, Any]) -> tuple[int, int] | None:
    span = _section(_section(report, "covers"), "span")
    start, end = span.get("from"), span.get("to")
    if type(start) is int and type(end) is int and 0 <= start <= end:
        return start, end
    return None


def previous_sha256_of(report: Mapping[str, Any]) -> Any:
    """The report.json SHA-256 a report's ``chain.previous`` names (None when it names none)."""
    return _section(_section(report, "chain"), "previous").get("report_sha256")


def report_sha256(data: bytes) -> str:
    """A report's identity in a chain: SHA-256 (hex) of its report.json bytes, which its envelope signs."""
    return hashlib.sha256(data).hexdigest()


def _check(old: CitedCheckpoint, new: CitedCheckpoint, proof: Sequence[bytes], what: str) -> None:
    if old.size == 0:
        if proof:
            raise ChainError(f"{what} does not verify: a proof from the empty log must be empty")
        return
    try:
        verify_consistency(old.size, new.size, bytes.fromhex(old.root), bytes.fromhex(new.root), proof)
    except (ProofError, ValueError) as exc:
        raise ChainError(
            f"{what} does not verify from checkpoint {old.describe()} to {new.describe()} ({exc}): "
            "the log was rewritten between the two reports"
        ) from None


def _section(document: Any, name: str) -> Mapping[str, Any]:
    value = document.get(name) if isinstance(document, Mapping) else None
    return value if isinstance(value, Mapping) else {}


def _moment(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = _dt.datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=_dt.timezone.utc)).timestamp()


def _stamp(moment: float) -> str:
    from ._records import rfc3339

    return rfc3339(moment)
