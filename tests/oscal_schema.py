"""NIST's published OSCAL JSON Schemas (vendored in tests/fixtures/oscal/), validated with jsonschema.

The schemas' token pattern uses \\p{L} and \\p{N}, which Python's ``re`` lacks: ``pattern`` (and the
``regex`` format that checks the schema's own patterns) go through the ``regex`` module instead, so no
pattern is weakened or rewritten.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import regex
from jsonschema import validators
from jsonschema.exceptions import ValidationError

OSCAL_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "oscal"


def _regex_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Any:
    """JSON Schema ``pattern`` by the ``regex`` module: it knows \\p{L} and \\p{N}, ``re`` does not."""
    if validator.is_type(instance, "string") and not regex.search(pattern, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def oscal_validator_class() -> Any:
    return validators.extend(jsonschema.Draft7Validator, {"pattern": _regex_pattern})


#: RFC 3986 4.1 URI-reference, by its characters: unreserved, sub-delims, ":" "@" "/" "?", "%" HH, at
#: most one "#" (the fragment), "[" "]" only before it (an IP literal); a scheme, when there is one,
#: as RFC 3986 3.1 spells it. NIST's schema types every href as ``format: uri-reference`` with no
#: pattern, and jsonschema checks that format only with rfc3986-validator installed: without this,
#: any string passed as an href.
_PCHAR = r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})"
_URI_REFERENCE = regex.compile(rf"^(?:[A-Za-z][A-Za-z0-9+\-.]*:)?(?:{_PCHAR}|[\[\]])*(?:#{_PCHAR}*)?$")


def _uri_reference(instance: object) -> bool:
    return not isinstance(instance, str) or _URI_REFERENCE.match(instance) is not None


def _uri(instance: object) -> bool:
    return not isinstance(instance, str) or (
        _URI_REFERENCE.match(instance) is not None
        and regex.match(r"^[A-Za-z][A-Za-z0-9+\-.]*:", instance) is not None
    )


@cache
def oscal_validator(name: str) -> Any:
    """A validator for ``tests/fixtures/oscal/<name>``; the schema itself is checked first."""
    schema = json.loads((OSCAL_FIXTURES / name).read_text())
    patterns = jsonschema.FormatChecker(["regex"])  # its patterns compile (with regex, as they need)
    patterns.checkers["regex"] = (regex.compile, regex.error)
    oscal_validator_class().check_schema(schema, format_checker=patterns)
    formats = jsonschema.FormatChecker(["email"])  # date-time: the schema's own pattern checks it
    formats.checkers["uri-reference"] = (_uri_reference, ())
    formats.checkers["uri"] = (_uri, ())
    return oscal_validator_class()(schema, format_checker=formats)


def schema_errors(document: Any, name: str = "oscal_assessment-results_schema.json") -> list[str]:
    """Where ``document`` breaks the schema, one line each (empty: valid)."""
    return [
        f"{list(e.absolute_path)}: {e.message[:200]}" for e in oscal_validator(name).iter_errors(document)
    ]
