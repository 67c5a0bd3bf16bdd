"""One secure completion call, as one named value instead of five parameters handed along."""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidRequestError
from ..policy import Policy
from ..wire import SECURITY_TIERS

__all__ = ["CompletionCall", "check_payload_id", "validate_security_tier"]

_PAYLOAD_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


@dataclass(frozen=True)
class CompletionCall:
    """What one call sends and how it is judged: the payload, its id, its credentials, its policy.

    ``api_key`` and ``security_tier`` travel as headers, never inside the encrypted payload;
    ``policy`` is the one in force for this call (the call's own, else the client's), or None.
    """

    payload: dict[str, Any]
    payload_id: str
    api_key: str | None = None
    security_tier: str | None = None
    policy: Policy | None = None

    @property
    def model(self) -> str | None:
        """The payload's ``model`` when it is a string (what the audit record names)."""
        model = self.payload.get("model") if isinstance(self.payload, dict) else None
        return model if isinstance(model, str) else None

    def headers(self, client_public_key_pem: str) -> dict[str, str]:
        """The HTTP headers of the completion request, the client's key among them."""
        headers = {
            "X-Payload-ID": self.payload_id,
            "X-Public-Key": urllib.parse.quote(client_public_key_pem),
            "Content-Type": "application/octet-stream",
        }
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        if self.security_tier:
            headers["X-Security-Tier"] = self.security_tier
        return headers


def validate_security_tier(tier: object) -> None:
    """Raise :class:`InvalidRequestError` unless ``tier`` is None or one of :data:`SECURITY_TIERS`."""
    if tier is not None and tier not in SECURITY_TIERS:
        shown = tier if isinstance(tier, str) and len(tier) <= 32 else type(tier).__name__
        raise InvalidRequestError(
            f"invalid security_tier {shown!r}: must be one of {', '.join(SECURITY_TIERS)}"
        )


def check_payload_id(payload_id: object) -> None:
    """Raise :class:`InvalidRequestError` unless ``payload_id`` is 1-128 of ``[A-Za-z0-9._:-]``."""
    if not isinstance(payload_id, str) or not _PAYLOAD_ID.match(payload_id):
        raise InvalidRequestError("payload_id must be 1-128 characters of [A-Za-z0-9._:-]")
