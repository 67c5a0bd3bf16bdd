"""Event references learned from verified replies, for ``nomyo-audit policy from-evidence``: pure, no I/O.

A golden PCR 0 value changes with every firmware update, and says nothing about what changed. The
events behind it do: :class:`EventReferences` collects, from the events a quote *proves* only, the
references the event rules check (``secure_boot``, ``boot_events`` firmware and boot applications,
``kernel_cmdline`` require, ``ima`` digests, ``serving_stack``), so a fleet accepts a new firmware
by adding its blob digest to ``boot_events.firmware``. A reply whose log did not match its quote
contributes nothing: what it says is the router's word.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..tpm._verdict import Verdict
from ._measured_rules import ALLOW_LISTS, allow_listed, proven_cmdlines, proven_digests

__all__ = ["EventReferences"]

#: The longest pattern the schema accepts (``kernel_cmdline`` patterns are bounded).
_MAX_PATTERN = 1024


class EventReferences:
    """The event references seen in verified replies, accumulated one verdict at a time."""

    def __init__(self) -> None:
        self.secure_boot: set[str | None] = set()
        self.firmware: dict[str, None] = {}  # dicts as ordered sets: the output follows the replies
        self.boot_applications: dict[str, None] = {}
        self.cmdlines: dict[str, None] = {}
        self.ima: dict[str, dict[str, None]] = {}
        self.router_versions: dict[str, None] = {}
        self.router_code: dict[str, None] = {}
        self.models: dict[str, dict[str, None] | None] = {}  # None: a model measured without weights
        #: PCRs whose events some reply's log or IMA list proved
        self.proven_pcrs: set[int] = set()
        #: how many replies' event logs / IMA lists were proven
        self.logs = self.ima_lists = 0

    def add(self, verdict: Verdict) -> None:
        """Learn from ``verdict``'s proven events (nothing from a log whose check did not pass)."""
        measurements = verdict.measurements
        if verdict.finding("event_log").status == "pass" and measurements is not None:
            self.logs += 1
            self._add_boot(verdict, measurements)
        if verdict.finding("ima_log").status == "pass" and measurements is not None:
            self.ima_lists += 1
            for entry in measurements.proven_ima_entries():
                self.proven_pcrs.add(entry.pcr)
                if entry.path is not None and entry.file_digest is not None and not entry.violation:
                    self.ima.setdefault(entry.path, {})[entry.file_digest.hex()] = None

    def _add_boot(self, verdict: Verdict, measurements: Any) -> None:
        proven = proven_digests(measurements)
        self.proven_pcrs |= proven.pcrs
        lists = {pcr: (self.firmware if name == "firmware" else self.boot_applications, kinds)
                 for pcr, name, kinds in ALLOW_LISTS}  # fmt: skip
        for event, digests in proven.events:
            learned = lists.get(event.pcr)
            # exactly the events the rule judges (also an unverifiable event of another type)
            if digests and learned is not None and allow_listed(event, learned[1], proven.banks):
                learned[0][_one(digests)] = None
        boot: Mapping[str, Any] = verdict.facts.get("measured_boot") or {}
        self.secure_boot.add(boot.get("secure_boot"))
        lines = proven_cmdlines(measurements)  # whole, from proven banks: what the rule reads
        for line in lines if isinstance(lines, tuple) else ():
            self.cmdlines[line] = None
        stack: Mapping[str, Any] = verdict.facts.get("serving_stack") or {}
        router = stack.get("router") or {}
        if isinstance(router.get("version"), str):
            self.router_versions[router["version"]] = None
        if isinstance(router.get("code_sha256"), str):
            self.router_code[router["code_sha256"]] = None
        for name, identity in (stack.get("models") or {}).items():
            weights = identity.get("weights_sha256") if isinstance(identity, Mapping) else None
            known = self.models.setdefault(name, {})
            if weights is None or known is None:
                self.models[name] = None
            else:
                known[weights] = None

    def judged_pcrs(self) -> set[int]:
        """The proven PCRs whose every unverifiable event a learned rule judges, so their golden
        values may give way to it: PCR 0 and 4 with a learned allow-list, PCR 10 with IMA digests.
        Not PCR 7 (secure_boot reads one variable of it, not db or dbx), 8 (grub commands) or 9
        (the kernel and initrd files), nor 23 (its configuration event), nor any other: a PCR whose
        golden value is dropped with no rule on its events would accept whatever it measures."""
        judged = {0} if self.firmware else set()
        judged |= {4} if self.boot_applications else set()
        judged |= {10} if self.ima else set()
        return judged & self.proven_pcrs

    def spec(self) -> dict[str, Any]:
        """The event rules learned, as ``spec`` keys (only rules something proven supports)."""
        spec: dict[str, Any] = {}
        if len(self.secure_boot) == 1 and None not in self.secure_boot:  # every reply proved the same state
            spec["secure_boot"] = next(iter(self.secure_boot))
        events = {"firmware": list(self.firmware), "boot_applications": list(self.boot_applications)}
        if any(events.values()):
            spec["boot_events"] = {key: value for key, value in events.items() if value}
        pattern = _cmdline_pattern(list(self.cmdlines))
        if pattern is not None:
            # require: a seen line was booted; forbid: no other line was (a second GRUB `linux`
            # command's line is measured too, and the last one is what the kernel runs)
            spec["kernel_cmdline"] = {"require": [pattern], "forbid": ["^(?!" + pattern[1:] + ")"]}
        if self.ima:
            spec["ima"] = {"digests": {path: list(digests) for path, digests in self.ima.items()}}
        stack: dict[str, Any] = {}
        if self.router_versions:
            stack["router_versions"] = [_literal(version) for version in self.router_versions]
        if self.router_code:
            stack["router_code"] = list(self.router_code)
        if self.models:
            stack["models"] = {n: "any" if d is None else list(d) for n, d in self.models.items()}
        if stack:
            spec["serving_stack"] = stack
        return spec


def _one(digests: frozenset[str]) -> str:
    """One proven digest of an event, the same bank each time: SHA-256 when proven, else the shortest."""
    sha256 = sorted(d for d in digests if len(d) == 64)
    return sha256[0] if sha256 else min(sorted(digests), key=len)


def _cmdline_pattern(lines: list[str]) -> str | None:
    """``^(?:line|line)\\Z`` matching exactly the command lines seen, or None (none, or over the bound).

    ``\\Z``, not ``$``: ``$`` also matches before a final newline, a line that was never seen.
    """
    if not lines:
        return None
    pattern = f"^(?:{'|'.join(map(re.escape, lines))})\\Z"
    return pattern if len(pattern) <= _MAX_PATTERN - len("(?!)") else None  # forbid wraps it


def _literal(version: str) -> str:
    """An fnmatch pattern matching exactly ``version`` (``[``, ``*`` and ``?`` bracketed)."""
    return re.sub(r"([\[*?])", r"[\1]", version)
