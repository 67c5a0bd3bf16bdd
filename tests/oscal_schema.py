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


@cache
def oscal_validator(name: str) -> Any:
    """A validator for ``tests/fixtures/oscal/<name>``; the schema itself is checked first."""
    schema = json.loads((OSCAL_FIXTURES / name).read_text())
    patterns = jsonschema.FormatChecker(["regex"])  # its patterns compile (with regex, as they need)
    patterns.checkers["regex"] = (regex.compile, regex.error)
    oscal_validator_class().check_schema(schema, format_checker=patterns)
    # date-time: the schema's own pattern checks it. uri and uri-reference (every href: NIST's schema
    # gives them no pattern) are checked by rfc3986-validator, which jsonschema uses when installed:
    # without it any string passed as an href. It must be there: a missing one fails here, not silently.
    import rfc3986_validator  # noqa: F401

    formats = jsonschema.FormatChecker(["email", "uri", "uri-reference"])
    assert {"uri", "uri-reference"} <= set(formats.checkers), "jsonschema did not pick up rfc3986-validator"
    return oscal_validator_class()(schema, format_checker=formats)


def schema_errors(document: Any, name: str = "oscal_assessment-results_schema.json") -> list[str]:
    """Where ``document`` breaks the schema, one line each (empty: valid)."""
    return [
        f"{list(e.absolute_path)}: {e.message[:200]}" for e in oscal_validator(name).iter_errors(document)
    ]
