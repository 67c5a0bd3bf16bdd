"""A report over a log many services share: records grouped by service, router and tenant, and the
scope a report can be limited to. Pure.

The ``service`` and ``tenant`` labels are the client's own word (:mod:`._labels`), and ``router``
is the URL the client sent to: each says where a record came from, none decides a status. A
record without a label groups under None (shown "(none)"). Memory is bounded: at most
:data:`MAX_TRACKED` distinct values per grouping are counted one by one, the records of any
further value are counted together, at most :data:`MAX_TRACKED` distinct label combinations go
into the report's combined counts (:meth:`GroupTally.combined_key`), and the document lists the
:data:`MAX_GROUPS` largest groups (the rest summarised in ``groups_omitted``).

A scoped report (``report --service S``) counts only the records in its scope, but still covers
(``covers``) every record of its period, so the checks on what a report covers (spans, chains,
``verify-report --log``) are the same as for a whole-log report; its ``scope`` says which
records its figures count, and the signed statement carries it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any, NamedTuple

from ..errors import ConfigurationError
from ._labels import check_label
from ._report_record import _MAX_TEXT, as_label

__all__ = [
    "GROUP_BY",
    "MAX_GROUPS",
    "MAX_TRACKED",
    "NO_LABEL",
    "GroupTally",
    "Scope",
    "group_labels",
]

#: The groupings a report shows, in order: record fields.
GROUP_BY = ("service", "router", "tenant")
#: How a record without the label is shown (the document says null).
NO_LABEL = "(none)"
#: At most this many groups per grouping in the document, the largest first.
MAX_GROUPS = 50
#: At most this many distinct values per grouping are counted apart (bounded memory).
MAX_TRACKED = 10_000
#: The longest router URL a scope names (a URL, not a document).
MAX_ROUTER_LENGTH = 2048
#: The statuses a group counts (the report's own: ``STATUS_LEGEND``).
OUTCOMES = ("passed", "warned", "denied", "failed")

Labels = tuple[str | None, str | None, str | None]


def _label(value: Any) -> str | None:
    """The value a record's label groups under. A writer that appends its own bytes is not held to
    :func:`check_label`: text that is not printable (a right-to-left override reverses the rest of a
    Markdown or CSV line, a zero-width space makes two groups look alike, a line break starts a row)
    groups under its escaped form, as Python's ``repr`` writes it, so every rendering shows it."""
    if value is None or (type(value) is str and len(value) <= _MAX_TEXT and value.isprintable()):
        return value  # the fast path: run per record
    if isinstance(value, str) and not value.isprintable():
        return repr(value)[:_MAX_TEXT]
    return as_label(value)


def group_labels(doc: Mapping[str, Any]) -> Labels:
    """(service, router, tenant) of one record, each None when the record has none."""
    return _label(doc.get("service")), _label(doc.get("router")), _label(doc.get("tenant"))


class Scope(NamedTuple):
    """The records a report is limited to: those whose every given label equals the limit."""

    service: str | None = None
    router: str | None = None
    tenant: str | None = None

    @classmethod
    def of(
        cls, limits: Scope | Mapping[str, str | None] | None, sources: Mapping[str, str] | None = None
    ) -> Scope | None:
        """``limits`` as a scope (None when nothing is limited), each limit checked as ``report``
        checks its options (the scope is printed, rendered and signed): an unknown key or a malformed
        limit raises ConfigurationError (``invalid_label``, naming ``sources[name]`` when given)."""
        if limits is None:
            return None
        if not isinstance(limits, Scope):
            unknown = sorted(set(limits) - set(cls._fields))
            if unknown:
                raise ConfigurationError(
                    f"a report scope limits only {', '.join(cls._fields)}, not {', '.join(map(str, unknown))}"
                )
            limits = cls(**limits)
        where = sources or {}
        for name in ("service", "tenant"):
            if getattr(limits, name) is not None:
                check_label(name, getattr(limits, name), where.get(name))
        router = limits.router
        if router is not None and (
            not isinstance(router, str)
            or not router
            or len(router) > MAX_ROUTER_LENGTH
            or not router.isprintable()
        ):
            raise ConfigurationError(
                f"{where.get('router', 'router')} must be a router URL of 1 to {MAX_ROUTER_LENGTH} printable "
                "characters",
                code="invalid_label",
            )
        return limits if limits else None

    def __bool__(self) -> bool:
        return any(limit is not None for limit in self)

    def admits(self, doc: Mapping[str, Any]) -> bool:
        """Whether ``doc`` is in scope (a router URL compares without a trailing slash)."""
        service, router, tenant = self
        if service is not None and doc.get("service") != service:
            return False
        if tenant is not None and doc.get("tenant") != tenant:
            return False
        if router is not None:
            stated = doc.get("router")
            return isinstance(stated, str) and stated.rstrip("/") == router.rstrip("/")
        return True

    def to_dict(self) -> dict[str, str | None] | None:
        """The report's ``scope``: each limit (None where not limited), or None for the whole log."""
        return self._asdict() if self else None


class _Group:
    __slots__ = ("before_sending", "outcomes", "records", "verdict_failed")

    def __init__(self) -> None:
        self.records = 0
        self.outcomes: Counter[str] = Counter()
        self.before_sending = 0
        self.verdict_failed = 0


class GroupTally:
    """Counts per service, router and tenant, fed the report's combined counts (``_Tally.finish``)."""

    def __init__(self) -> None:
        self._groups: dict[str, dict[str | None, _Group]] = {name: {} for name in GROUP_BY}
        self._overflow: dict[str, _Group] = {name: _Group() for name in GROUP_BY}
        self._combined: set[Labels] = set()

    def combined_key(
        self, doc: Mapping[str, Any], status: str, *, before_sending: bool, verdict_failed: bool
    ) -> Labels | None:
        """The record's labels as part of the key of the report's combined counts (``_Tally.combos``,
        fed back through :meth:`add` when the pass ends), or None once :data:`MAX_TRACKED` distinct
        label combinations are in them and this is another: such a record is counted here at once.
        The combined counts keep one counter per distinct key until the pass ends (about 0.55 KB),
        so without this a log of 200,000 distinct service and tenant pairs held 111 MB; the totals
        are the same either way."""
        labels = group_labels(doc)
        combined = self._combined
        if labels in combined:
            return labels
        if len(combined) < MAX_TRACKED:
            combined.add(labels)
            for name, value in zip(GROUP_BY, labels, strict=True):  # its values are tracked (if room)
                groups = self._groups[name]
                if value not in groups and len(groups) < MAX_TRACKED:
                    groups[value] = _Group()  # in record order, as for the records counted at once
            return labels
        self.add(labels, status, before_sending=before_sending, verdict_failed=verdict_failed, n=1)
        return None

    def add(self, labels: Labels, status: str, *, before_sending: bool, verdict_failed: bool, n: int) -> None:
        """``n`` records with these labels and this status."""
        for name, value in zip(GROUP_BY, labels, strict=True):
            groups = self._groups[name]
            group = groups.get(value)
            if group is None and len(groups) >= MAX_TRACKED:
                group = self._overflow[name]
            elif group is None:
                group = groups[value] = _Group()
            group.records += n
            group.outcomes[status] += n
            group.before_sending += n if before_sending else 0
            group.verdict_failed += n if verdict_failed else 0

    def section(self) -> tuple[dict[str, list[dict[str, Any]]], dict[str, dict[str, int]]]:
        """(``groups``, ``groups_omitted``): the largest groups of each grouping (ties by value,
        None last), and how many groups and records are not listed (of which records whose values
        were past :data:`MAX_TRACKED` and not counted apart)."""
        groups: dict[str, list[dict[str, Any]]] = {}
        omitted: dict[str, dict[str, int]] = {}
        for name in GROUP_BY:
            ordered = sorted(self._groups[name].items(), key=_largest_first)
            groups[name] = [_entry(value, group) for value, group in ordered[:MAX_GROUPS]]
            rest = ordered[MAX_GROUPS:]
            overflow = self._overflow[name]
            omitted[name] = {  # records past MAX_TRACKED values: how many values they hold is not known
                "groups": len(rest),
                "records": sum(group.records for _, group in rest) + overflow.records,
                "records_of_untracked_values": overflow.records,
            }
        return groups, omitted


def _largest_first(item: tuple[str | None, _Group]) -> tuple[int, bool, str]:
    value, group = item
    return -group.records, value is None, value or ""


def _entry(value: str | None, group: _Group) -> dict[str, Any]:
    outcomes = {status: group.outcomes[status] for status in OUTCOMES}
    return {
        "value": value,
        "records": group.records,
        "outcomes": outcomes,
        "denied_before_sending": group.before_sending,
        "verdict_failed": group.verdict_failed,
        "policy_failed": outcomes["warned"] + outcomes["denied"],
    }
