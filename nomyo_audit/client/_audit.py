"""What the client writes to its audit log: one record per call, whatever happened to it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from ..audit._blobs import detach_logs
from ..audit._log import AuditLog
from ..audit._records import build_record
from ..errors import APIError, NomyoAuditError, SecurityError
from ._call import CompletionCall

__all__ = ["error_summary", "outcome_of", "record_call"]


async def record_call(
    log: AuditLog,
    call: CompletionCall,
    *,
    router: str,
    server_key: str | None,
    outcome: str,
    request: dict[str, Any] | None,
    response: dict[str, Any] | None = None,
    error: BaseException | None = None,
    policy: dict[str, Any] | None = None,
    labels: Mapping[str, str] | None = None,
) -> None:
    """Append the record of ``call`` to ``log`` (a durable SQLite write, off the event loop).

    ``request`` is the payload to digest, None when no canonical JSON can hold it; ``response``
    is kept as a digest and its ``_metadata``, except for a policy denial, whose content is not
    kept at all (its metadata comes in ``response`` and is stored alone). The event logs and the
    cloud ``platform`` object its evidence carries are kept once per digest beside the record
    (:mod:`nomyo_audit.audit._blobs`).
    ``labels`` (``service``, ``tenant``: :mod:`nomyo_audit.audit._labels`) go into the record when set.
    """
    summary = error_summary(error)

    def write() -> None:  # decoding and hashing logs of MBs: off the event loop, like the write
        metadata, blobs = detach_logs((response or {}).get("_metadata"))

        def build(seq: int, salt: bytes) -> bytes:
            return build_record(
                seq=seq,
                timestamp=time.time(),
                salt=salt,
                payload_id=call.payload_id,
                router=router,
                server_key=server_key,
                model=call.model if request is not None else None,
                security_tier=call.security_tier,
                outcome=outcome,
                request=request,
                response=response if outcome != "policy_denied" else None,
                error=summary,
                policy=policy,
                metadata=metadata,
                service=(labels or {}).get("service"),
                tenant=(labels or {}).get("tenant"),
            )

        log.append(call.payload_id, build, blobs=blobs)

    await asyncio.to_thread(write)


def error_summary(error: BaseException | None) -> dict[str, Any] | None:
    """What a record keeps of a failure: our own messages, never the text of an unknown exception."""
    if error is None:
        return None
    if isinstance(error, NomyoAuditError):
        return {"code": error.code, "class": type(error).__name__, "message": error.message}
    if isinstance(error, asyncio.CancelledError):
        return {"code": "cancelled", "class": "CancelledError", "message": "the call was cancelled"}
    return {"code": "internal", "class": type(error).__name__, "message": "internal error (a bug)"}


def outcome_of(error: BaseException) -> str:
    """A record's ``outcome`` for a call that ended in ``error``."""
    if isinstance(error, asyncio.CancelledError):
        return "error:cancelled"
    if not isinstance(error, NomyoAuditError):
        return "error:internal"
    if isinstance(error, APIError):
        return f"http_error:{type(error).__name__}"
    if isinstance(error, SecurityError):
        return f"security_error:{error.code}"
    return f"error:{error.code}"
