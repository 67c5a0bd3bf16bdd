"""The ``service`` and ``tenant`` labels a client writes into its records. Pure.

Many services (and the tenants they serve) can share one audit log; a label says which one a
record came from, so a report can group the fleet and be limited to one of them
(:mod:`._report_groups`). A label is the client's own word, chosen by whoever configures it: it
decides no verdict, and it goes into the record bytes only when set, so a record without labels
keeps exactly the bytes it had before labels existed.

A label is short printable text: 1 to :data:`MAX_LABEL_LENGTH` characters, no control or
separator characters (``str.isprintable``: a space is allowed), no leading or trailing space.
Anything else is refused with :class:`nomyo_audit.errors.ConfigurationError`, code
``invalid_label``, before anything is sent.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from ..errors import ConfigurationError

__all__ = ["LABELS", "LABEL_ENV", "MAX_LABEL_LENGTH", "check_label", "labels_from"]

#: The labels a record may carry, in the order they are shown.
LABELS = ("service", "tenant")
#: The environment variable read for each label a client is not given.
LABEL_ENV = {"service": "NOMYO_AUDIT_SERVICE", "tenant": "NOMYO_AUDIT_TENANT"}
#: The longest label, in characters: names, not documents.
MAX_LABEL_LENGTH = 64


def check_label(name: str, value: object, source: str | None = None) -> str:
    """``value`` as the ``name`` label, or :class:`ConfigurationError` (``invalid_label``) naming
    ``source`` (the argument, flag or variable it came from) and what is wrong, never the value
    itself when it is not printable."""
    where = source or name
    if not isinstance(value, str):
        got = type(value).__name__
        raise ConfigurationError(f"{where} must be a string, got {got}", code="invalid_label")
    if not value or len(value) > MAX_LABEL_LENGTH:
        raise ConfigurationError(
            f"{where} must be 1 to {MAX_LABEL_LENGTH} characters, got {len(value)}", code="invalid_label"
        )
    if not value.isprintable():
        raise ConfigurationError(
            f"{where} must be printable text (no control or line-break characters)", code="invalid_label"
        )
    if value != value.strip():
        raise ConfigurationError(f"{where} must not start or end with a space", code="invalid_label")
    return value


def labels_from(given: Mapping[str, str | None], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The labels set, checked: each one given, else its environment variable (an empty variable
    is unset). Labels neither given nor in the environment are absent from the result."""
    environ = os.environ if environ is None else environ
    labels: dict[str, str] = {}
    for name in LABELS:
        value = given.get(name)
        if value is not None:
            labels[name] = check_label(name, value)
        elif environ.get(LABEL_ENV[name]):
            labels[name] = check_label(name, environ[LABEL_ENV[name]], LABEL_ENV[name])
    return labels
