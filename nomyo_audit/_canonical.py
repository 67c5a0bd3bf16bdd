"""The one canonical JSON encoding: RFC 8785 (JCS), with exact integers. Pure: values in, bytes out.

Every digest over JSON (the response content bound into quotes, the keyed request and response
digests in audit records, a record's own bytes, a policy's digest) is taken over these bytes, so
an auditor in any language reproduces them with an RFC 8785 implementation. docs/protocol.md
("Canonical JSON") states the rules and tests/fixtures/vectors/canonical-json.json holds vectors.

The rules are RFC 8785's, with one documented extension for a value RFC 8785 leaves out of its
domain: an integer beyond ±(2^53-1), which an IEEE double cannot hold exactly, is written as its
exact decimal digits (what RFC 8785 writes for every integer within the range), never rounded,
so two different numbers never share a digest. Everything strict JSON parsing yields (RFC 8259
text, no NaN, no lone surrogate) has a canonical form. What has none (NaN, an infinity, a lone
UTF-16 surrogate, an object key that is neither a string nor an integer, a type JSON has no form
for, a circular or absurdly deep value) raises :class:`CanonicalJSONError`, code
``not_canonical_json``; the message never quotes the value.

Speed: ``rfc8785`` is pure Python. For a value whose JCS bytes are provably what Python's C
encoder writes with sorted keys and compact separators (only exact JSON types; object keys in the
Basic Multilingual Plane, where code-point and UTF-16 order agree; floats whose shortest repr is
already their JCS form), that encoder is used; tests/test_canonical.py checks the equality
differentially against ``rfc8785`` over generated JSON. Everything else takes the RFC 8785 path.
"""

from __future__ import annotations

import json
from typing import Any

import rfc8785

from .errors import ExitCode, NomyoAuditError

__all__ = ["CanonicalJSONError", "canonical_json", "legacy_json"]


class CanonicalJSONError(NomyoAuditError, ValueError):
    """A value has no canonical JSON: NaN, an infinity, a lone surrogate, a non-JSON type or key.

    ``code`` is ``not_canonical_json``. The message says what kind of value, never the value.
    """

    code = "not_canonical_json"
    exit_code = ExitCode.USAGE


def canonical_json(value: Any) -> bytes:
    """The RFC 8785 (JCS) bytes of ``value``, integers of any size exact; see the module docstring.

    Accepts dicts (string keys, or integer keys, written as the decimal strings ``json.dumps``
    sends), lists, tuples, strings, integers, finite floats, booleans and None.
    Raises :class:`CanonicalJSONError` for anything else.
    """
    try:
        if _plain(value, 0):
            return _PLAIN_ENCODE(value).encode()
        out: list[bytes] = []
        _encode(value, out, 0)
        return b"".join(out)
    except CanonicalJSONError:
        raise
    except RecursionError:
        raise CanonicalJSONError("not canonical JSON: nested too deeply or circular") from None
    except UnicodeEncodeError:
        raise CanonicalJSONError("not canonical JSON: a string holds a lone UTF-16 surrogate") from None
    except ValueError as exc:  # an int past sys.get_int_max_str_digits(), a cycle the C encoder saw
        raise CanonicalJSONError(f"not canonical JSON: {_reason(exc)}") from None


def legacy_json(value: Any) -> bytes:
    """The encoding before RFC 8785 (v2 audit records): ``json.dumps`` with sorted keys, compact, UTF-8.

    Kept only to read and verify what was made with it: v2 records' keyed digests, and quotes
    bound to the content digest of responses saved before. It is Python's encoder, which other
    languages do not reproduce exactly (float spelling, key order outside the BMP). Raises
    ``ValueError`` or ``TypeError`` as :func:`json.dumps` does.
    """
    return _LEGACY_ENCODE(value).encode()


# Built once: json.dumps with options builds an encoder per call (they keep no state).
_LEGACY_ENCODE = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode
# No circular-reference markers: a value the fast path takes is at most _PLAIN_DEPTH deep, and a
# circular one is not (the careful path then refuses it).
_PLAIN_ENCODE = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, check_circular=False
).encode

#: Deeper than this, a value is left to the careful path (which refuses a circular one).
_PLAIN_DEPTH = 200
#: The first code point outside the BMP: keys below it sort the same by code point and by UTF-16.
_ASTRAL = "\U00010000"


def _plain(value: Any, depth: int) -> bool:
    """Whether Python's sorted-keys compact encoding of ``value`` is its JCS form (exact types only).

    Runs on every digest, so the work per node is kept to a type lookup: keys are checked a
    whole object at a time (their types in one set, their text in one join), and only
    containers recurse.
    """
    kind = type(value)
    if kind is dict:
        if depth > _PLAIN_DEPTH or not _STR_ONLY.issuperset(map(type, value)):
            return False
        keys = "".join(value)
        if not keys.isascii() and max(keys) >= _ASTRAL:
            return False
        items: Any = value.values()
        if _PLAIN_SCALARS.issuperset(map(type, items)):
            return True  # an object of strings, integers, booleans and nulls: no loop for it
    elif kind is list or kind is tuple:
        if depth > _PLAIN_DEPTH:
            return False
        items = value
    else:
        return _plain_leaf(value)
    for item in items:
        kind = type(item)
        if kind in _PLAIN_SCALARS:
            continue
        if kind is float:
            if not 1e-4 <= abs(item) < 1e16 or item.is_integer():
                return False
        elif kind is list and (
            (len(item) == 2 and type(item[0]) in _PLAIN_SCALARS and type(item[1]) in _PLAIN_SCALARS)
            or _PLAIN_SCALARS.issuperset(map(type, item))
        ):
            continue  # a list of strings and integers (a finding's [status, code]): no call for it
        elif not _plain(item, depth + 1):
            return False
    return True


_STR_ONLY = frozenset({str})
_PLAIN_SCALARS = frozenset({str, int, bool, type(None)})


def _plain_leaf(value: Any) -> bool:
    """A scalar whose Python JSON text is its JCS text.

    Strings: both escape exactly ``"``, ``\\`` and U+0000-U+001F (the short forms for
    ``\\b \\f \\n \\r \\t``, lowercase ``\\u00xx`` for the rest) and write all else as UTF-8.
    Integers: exact decimal digits either way (the extension). Floats: Python's repr and
    ECMAScript's Number-to-String both write the shortest round-tripping digits, in the same
    fixed notation for a non-integral value of magnitude in [1e-4, 1e16); outside that, or
    integral (``1.0`` against ``1``), the spellings differ, and the careful path writes it.
    """
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return True
    if kind is float:
        return 1e-4 <= abs(value) < 1e16 and not value.is_integer()
    return False


def _encode(value: Any, out: list[bytes], depth: int) -> None:
    """The careful path: RFC 8785 through ``rfc8785`` for strings and floats, exact integers."""
    if value is None or value is True or value is False:
        out.append(_LITERALS[value])
    elif isinstance(value, str):
        out.append(_jcs(str.__str__(value)))
    elif isinstance(value, int):
        out.append(int.__repr__(int(value)).encode())
    elif isinstance(value, float):
        out.append(_jcs(float(value)))
    elif isinstance(value, (list, tuple)):
        out.append(b"[")
        for index, item in enumerate(value):
            if index:
                out.append(b",")
            _encode(item, out, depth + 1)
        out.append(b"]")
    elif isinstance(value, dict):
        items = _sorted_members(value)
        out.append(b"{")
        for index, (key, item) in enumerate(items):
            if index:
                out.append(b",")
            out.append(_jcs(key))
            out.append(b":")
            _encode(item, out, depth + 1)
        out.append(b"}")
    else:
        raise CanonicalJSONError(f"not canonical JSON: JSON has no form for a {type(value).__name__}")


_LITERALS = {None: b"null", True: b"true", False: b"false"}


def _sorted_members(value: dict[Any, Any]) -> list[tuple[str, Any]]:
    """Members with string keys (an integer key as its decimal string), in UTF-16 code-unit order."""
    members: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(key, str):
            name = str.__str__(key)
        elif isinstance(key, int) and not isinstance(key, bool):
            name = int.__repr__(int(key))
        else:
            raise CanonicalJSONError(f"not canonical JSON: an object key is a {type(key).__name__}")
        if name in members:
            raise CanonicalJSONError("not canonical JSON: two object keys are the same string")
        members[name] = item
    return sorted(members.items(), key=lambda member: member[0].encode("utf-16-be"))


def _jcs(scalar: str | float) -> bytes:
    try:
        return rfc8785.dumps(scalar)
    except rfc8785.FloatDomainError:
        raise CanonicalJSONError("not canonical JSON: NaN or an infinity") from None
    except rfc8785.CanonicalizationError:
        raise CanonicalJSONError("not canonical JSON: a string holds a lone UTF-16 surrogate") from None


def _reason(exc: ValueError) -> str:
    text = str(exc)
    if "Circular" in text:
        return "the value is circular"
    if "digits" in text:
        return "an integer has too many digits to write"
    return "a value JSON cannot hold"
