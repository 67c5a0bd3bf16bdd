"""The client's constructor arguments, checked once: router URL, timeout, pinned key fingerprint, protocol."""

from __future__ import annotations

import ipaddress
import math
import os
import re
import urllib.parse
import warnings

import httpx

from ..errors import ConfigurationError, SecurityError

__all__ = [
    "DEFAULT_HTTP_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "PROTOCOLS",
    "PROTOCOL_ENV",
    "check_protocol",
    "check_router_url",
    "check_timeout",
    "normalise_fingerprint",
]

#: Seconds a whole call may take, retries included; each HTTP request is held to it too. A server
#: that drips one byte at a time resets no clock: this deadline is total, not per read.
DEFAULT_TIMEOUT = 600.0
#: Per-operation limits under the deadline: 10 s to connect, then up to the deadline per read.
DEFAULT_HTTP_TIMEOUT = httpx.Timeout(DEFAULT_TIMEOUT, connect=10.0)
#: The values of ``protocol=``, ``--protocol`` and ``NOMYO_PROTOCOL``.
PROTOCOLS = ("auto", "1.0", "2")
#: The environment variable read when ``protocol`` is not given.
PROTOCOL_ENV = "NOMYO_PROTOCOL"


def check_protocol(value: str | None) -> str:
    """``value`` (None: ``$NOMYO_PROTOCOL``, else ``"auto"``) as one of :data:`PROTOCOLS`;
    anything else raises :class:`ConfigurationError`."""
    chosen = value if value is not None else os.environ.get(PROTOCOL_ENV) or "auto"
    if chosen not in PROTOCOLS:
        source = "protocol" if value is not None else PROTOCOL_ENV
        raise ConfigurationError(f"{source} must be one of {', '.join(PROTOCOLS)}, got {chosen!r}")
    return chosen


def check_timeout(timeout: float | None) -> float:
    """``timeout`` as seconds (None is :data:`DEFAULT_TIMEOUT`); anything else is a ConfigurationError."""
    if timeout is None:
        return DEFAULT_TIMEOUT
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise ConfigurationError("timeout must be a number of seconds")
    if not math.isfinite(timeout) or timeout <= 0:
        raise ConfigurationError("timeout must be positive, finite seconds: a request never waits forever")
    return float(timeout)


def check_router_url(url: str, allow_http: bool) -> str:
    """The router URL without a trailing slash.

    Not ``http(s)://host...``, or text that is not printable (a line break, a control, zero-width
    or right-to-left character: httpx refuses some of them only when sending, and the URL goes into
    every record and report that names the router), raises :class:`ConfigurationError`; plain HTTP without
    ``allow_http`` raises :class:`SecurityError` (``insecure_transport``), and with it to a host
    that is not loopback warns (:class:`UserWarning`): the server key can be swapped in transit.
    """
    if not isinstance(url, str):
        raise ConfigurationError("router URL must be a string")
    if not url.isprintable():
        raise ConfigurationError(f"router URL must be printable text, got {url!a}")
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigurationError(f"router URL must be http(s)://host[:port][/path], got {url!r}")
    if parsed.scheme == "http":
        if not allow_http:
            raise SecurityError(
                "router URL must use HTTPS; for local development pass allow_http=True",
                code="insecure_transport",
            )
        if not _is_loopback(parsed.hostname):
            warnings.warn(
                f"plain HTTP to non-loopback host {parsed.hostname}: "
                "the server key can be swapped in transit",
                UserWarning,
                stacklevel=3,
            )
    return url.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def normalise_fingerprint(value: str | None) -> str | None:
    """A pinned key fingerprint as 64 lower-case hex digits (``sha256:`` and colons allowed).

    Anything else raises :class:`ConfigurationError`.
    """
    if value is None:
        return None
    cleaned = value.lower().replace(":", "").strip()
    if cleaned.startswith("sha256:"):
        cleaned = cleaned[len("sha256:") :]
    if not re.fullmatch(r"[0-9a-f]{64}", cleaned):
        raise ConfigurationError("server_key_fingerprint must be 64 hex digits (SHA-256 of the DER SPKI)")
    return cleaned
