"""What goes over the wire to a C2SP witness (c2sp.org/tlog-witness), apart from the round's logic.

The add-checkpoint body (``old <size>``, the consistency proof, the checkpoint), the proof computed
in one pass over the log's records, and one HTTP request read within a size and time bound. Split
from :mod:`._witness_client` so that module keeps to the round's rules.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterable
from typing import Any

import httpx

from ..errors import IntegrityError
from ._merkle import leaf_hash
from ._report_chain import consistency_in_one_pass

__all__ = ["MAX_RESPONSE", "add_checkpoint_body", "bounded_request", "proof_between"]

#: A witness's reply is a few signature lines or a size: anything longer is refused unread.
MAX_RESPONSE = 64 * 1024


def proof_between(
    records: Iterable[tuple[Any, ...]], old_size: int, new_size: int
) -> tuple[list[bytes], bytes]:
    """The consistency proof from ``old_size`` to ``new_size`` and the root at ``new_size``.

    ``records`` are the store's ``scan()`` rows; leaves are hashed from the record bytes
    (the stored leaf column is not trusted). One pass, O(log n) memory. IntegrityError
    when the log has fewer than ``new_size`` records.
    """
    hashed = (leaf_hash(row[3]) for row in records)
    proof, _, root, read = consistency_in_one_pass(hashed, old_size, new_size)
    if read < new_size:
        raise IntegrityError(f"the log has {read} records, fewer than its checkpoint's {new_size}")
    return proof, root


def add_checkpoint_body(old: int, proof: list[bytes], note: str) -> bytes:
    lines = [f"old {old}", *(base64.b64encode(node).decode() for node in proof)]
    return ("\n".join(lines) + "\n\n" + note).encode()


def bounded_request(
    http: httpx.Client, method: str, url: str, body: bytes | None = None, *, within: float = 10.0
) -> tuple[int, str]:
    """Status and text of one request; at most :data:`MAX_RESPONSE` bytes read, within ``within`` s.

    The body is read raw (``Accept-Encoding: identity``; a compressed reply is refused, so a
    small gzip bomb never inflates in memory), and the whole body must arrive in ``within``
    seconds: a witness that trickles a byte at a time costs its cosignature, not the round.
    """
    deadline = time.monotonic() + within
    with http.stream(method, url, content=body, headers={"Accept-Encoding": "identity"}) as response:
        if response.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
            raise httpx.DecodingError("a compressed reply is not read (Accept-Encoding: identity was asked)")
        data = bytearray()
        for chunk in response.iter_raw():
            data += chunk
            if len(data) > MAX_RESPONSE:
                raise httpx.DecodingError(f"reply larger than {MAX_RESPONSE} bytes")
            if time.monotonic() > deadline:
                raise httpx.ReadTimeout(f"the reply took more than {within:g} s")
    return response.status_code, data.decode("utf-8", "replace")
