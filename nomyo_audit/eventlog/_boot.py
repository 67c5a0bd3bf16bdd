"""What booted: the proven events of a TCG log summarized for policies and reports."""

from __future__ import annotations

from typing import Literal, TypedDict

from ._parse import EventLog
from ._replay import LogMatch

__all__ = ["BootSummary", "summarize_boot"]


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


def summarize_boot(log: EventLog, match: LogMatch, bank: str = "sha256") -> BootSummary:
    """Summarize the events of ``log`` that ``match`` proves."""
    return {"log_sha256": log.sha256.hex(), "bank": bank}
