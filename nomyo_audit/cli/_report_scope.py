"""``report --service S --router URL --tenant T``: the options that limit a report to part of a
fleet's shared log. The logic is :mod:`nomyo_audit.audit._report_groups`."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import click

from ..audit._report_groups import Scope
from ..audit._store import StoredRecord

F = TypeVar("F", bound=Callable[..., Any])

_FLAGS = {"service": "--service", "router": "--router", "tenant": "--tenant"}


def SCOPE_OPTIONS(command: F) -> F:
    """``--service``, ``--router`` and ``--tenant``: each limits the report's figures to records with it."""
    for flag, what in (
        ("--tenant", "this tenant label"),
        ("--router", "this router URL"),
        ("--service", "this service label"),
    ):
        command = click.option(
            flag, help=f"Count only records of {what} (the report still covers the whole period)."
        )(command)
    return command


def scope_of(service: str | None, router: str | None, tenant: str | None) -> Scope | None:
    """The report's scope, or None for the whole log; a malformed limit is exit 2 (invalid_label)."""
    return Scope.of(Scope(service, router, tenant), _FLAGS)


def in_scope(rows: Iterator[StoredRecord], scope: Scope | None) -> Iterator[StoredRecord]:
    """The rows whose record ``scope`` admits (all of them without one; a record that is not JSON
    is in no scope)."""
    for stored in rows:
        if scope is None:
            yield stored
            continue
        try:
            doc = json.loads(stored.data)
        except ValueError:
            continue
        if isinstance(doc, Mapping) and scope.admits(doc):
            yield stored


def scoped(document: Mapping[str, Any]) -> str:
    """`` (scope service=billing) of 12 in the period`` for a scoped report's summary line, else ``""``."""
    scope = document.get("scope")
    if not scope:
        return ""
    limits = " ".join(f"{name}={value}" for name, value in scope.items() if value is not None)
    return f" ({limits}) of {document['covers']['records']} in the period"


def scope_note(target: object, statement: Mapping[str, Any]) -> str:
    """A line for ``verify-report`` naming the scope a signed report counts, else ``""``: the figures
    of a report limited to part of a fleet are that part's, not the log's."""
    predicate = statement.get("predicate")
    scope = predicate.get("scope") if isinstance(predicate, Mapping) else None
    if not isinstance(scope, Mapping) or not scope:
        return ""
    limits = " ".join(f"{name}={value}" for name, value in scope.items() if isinstance(value, str))
    return f"note: {target} counts only the records of {limits} (its signed scope)\n"


def same_scope(previous: Mapping[str, Any], scope: Scope | None) -> None:
    """``report --previous``: a series counts one scope, so a report chains only from a report of the
    same scope (its coverage would chain either way, its figures would not add up); exit 2 otherwise."""
    before = previous.get("scope") or None
    now = scope.to_dict() if scope else None
    if before != now:

        def said(limits: Any) -> str:
            if not isinstance(limits, Mapping):
                return "the whole log"
            return " ".join(f"--{name} {value}" for name, value in limits.items() if value is not None)

        raise click.BadParameter(
            f"the previous report counts {said(before)} and this one {said(now)}: "
            "a chain of reports keeps one scope",
            param_hint="--previous",
        )
