"""What booted: the events of a TCG log that a quote proves, summarized for policies and reports.

Only proven events count (:meth:`LogMatch.proven_numbers`), and only data a proven digest covers
(``data_verified``) is read as fact: the secure boot state, command lines and key digests. The
secure boot state follows go-attestation's ParseSecurebootState (attest/secureboot.go): one
SecureBoot variable in PCR 7, before PCR 7's separator, data-verified, one byte 0 or 1; a
duplicated variable, a PCR 7 separator that is not 0x00000000, or the "UEFI Debug Mode" action
leave it unproven (None). A log without a PCR 7 separator (seen on some firmware) still gives it.
"""

from __future__ import annotations

from typing import Literal, TypedDict

from ._constants import (
    EV_EFI_ACTION,
    EV_EFI_BOOT_SERVICES_APPLICATION,
    EV_EFI_PLATFORM_FIRMWARE_BLOB,
    EV_EFI_PLATFORM_FIRMWARE_BLOB2,
    EV_EFI_VARIABLE_DRIVER_CONFIG,
    EV_IPL,
    EV_NO_ACTION,
    EV_POST_CODE,
    EV_S_CRTM_VERSION,
    EV_SEPARATOR,
)
from ._events import decode_event
from ._parse import Event, EventLog
from ._replay import LogMatch

__all__ = ["BootSummary", "summarize_boot"]

_MAX_ITEMS = 64
_MAX_DENY = 512
_MAX_TEXT = 1024
_FIRMWARE_TYPES = (EV_POST_CODE, EV_EFI_PLATFORM_FIRMWARE_BLOB, EV_EFI_PLATFORM_FIRMWARE_BLOB2)


class BootSummary(TypedDict, total=False):
    """JSON-ready, bounded summary of the events a quote proves (lists <= 64, strings <= 1024)."""

    log_sha256: str
    bank: str
    pcrs: list[int]
    secure_boot: Literal["enabled", "disabled"] | None
    crtm_version: str | None
    firmware: list[dict[str, str]]
    boot_applications: list[dict[str, str]]
    kernels: list[dict[str, str]]
    kernel_cmdlines: list[str]
    secure_boot_keys: dict[str, str]
    deny_candidates: list[str]
    unknown_events: int


class _SecureBoot:
    """go-attestation's reading of PCR 7, over proven events in log order."""

    def __init__(self) -> None:
        self.state: Literal["enabled", "disabled"] | None = None
        self.seen_separator = False
        self.spoiled = False
        self.variables: set[str] = set()

    def see(self, event: Event, bank: str) -> None:
        info = decode_event(event, bank)
        if event.type == EV_SEPARATOR:
            self.spoiled |= (
                self.seen_separator or info.fields.get("error", True) or info.data_verified is not True
            )
            self.seen_separator = True
        elif event.type == EV_EFI_ACTION and info.fields.get("action") == "UEFI Debug Mode":
            self.spoiled = True
        elif event.type == EV_EFI_VARIABLE_DRIVER_CONFIG and info.kind == "secure_boot_variable":
            name = info.fields["name"]
            if name in self.variables or self.seen_separator:
                self.spoiled = True
            self.variables.add(name)
            if name == "SecureBoot":
                if info.data_verified is not True or "enabled" not in info.fields:
                    self.spoiled = True
                else:
                    self.state = "enabled" if info.fields["enabled"] else "disabled"

    def result(self) -> Literal["enabled", "disabled"] | None:
        return None if self.spoiled else self.state


def _add(items: list[dict[str, str]], item: dict[str, str]) -> None:
    if len(items) < _MAX_ITEMS:
        items.append({key: value[:_MAX_TEXT] for key, value in item.items()})


def _proven_in(log: EventLog, match: LogMatch, bank: str) -> frozenset[int]:
    """The events the quote proves in ``bank`` itself: the first ``proven`` of each PCR matched in it.

    Not :meth:`LogMatch.proven_numbers` (every bank's): an event proven only through another bank
    (a quote of sha1:7 and sha256:0) has an unproven ``bank`` digest, which must not verify its data.
    """
    counts = {m.pcr: m.proven for m in match.pcrs if m.bank == bank}
    seen: dict[int, int] = {}
    numbers: set[int] = set()
    for event in log.events:
        if event.type == EV_NO_ACTION or event.pcr not in counts:
            continue
        position = seen.get(event.pcr, 0)
        if position < counts[event.pcr]:
            numbers.add(event.number)
        seen[event.pcr] = position + 1
    return frozenset(numbers) & match.proven_numbers()


def summarize_boot(log: EventLog, match: LogMatch, bank: str = "sha256") -> BootSummary:
    """Summarize the events of ``log`` that ``match`` proves in ``bank``, reading digests of ``bank``.

    A log without ``bank`` digests (a SHA-1 format log) is read in its first bank; ``bank`` in
    the result says which.
    """
    if bank not in log.banks:
        bank = log.banks[0]
    proven = _proven_in(log, match, bank)
    events = [e for e in log.events if e.number in proven and e.type != EV_NO_ACTION]
    secure_boot = _SecureBoot()
    summary: BootSummary = {
        "log_sha256": log.sha256.hex(),
        "bank": bank,
        "pcrs": sorted({e.pcr for e in events}),
        "crtm_version": None,
        "firmware": [],
        "boot_applications": [],
        "kernels": [],
        "kernel_cmdlines": [],
        "secure_boot_keys": {},
        "deny_candidates": [],
        "unknown_events": 0,
    }
    deny: dict[str, None] = {}
    for event in events:
        digest = event.digests[bank].hex()
        if len(deny) < _MAX_DENY:
            deny[digest] = None
        info = decode_event(event, bank)
        if info.kind in ("unknown", "undecodable"):
            summary["unknown_events"] += 1
        if event.pcr == 7:
            secure_boot.see(event, bank)
            if info.kind == "secure_boot_variable" and info.data_verified and info.fields["name"] in (
                "PK", "KEK", "db", "dbx"
            ):  # fmt: skip
                summary["secure_boot_keys"][info.fields["name"]] = digest
        elif event.pcr == 0 and event.type in _FIRMWARE_TYPES:
            _add(
                summary["firmware"], {"type": event.type_name, "digest": digest, "description": info.summary}
            )
        elif event.pcr == 0 and event.type == EV_S_CRTM_VERSION and info.data_verified:
            summary["crtm_version"] = str(info.fields["version"])[:_MAX_TEXT]
        elif event.pcr == 4 and event.type == EV_EFI_BOOT_SERVICES_APPLICATION:
            _add(
                summary["boot_applications"],
                {"digest": digest, "path": str(info.fields.get("device_path", ""))},
            )
        elif event.pcr in (8, 9) and event.type == EV_IPL:
            if info.kind == "kernel_cmdline" and info.data_verified:
                if len(summary["kernel_cmdlines"]) < _MAX_ITEMS:
                    summary["kernel_cmdlines"].append(str(info.fields["cmdline"])[:_MAX_TEXT])
            elif "path" in info.fields:
                _add(summary["kernels"], {"digest": digest, "path": str(info.fields["path"])})
    summary["secure_boot"] = secure_boot.result()
    summary["deny_candidates"] = list(deny)
    return summary
