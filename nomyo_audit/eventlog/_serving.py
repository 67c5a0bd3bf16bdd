"""The serving stack the router measures into PCR 23: EV_EVENT_TAG events holding canonical JSON.

Each event's data is a TCG_PCClientTaggedEvent (UINT32 LE taggedEventID = :data:`SERVING_STACK_TAG`,
UINT32 LE size, the bytes) whose bytes are RFC 8785 canonical JSON of one of three kinds
(docs/protocol.md): ``router`` (name, version, code digest), ``config`` (config digest,
upstream, model tiers) and ``model`` (name, source, weights digest, upstream identity). Only
events a quote proves count: :func:`summarize_serving_stack` reads nothing else.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import Any, TypedDict

from .._canonical import canonical_json
from ._constants import EV_EVENT_TAG, SERVING_STACK_PCR, SERVING_STACK_TAG, digest, hasher
from ._parse import Event, EventLog
from ._replay import LogMatch

__all__ = ["ServingStack", "decode_serving_stack", "serving_stack_event", "summarize_serving_stack"]

_KINDS: dict[str, dict[str, tuple[type, ...]]] = {
    "router": {"name": (str,), "version": (str,), "code_sha256": (str,)},
    "config": {"config_sha256": (str,), "upstream": (str, type(None)), "model_tiers": (dict,)},
    "model": {
        "name": (str,),
        "source": (str,),
        "weights_sha256": (str, type(None)),
        "upstream_identity": (str, type(None)),
    },
}
_MAX_MODELS = 64
_MAX_TEXT = 1024


class ServingStack(TypedDict, total=False):
    """What the proven PCR 23 events say served the reply (JSON-ready)."""

    log_sha256: str
    pcr: int
    router: dict[str, str]
    config_sha256: str
    upstream: str | None
    model_tiers: dict[str, list[str]]
    models: dict[str, dict[str, str | None]]


def serving_stack_event(kind: str, fields: Mapping[str, Any]) -> bytes:
    """The EV_EVENT_TAG data of one serving-stack measurement (``kind``: router, config or model).

    Raises ValueError when ``fields`` are not exactly the kind's fields with the right types.
    """
    spec = _KINDS.get(kind)
    if spec is None:
        raise ValueError(f"unknown serving-stack kind {kind!r} (router, config or model)")
    if set(fields) != set(spec):
        raise ValueError(f"a {kind} measurement has exactly the fields {', '.join(sorted(spec))}")
    for name, types in spec.items():
        if not isinstance(fields[name], types):
            raise ValueError(f"{kind}.{name} has the wrong type")
    body = canonical_json({"v": 1, "kind": kind, **fields})
    return struct.pack("<II", SERVING_STACK_TAG, len(body)) + body


def decode_serving_stack(data: bytes) -> dict[str, Any] | None:
    """The JSON of a serving-stack event's data, or None when it is not one (tag, size, JSON or shape)."""
    if len(data) < 8:
        return None
    tag, size = struct.unpack_from("<II", data)
    if tag != SERVING_STACK_TAG or size != len(data) - 8:
        return None
    body = bytes(data[8:])
    try:
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(value, dict) or type(value.get("v")) is not int or value["v"] != 1:
        return None
    kind = value.get("kind")
    spec = _KINDS.get(kind) if isinstance(kind, str) else None
    if spec is None or set(value) != {"v", "kind", *spec}:
        return None
    if not all(isinstance(value[name], types) for name, types in spec.items()):
        return None
    # only the bytes serving_stack_event writes: a duplicated key or another spelling of the same
    # JSON would read one way here and another way in an auditor's parser
    try:
        canonical = canonical_json(value)
    except (ValueError, RecursionError):
        return None
    return value if canonical == body else None


def _text(value: object) -> str | None:
    return value[:_MAX_TEXT] if isinstance(value, str) else None


def _verified(event: Event) -> bool:
    """Its digest in every bank this Python can hash is the hash of its data (a bank it cannot,
    sm3_256 on some OpenSSL builds, was never compared with the quote either)."""
    return all(
        digest(bank, event.data) == value for bank, value in event.digests.items() if hasher(bank) is not None
    )


def summarize_serving_stack(log: EventLog, match: LogMatch) -> ServingStack | None:
    """The serving stack the quote proves (PCR 23 events only), or None when it proves none.

    An event counts when the quote proves it, its digest in every bank is the hash of its data,
    and its data is a well-formed serving-stack measurement; a later measurement of a kind
    (a config reload) replaces an earlier one, models accumulate by name.
    """
    proven = match.proven_numbers()
    result: ServingStack = {}
    models: dict[str, dict[str, str | None]] = {}
    for event in log.events:
        if event.pcr != SERVING_STACK_PCR or event.type != EV_EVENT_TAG or event.number not in proven:
            continue
        value = decode_serving_stack(event.data)
        if value is None or not _verified(event):
            continue
        if value["kind"] == "router":
            result["router"] = {key: value[key][:_MAX_TEXT] for key in ("name", "version", "code_sha256")}
        elif value["kind"] == "config":
            result["config_sha256"] = value["config_sha256"][:_MAX_TEXT]
            result["upstream"] = _text(value["upstream"])
            tiers = value["model_tiers"]
            result["model_tiers"] = {
                str(glob)[:_MAX_TEXT]: [str(t)[:_MAX_TEXT] for t in tier][:_MAX_MODELS]
                for glob, tier in list(tiers.items())[:_MAX_MODELS]
                if isinstance(tier, list)
            }
        elif len(models) < _MAX_MODELS or value["name"] in models:
            models[value["name"][:_MAX_TEXT]] = {
                "source": value["source"][:_MAX_TEXT],
                "weights_sha256": _text(value["weights_sha256"]),
                "upstream_identity": _text(value["upstream_identity"]),
            }
    if not result and not models:
        return None
    if models:
        result["models"] = models
    return {"log_sha256": log.sha256.hex(), "pcr": SERVING_STACK_PCR, **result}
