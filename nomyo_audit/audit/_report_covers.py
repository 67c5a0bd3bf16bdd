"""What a report covers, exactly (``covers`` in report.json). Pure.

Every record of the report's period is covered, whatever the report's scope (:mod:`._report_groups`
limits only what it counts), so what the checks on coverage read (spans, chains, ``verify-report
--log``) is the same for every report over one period.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._report_record import as_text

__all__ = ["Coverage"]


class Coverage:
    """The first and last record (seq and time) of the period, and how many there are."""

    def __init__(self) -> None:
        self.records = 0
        self.first_time: str | None = None
        self.last_time: str | None = None
        self.first_seq: int | None = None
        self.last_seq: int | None = None

    def add(self, doc: Mapping[str, Any]) -> None:
        self.records += 1
        seq, when = doc.get("seq"), as_text(doc.get("time"))
        if type(seq) is int:
            self.first_seq = seq if self.first_seq is None else self.first_seq
            self.last_seq = seq
        if when:
            self.first_time = self.first_time or when
            self.last_time = when

    def section(self, period: tuple[str | None, str | None], log: Mapping[str, Any]) -> dict[str, Any]:
        """The records (first and last seq, count), the period's bounds as selected (``[since,
        until)``, None where open) and the signed checkpoint (size, root, note) that a later report's
        consistency proof starts from (:mod:`._report_chain`)."""
        cited = log.get("checkpoint")
        return {
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "records": self.records,
            "period": {"since": period[0], "until": period[1]},
            "checkpoint": {k: cited.get(k) for k in ("size", "root", "note")}
            if isinstance(cited, Mapping)
            else None,
        }
