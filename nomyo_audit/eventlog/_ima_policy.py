"""Keylime-style runtime policies: which files may have been measured, with which digests.

Keylime's rules (keylime/ima/ima.py, ``_validate_ima_ng``), which we follow:

* a path matched by an exclude (Python regular expressions, ``re.match`` from the start) passes;
* otherwise a path not in ``digests`` is ``not_allowed``, a listed path whose file digest is not
  one of its listed hex digests is ``digest_mismatch``;
* ``boot_aggregate`` is a path like any other (list its digest to accept it);
* ``ima-buf`` entries are checked by their name (a keyring such as ``.ima``) against Keylime's
  ``keyrings`` and ``ima-buf`` maps, which we merge into ``digests``.

Ours on top: a violation entry (the kernel could not measure the file reliably) is ``violation``
unless its path is excluded, and an entry of a template we cannot decode has no path and is
``not_allowed``. File signatures (``ima-sig``) are not verified: a signed file must be listed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from .._json import DuplicateKeyError, unique_object
from ..errors import EventLogError
from ._ima import ImaEntry

__all__ = ["MAX_POLICY_BYTES", "ImaPolicy", "ImaViolation", "check_ima"]

#: The largest runtime policy we read (Keylime policies of a whole distribution are tens of MiB).
MAX_POLICY_BYTES = 64 * 1024 * 1024
_HEX_DIGEST = re.compile(r"(?:[0-9a-z_-]+:)?([0-9a-fA-F]{32,128})")
_MAX_EXCLUDE = 4096


def _invalid(message: str) -> EventLogError:
    return EventLogError(f"IMA runtime policy: {message}", code="ima_policy_invalid")


def _digest(path: str, value: object) -> str:
    """A listed digest, lowercase hex; Keylime also writes ``sha256:<hex>`` (the prefix is dropped)."""
    match = _HEX_DIGEST.fullmatch(value) if isinstance(value, str) else None
    if match is None or len(match.group(1)) % 2:
        raise _invalid(f"{path!r}: {str(value)[:80]!r} is not a hex digest")
    return match.group(1).lower()


def _compile(excludes: tuple[str, ...]) -> re.Pattern[str] | None:
    """Keylime joins the excludes into one ``(a)|(b)`` pattern; a bad one is an error, never ignored."""
    for pattern in excludes:
        if not isinstance(pattern, str) or len(pattern) > _MAX_EXCLUDE:
            raise _invalid("every exclude must be a regular expression string")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise _invalid(f"exclude {pattern[:80]!r} is not a regular expression: {exc}") from None
    return re.compile("(" + ")|(".join(excludes) + ")") if excludes else None


@dataclass(frozen=True)
class ImaPolicy:
    """File digests allowed per path, and paths excluded from checking (regular expressions)."""

    digests: Mapping[str, frozenset[str]]
    excludes: tuple[str, ...]
    _exclude: re.Pattern[str] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_exclude", _compile(self.excludes))

    @classmethod
    def from_mapping(cls, digests: Mapping[str, Iterable[str]], excludes: Iterable[str] = ()) -> ImaPolicy:
        """From ``{path: [hex digest, ...]}`` and exclude patterns (EventLogError ``ima_policy_invalid``)."""
        if not isinstance(digests, Mapping):
            raise _invalid("digests must map paths to lists of digests")
        table: dict[str, frozenset[str]] = {}
        for path, values in digests.items():
            if (
                not isinstance(path, str)
                or isinstance(values, str | bytes | Mapping)
                or not isinstance(values, Iterable)
            ):
                raise _invalid(f"{str(path)[:80]!r}: digests must be a list of hex strings")
            table[path] = table.get(path, frozenset()) | {_digest(path, value) for value in values}
        if isinstance(excludes, str | bytes):
            raise _invalid("excludes must be a list of regular expressions")
        return cls(table, tuple(excludes))

    @classmethod
    def from_keylime(cls, data: bytes) -> ImaPolicy:
        """A Keylime runtime policy (JSON, ``meta.version`` 1), or a Keylime/sha*sum allowlist.

        From the JSON: ``digests``, ``excludes``, ``keyrings`` and ``ima-buf`` (merged into the
        digests by name), ``ima.ignored_keyrings`` (made excludes; ``"*"`` excludes every name
        starting with a dot, as kernel keyring names do). A signed (DSSE) policy is refused: give
        its verified payload. The allowlist form is lines of ``<hex digest>  <path>`` (a keyring as
        ``%keyring:<name>``).
        """
        if len(data) > MAX_POLICY_BYTES:
            raise _invalid(f"{len(data)} bytes (max {MAX_POLICY_BYTES})")
        text = data.decode("utf-8", "replace")
        if not text.lstrip().startswith("{"):
            return cls._from_allowlist(text)
        try:
            document = json.loads(text, object_pairs_hook=unique_object)
        except ValueError as exc:
            raise _invalid(str(exc) if isinstance(exc, DuplicateKeyError) else f"not JSON: {exc}") from None
        if not isinstance(document, dict):
            raise _invalid("not a JSON object")
        if "payload" in document:
            raise _invalid("a signed (DSSE) policy: verify it with Keylime and give its payload")
        meta = document.get("meta")
        if not isinstance(meta, dict) or meta.get("version") != 1:
            raise _invalid("only meta.version 1 (Keylime's runtime policy format) is read")
        merged: dict[str, list[Any]] = {}
        for section in ("digests", "keyrings", "ima-buf"):
            table = document.get(section) or {}
            if not isinstance(table, dict):
                raise _invalid(f"{section!r} must be an object of path -> list of digests")
            for path, values in table.items():
                if not isinstance(values, list):
                    raise _invalid(f"{section}[{str(path)[:80]!r}] must be a list of digests")
                merged.setdefault(path, []).extend(values)
        excludes = document.get("excludes") or []
        if not isinstance(excludes, list):
            raise _invalid("'excludes' must be a list of regular expressions")
        ima = document.get("ima") or {}
        ignored = ima.get("ignored_keyrings", []) if isinstance(ima, dict) else []
        if not isinstance(ignored, list) or not all(isinstance(name, str) for name in ignored):
            raise _invalid("'ima.ignored_keyrings' must be a list of names")
        keyring_excludes = [r"\..*$" if name == "*" else re.escape(name) + "$" for name in ignored]
        return cls.from_mapping(merged, [*excludes, *keyring_excludes])

    @classmethod
    def _from_allowlist(cls, text: str) -> ImaPolicy:
        digests: dict[str, list[str]] = {}
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            value, _, path = line.strip().partition(" ")
            path = path.lstrip(" *").removeprefix("%keyring:")  # Keylime's allowlist names keyrings so
            if not path:
                raise _invalid(f"allowlist line {number} is not '<digest>  <path>'")
            digests.setdefault(path, []).append(value)
        return cls.from_mapping(digests)

    def excluded(self, path: str) -> bool:
        return self._exclude is not None and self._exclude.match(path) is not None


class ImaViolation(NamedTuple):
    """An entry the policy does not allow: its number, path, file digest (hex) and why."""

    number: int
    path: str
    digest: str
    reason: Literal["not_allowed", "digest_mismatch", "violation"]


# pdoc resolves NamedTuple fields from the generated __new__, where postponed annotations are strings
# it cannot evaluate: give it the real type.
ImaViolation.__new__.__annotations__["reason"] = Literal["not_allowed", "digest_mismatch", "violation"]

def _verdict(entry: ImaEntry, policy: ImaPolicy) -> ImaViolation | None:
    digest = entry.file_digest.hex() if entry.file_digest is not None else ""
    if entry.path is None:
        return ImaViolation(entry.number, f"<{entry.template_name}>", digest, "not_allowed")
    if policy.excluded(entry.path):
        return None
    if entry.violation:
        return ImaViolation(entry.number, entry.path, digest, "violation")
    allowed = policy.digests.get(entry.path)
    if allowed is None:
        return ImaViolation(entry.number, entry.path, digest, "not_allowed")
    if digest not in allowed:
        return ImaViolation(entry.number, entry.path, digest, "digest_mismatch")
    return None


def check_ima(entries: Iterable[ImaEntry], policy: ImaPolicy, *, limit: int = 20) -> tuple[ImaViolation, ...]:
    """The entries the policy does not allow, in list order, at most ``limit`` of them.

    Give it the entries the quote proved (``Measurements.proven_ima_entries()``): an entry the
    quote does not cover proves nothing, allowed or not.
    """
    found: list[ImaViolation] = []
    for entry in entries:
        if len(found) >= limit:
            break
        violation = _verdict(entry, policy)
        if violation is not None:
            found.append(violation)
    return tuple(found)
