"""When to retry and how long to wait: pure functions, following the OpenAI SDK.

* Retried: connection errors, timeouts, and HTTP 408, 409, 429, 500, 502,
  503, 504. Every other status is final (a 400 will not get better).
* Wait: ``Retry-After-Ms`` or ``Retry-After`` (seconds or an HTTP date) when
  the server gives one between 0 and :data:`MAX_RETRY_AFTER` seconds;
  otherwise ``min(INITIAL * 2**attempt, MAX_DELAY)`` scaled by a jitter
  factor in (0.75, 1].
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Mapping

__all__ = [
    "INITIAL_DELAY",
    "MAX_DELAY",
    "MAX_RETRY_AFTER",
    "RETRYABLE_STATUSES",
    "backoff_delay",
    "is_retryable_status",
]

INITIAL_DELAY = 0.5
MAX_DELAY = 8.0
MAX_RETRY_AFTER = 60.0
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUSES


def retry_after_seconds(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """The server's requested wait, if it gave a usable one."""
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    value: float | None = None
    if "retry-after-ms" in lowered:
        try:
            value = float(lowered["retry-after-ms"]) / 1000
        except ValueError:
            value = None
    if value is None and "retry-after" in lowered:
        raw = lowered["retry-after"].strip()
        try:
            value = float(raw)
        except ValueError:
            value = _seconds_until(raw, time.time() if now is None else now)
    if value is not None and 0 < value <= MAX_RETRY_AFTER:
        return value
    return None


def _seconds_until(http_date: str, now: float) -> float | None:
    """Seconds from ``now`` to an HTTP date; None for text that is no date a calendar holds."""
    parsed = email.utils.parsedate_tz(http_date)
    if parsed is None:
        return None
    try:
        return email.utils.mktime_tz(parsed) - now
    except (OverflowError, ValueError):  # a year past what the platform's time functions take
        return None


def backoff_delay(
    attempt: int,
    headers: Mapping[str, str] | None = None,
    *,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before retry number ``attempt + 1`` (``attempt`` counts from 0)."""
    server = retry_after_seconds(headers)
    if server is not None:
        return server
    base = min(INITIAL_DELAY * 2.0**attempt, MAX_DELAY)
    jitter = 1 - 0.25 * (rng or random).random()
    return base * jitter
