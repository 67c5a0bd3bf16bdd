"""A report's measured-state section: per router, what booted and what served, and when it changed. Pure.

It reads the verdict facts a record carries (or its re-appraisal gives): ``measured_boot``
(secure boot, firmware, boot applications, kernels, command lines), ``serving_stack`` (router
version and code digest, configuration, models and weights digests) and ``ima`` (entries, how
many the quote proved). The verifier puts them there only for events the quote proved, so
nothing here is the router's word.

A router's *state* is its boot chain and serving stack; each distinct state is listed with the
first and last time it was seen and what changed from the one before. Both summaries are
functions of the event log the quote proved, so records are grouped by the log's digest and a
state is built once per log, not once per record (a report over 100k records stays cheap). The
IMA list grows as files are opened, so it is not part of the state: its entries are shown as a
range.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, OrderedDict
from collections.abc import Mapping
from typing import Any

from ..eventlog._efi import printable
from ._report_record import as_label, as_mapping, as_text

__all__ = ["STATE_FIELDS", "MeasuredTally"]

#: The parts of a state, in the order a report shows what changed.
STATE_FIELDS = (
    "secure_boot",
    "crtm_version",
    "firmware",
    "boot_applications",
    "kernels",
    "kernel_cmdlines",
    "router",
    "config_sha256",
    "upstream",
    "models",
)
_MAX_ROUTERS = 50
_MAX_STATES = 50
#: Proven logs whose state is remembered (a miss only builds the state again)
_MAX_LOGS = 128
_MAX_ITEMS = 64
_MAX_TEXT = 1024


def _text(value: Any) -> str | None:
    """A string a router chose (proven only in that its TPM measured it): one printable line, capped,
    so no line break or terminal escape in a version or path reaches a report's Markdown or CSV."""
    return printable(value, _MAX_TEXT) if isinstance(value, str) else None


def _rows(value: Any, keys: tuple[str, ...]) -> list[dict[str, str | None]]:
    rows = value[:_MAX_ITEMS] if isinstance(value, list) else []
    return [{k: _text(row.get(k)) for k in keys} for row in rows if isinstance(row, Mapping)]


def _texts(value: Any) -> list[str]:
    return [t for v in value[:_MAX_ITEMS] if (t := _text(v)) is not None] if isinstance(value, list) else []


def _models(value: Any) -> dict[str, dict[str, str | None]]:
    models = as_mapping(value)
    return {
        printable(str(name), _MAX_TEXT): {
            k: _text(as_mapping(entry).get(k)) for k in ("source", "weights_sha256", "upstream_identity")
        }
        for name, entry in list(models.items())[:_MAX_ITEMS]
    }


def _state(boot: Mapping[str, Any], stack: Mapping[str, Any]) -> dict[str, Any]:
    """What one record's facts say booted and served, bounded and JSON-ready."""
    router = as_mapping(stack.get("router"))
    secure_boot = boot.get("secure_boot")
    pcrs = boot.get("pcrs")
    return {
        "measured_boot": bool(boot),
        "secure_boot": secure_boot if secure_boot in ("enabled", "disabled") else None,
        "crtm_version": _text(boot.get("crtm_version")),
        "firmware": _rows(boot.get("firmware"), ("type", "digest", "description")),
        "boot_applications": _rows(boot.get("boot_applications"), ("digest", "path")),
        "kernels": _rows(boot.get("kernels"), ("digest", "path")),
        "kernel_cmdlines": _texts(boot.get("kernel_cmdlines")),
        "serving_stack": bool(stack),
        "router": {k: _text(router.get(k)) for k in ("name", "version", "code_sha256")} if router else None,
        "config_sha256": _text(stack.get("config_sha256")),
        "upstream": _text(stack.get("upstream")),
        "models": _models(stack.get("models")),
        "log_sha256": _text(boot.get("log_sha256")) or _text(stack.get("log_sha256")),
        "pcrs": [p for p in pcrs if type(p) is int][:_MAX_ITEMS] if isinstance(pcrs, list) else [],
    }


def _log_key(summary: Mapping[str, Any], *fields: str) -> Any:
    """What a summary is a function of: its log's digest and what the quote covered."""
    key = tuple(summary.get(f) for f in fields)
    try:
        hash(key)
    except TypeError:
        return repr(key)
    return key


class _States:
    """One router's distinct states, merged by what they say; memory bounded however many there are.

    At most ``2 * _MAX_STATES`` states are kept whole. Past that the ones first seen earliest are
    reduced to (first seen, last seen, records) under a 16-byte digest of what they say, so a
    state seen again later keeps its true first sighting and a report counts what it omits.
    """

    __slots__ = ("evicted", "kept", "records")

    def __init__(self) -> None:
        self.kept: dict[bytes, dict[str, Any]] = {}
        self.evicted: dict[bytes, tuple[str, str, int]] = {}
        self.records = 0

    def add(self, identity: bytes, state: dict[str, Any], when: str) -> None:
        self.records += 1
        entry = self.kept.get(identity)
        if entry is None:
            first, last, records = self.evicted.pop(identity, (when, when, 0))
            entry = {**state, "first_seen": first, "last_seen": last, "records": records}
            self.kept[identity] = entry
            if len(self.kept) > 2 * _MAX_STATES:
                self._evict()
        entry["records"] += 1
        if when:
            entry["first_seen"] = min(entry["first_seen"], when) if entry["first_seen"] else when
            entry["last_seen"] = max(entry["last_seen"], when)

    def _evict(self) -> None:
        order = sorted(self.kept, key=lambda k: (self.kept[k]["first_seen"], self.kept[k]["last_seen"]))
        for identity in order[: len(order) - _MAX_STATES - 1]:  # one more kept: what the first shown changed
            entry = self.kept.pop(identity)
            self.evicted[identity] = (entry["first_seen"], entry["last_seen"], entry["records"])


class _Ima:
    __slots__ = ("entries", "first", "last", "latest", "proven", "records", "violations")

    def __init__(self) -> None:
        self.records = 0
        self.entries: list[int] = []
        self.proven = 0
        self.violations = 0
        self.first = self.last = ""
        self.latest: dict[str, int] = {}


def _count(value: Any) -> int | None:
    return value if type(value) is int and value >= 0 else None


class MeasuredTally:
    """Per router: its distinct measured states with first/last seen, its unmeasured records, its IMA."""

    def __init__(self) -> None:
        # a state is a function of its proven log: built once per log key while that key is recent
        self._by_log: OrderedDict[tuple[str, Any, Any], tuple[bytes, dict[str, Any]]] = OrderedDict()
        self._states: dict[str, _States] = {}
        self._unmeasured: Counter[str] = Counter()
        self._ima: dict[str, _Ima] = {}

    def add(self, router: str, when: str, facts: Mapping[str, Any]) -> None:
        """Count one record of ``router`` at ``when`` (its RFC 3339 time) with its verdict ``facts``."""
        boot = as_mapping(facts.get("measured_boot"))
        stack = as_mapping(facts.get("serving_stack"))
        ima = facts.get("ima")
        if ima is not None:
            self._add_ima(router, when, as_mapping(ima))
        if not boot and not stack:
            self._unmeasured[router] += 1
            return
        key = (router, _log_key(boot, "log_sha256", "bank", "pcrs"), _log_key(stack, "log_sha256", "pcr"))
        known = self._by_log.get(key)
        if known is None:
            state = _state(boot, stack)
            said = json.dumps({k: v for k, v in state.items() if k not in ("log_sha256", "pcrs")})
            known = self._by_log[key] = (hashlib.sha256(said.encode()).digest()[:16], state)
            if len(self._by_log) > _MAX_LOGS:
                self._by_log.popitem(last=False)
        else:
            self._by_log.move_to_end(key)
        states = self._states.get(router)
        if states is None:
            states = self._states[router] = _States()
        states.add(known[0], known[1], when)

    def _add_ima(self, router: str, when: str, ima: Mapping[str, Any]) -> None:
        tally = self._ima.get(router)
        if tally is None:
            tally = self._ima[router] = _Ima()
        tally.records += 1
        entries, proven = _count(ima.get("entries")), _count(ima.get("proven"))
        if entries is not None:
            low, high = tally.entries or (entries, entries)
            tally.entries = [min(low, entries), max(high, entries)]
        tally.proven = max(tally.proven, proven or 0)
        tally.violations = max(tally.violations, _count(ima.get("violations")) or 0)
        if when and when >= tally.last:
            tally.last = when
            tally.latest = {"entries": entries or 0, "proven": proven or 0}
        if when and (not tally.first or when < tally.first):
            tally.first = when

    def section(self) -> list[dict[str, Any]]:
        """The report's ``measured`` list: one entry per router, routers with most records first."""
        routers = set(self._states) | set(self._unmeasured) | set(self._ima)
        entries = [self._router(r, self._states.get(r) or _States()) for r in routers]
        entries.sort(key=lambda e: (-(e["records"] + e["unmeasured"]), e["router"]))
        return entries[:_MAX_ROUTERS]

    def _router(self, router: str, kept: _States) -> dict[str, Any]:
        states = sorted(kept.kept.values(), key=lambda s: (s["first_seen"], s["last_seen"]))
        previous: dict[str, Any] | None = None
        for state in states:
            state["changed"] = (
                [] if previous is None else [f for f in STATE_FIELDS if state[f] != previous[f]]
            )
            previous = state
        ima = self._ima.get(router)
        return {
            "router": as_label(router),
            "records": kept.records,
            "unmeasured": self._unmeasured[router],
            "changed": len(states) + len(kept.evicted) > 1,
            "states": [dict(s) for s in states[-_MAX_STATES:]],
            "states_omitted": max(0, len(states) - _MAX_STATES) + len(kept.evicted),
            "ima": None
            if ima is None
            else {
                "records": ima.records,
                "entries": ima.entries or None,
                "proven_max": ima.proven,
                "violations_max": ima.violations,
                "latest": ima.latest or None,
                "first_seen": as_text(ima.first) or None,
                "last_seen": as_text(ima.last) or None,
            },
        }
