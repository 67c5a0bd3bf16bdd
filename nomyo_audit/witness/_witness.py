"""The c2sp.org/tlog-witness add-checkpoint decision: cosign only a consistent extension.

:meth:`Witness.add_checkpoint` takes the request body and answers with the status the
specification fixes: 400 malformed (or old size above the checkpoint's), 404 unknown
origin, 403 no valid signature by a trusted log key, 409 with the witness's size when
the client's old size is not it, 422 when the proof does not verify, the roots of equal
sizes differ or a size-0 checkpoint has another root than the empty tree's, and 200 with
a cosignature/v1 line once the new checkpoint is persisted. A rolled-back log (a smaller
checkpoint) gets a 409 or 400, a forked one (a root inconsistent with the one kept) a 422:
neither is ever cosigned. No HTTP here: the server is :mod:`._server`.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..audit._cosignature import WitnessKey, cosign
from ..audit._merkle import EMPTY_ROOT, ProofError, verify_consistency
from ..audit._note import key_id, parse_checkpoint, verify_checkpoint
from ._state import LogHead, WitnessState

__all__ = ["MAX_PROOF_LINES", "MAX_REQUEST", "Reply", "Witness", "parse_add_checkpoint"]

#: The largest add-checkpoint body read: 63 proof lines and a checkpoint with its signatures.
MAX_REQUEST = 64 * 1024
#: c2sp.org/tlog-witness: "The client MUST NOT send more than 63 consistency proof lines."
MAX_PROOF_LINES = 63
SIZE_TYPE = "text/x.tlog.size"
_TEXT = "text/plain; charset=utf-8"
_DASH = "\u2014"


@dataclass(frozen=True)
class Reply:
    """An HTTP status, body and content type."""

    status: int
    body: str
    content_type: str = _TEXT


class RequestRejected(ValueError):
    """A request the witness refuses; ``status`` is the HTTP status the specification gives."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _decimal(text: str, what: str) -> int:
    if not text.isdigit() or not text.isascii() or (text.startswith("0") and text != "0") or len(text) > 20:
        raise RequestRejected(400, f"{what} is not a decimal number without leading zeroes")
    return int(text)


def parse_add_checkpoint(body: bytes) -> tuple[int, list[bytes], str]:
    """``old <size>``, the proof hashes, a blank line, the checkpoint: (old size, proof, note).

    :class:`RequestRejected` (400) for anything else.
    """
    if len(body) > MAX_REQUEST:
        raise RequestRejected(413, f"the request is larger than {MAX_REQUEST} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestRejected(400, "the request is not UTF-8") from None
    if any(c < " " and c != "\n" for c in text):
        # signed-note: a note MUST NOT contain ASCII control characters other than newline
        raise RequestRejected(400, "the request holds a control character other than newline")
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise RequestRejected(400, "no blank line between the old size and proof and the checkpoint")
    lines = head.split("\n")
    if not lines[0].startswith("old "):
        raise RequestRejected(400, "the first line is not 'old <size>'")
    old = _decimal(lines[0][4:], "the old size")
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise RequestRejected(400, f"more than {MAX_PROOF_LINES} consistency proof lines")
    proof = []
    for line in lines[1:]:
        try:
            node = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError):
            node = b""
        if len(node) != 32:
            raise RequestRejected(400, "a consistency proof line is not a base64 SHA-256 hash")
        proof.append(node)
    return old, proof, note


class Witness:
    """A cosigner for the logs whose keys it is given, remembering each log's latest checkpoint."""

    def __init__(
        self,
        key: WitnessKey,
        private: Ed25519PrivateKey,
        logs: Mapping[str, Ed25519PublicKey],
        state: WitnessState,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.key = key
        self._private = private
        self.logs = dict(logs)
        self.state = state
        self._clock = clock

    def add_checkpoint(self, body: bytes) -> Reply:
        """The reply to one add-checkpoint request (never raises for any input)."""
        try:
            return self._add(body)
        except RequestRejected as refusal:
            return Reply(refusal.status, f"{refusal}\n")

    def _add(self, body: bytes) -> Reply:
        old, proof, note = parse_add_checkpoint(body)
        try:
            checkpoint = parse_checkpoint(note)[0]
        except ValueError as exc:  # NoteError, or a size too long for int()
            raise RequestRejected(400, f"the checkpoint is malformed: {exc}") from None
        public = self.logs.get(checkpoint.origin)
        if public is None:
            raise RequestRejected(404, f"unknown log origin {checkpoint.origin[:100]!r}")
        log_lines = _verified_log_lines(note, checkpoint.origin, public)
        if old > checkpoint.size:
            raise RequestRejected(400, f"old size {old} is larger than the checkpoint's {checkpoint.size}")
        if checkpoint.size == 0 and checkpoint.root != EMPTY_ROOT:
            raise RequestRejected(422, "a checkpoint of size 0 must have the empty tree's root")
        with self.state.locked() as heads:
            kept = heads.get(checkpoint.origin)
            known = kept.size if kept is not None else 0
            if old != known:
                return Reply(409, f"{known}\n", SIZE_TYPE)
            _check_consistency(kept, checkpoint.size, checkpoint.root, proof)
            line = cosign(checkpoint, self.key, self._private, max(1, int(self._clock())))
            # what the monitor endpoint serves: the log's verified signature and this cosignature
            served = f"{checkpoint.body()}\n{''.join(log_lines)}{line}"
            heads[checkpoint.origin] = LogHead(checkpoint.size, checkpoint.root, served)
        return Reply(200, line)


def _verified_log_lines(note: str, origin: str, public: Ed25519PublicKey) -> list[str]:
    """Every signature line in the log key's name and key ID, each verified; 403 otherwise.

    c2sp.org/tlog-witness: 403 when no signature by a trusted key is present, or when a line
    whose name and key ID match a trusted key does not verify (even beside one that does).
    """
    try:
        signatures = parse_checkpoint(note)[1]
        body = note.partition("\n\n")[0]
        expected = key_id(origin, public)
        lines = []
        for name, blob in signatures:
            if name == origin and blob[:4] == expected:
                line = f"{_DASH} {name} {base64.b64encode(blob).decode()}\n"
                verify_checkpoint(f"{body}\n\n{line}", public)
                lines.append(line)
    except ValueError as exc:  # NoteError, or a size too long for int()
        raise RequestRejected(403, f"invalid signature: {exc}") from None
    if not lines:
        raise RequestRejected(403, "the checkpoint carries no signature by the log's key")
    return lines


def _check_consistency(kept: LogHead | None, size: int, root: bytes, proof: list[bytes]) -> None:
    if kept is None or kept.size == 0:
        if proof:
            raise RequestRejected(422, "the consistency proof from size 0 must be empty")
        return
    try:
        verify_consistency(kept.size, size, kept.root, root, proof)
    except ProofError as exc:
        raise RequestRejected(
            422, f"the checkpoint is not consistent with the one cosigned at size {kept.size}: {exc}"
        ) from None
