"""``ima.runtime_policy``: a Keylime runtime policy file beside the policy, read while loading it.

The file is read once, bounded (:data:`MAX_RUNTIME_POLICY_BYTES`, a regular file inside the policy
file's own directory, as for ``extends``) and parsed by :meth:`nomyo_audit.eventlog.ImaPolicy.from_keylime`.
The resolved *document* gets ``runtime_policy_sha256``, the SHA-256 of the file's bytes, so the policy's
digest changes whenever the runtime policy's content does (and a file that states it pins the content).
The resolved *spec* gets the runtime policy's digests and excludes merged into its own ``digests`` and
``excludes`` (plain data, compiled by the ``ima`` rule), and loses ``runtime_policy``: a spec that still
names one was never loaded, and the rule fails rather than guess.

Also here: the regular expressions of the event rules are compiled once while loading, so a pattern
that does not compile is a :class:`PolicyError` with its file, line and field, never a failure per reply.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import EventLogError
from ._model import PolicyError

__all__ = [
    "MAX_RUNTIME_POLICY_BYTES",
    "PATTERN_FIELDS",
    "apply_runtime_policies",
    "lexically_inside",
    "pattern_errors",
    "read_runtime_policy",
    "resolved_inside",
]

#: The largest Keylime runtime policy read (16 MiB: about 100,000 files with a SHA-256 each).
MAX_RUNTIME_POLICY_BYTES = 16 << 20
#: The (rule, key) of every list of regular expressions in a spec.
PATTERN_FIELDS = (("kernel_cmdline", "require"), ("kernel_cmdline", "forbid"), ("ima", "excludes"))

#: Reads at most ``limit`` bytes of a regular file (the loader's bounded reader); raises PolicyError.
Reader = Callable[[Path, int], bytes]


def read_runtime_policy(document: dict[str, Any], path: Path, read: Reader, loaded: dict[str, Any]) -> None:
    """Read the runtime policy ``document`` (the policy file ``path``) names, if any.

    Writes its SHA-256 into the document's ``spec.ima.runtime_policy_sha256`` and keeps the parsed
    :class:`~nomyo_audit.eventlog.ImaPolicy` in ``loaded`` under that digest. Raises
    :class:`PolicyError` naming the file and the field for a file that is refused, missing, too large,
    not a Keylime runtime policy, or whose digest is not the one the policy states.
    """
    spec = document.get("spec")
    ima = spec.get("ima") if isinstance(spec, Mapping) else None
    reference = ima.get("runtime_policy") if isinstance(ima, Mapping) else None
    if not isinstance(reference, str) or not isinstance(ima, Mapping) or not isinstance(spec, dict):
        return
    where = f"{path}: spec.ima.runtime_policy {reference[:80]!r}"
    target = _inside(reference, path.parent, where)
    try:
        data = read(target, MAX_RUNTIME_POLICY_BYTES)
    except PolicyError as exc:  # the reader speaks of policy files: say which file and field this is
        raise PolicyError(f"{where}: {exc.message.replace('policy file', 'file')}", code=exc.code) from None
    digest = hashlib.sha256(data).hexdigest()
    stated = ima.get("runtime_policy_sha256")
    if stated is not None and stated != digest:
        raise PolicyError(
            f"{where}: its SHA-256 is {digest}, not the runtime_policy_sha256 the policy states ({stated})",
            code="runtime_policy_mismatch",
        )
    if digest not in loaded:
        from ..eventlog import ImaPolicy

        try:
            loaded[digest] = ImaPolicy.from_keylime(data)
        except EventLogError as exc:
            raise PolicyError(
                f"{where}: not a Keylime runtime policy ({exc})", code="runtime_policy_invalid"
            ) from None
    spec["ima"] = {**ima, "runtime_policy_sha256": digest}


def _inside(reference: str, base: Path, where: str) -> Path:
    """The file ``reference`` names inside ``base`` (symlinks followed), or PolicyError (as ``extends``)."""

    def refused(why: str) -> PolicyError:
        return PolicyError(f"{where}: {why}", code="runtime_policy_refused")

    return resolved_inside(lexically_inside(reference, base, refused, "a file"), base, refused)


def lexically_inside(reference: str, base: Path, refused: Callable[[str], PolicyError], hint: str) -> Path:
    """``base / reference``, refused for control characters, an absolute path or any ``..`` (``hint``
    says what to name instead, e.g. "a shipped policy or a file"). Shared with ``extends``."""
    if any(ord(c) < 0x20 for c in reference):
        raise refused("control characters are not part of a file name")
    if os.path.isabs(reference):
        raise refused(f"an absolute path; name {hint} in {base}")
    if ".." in Path(reference).parts:
        raise refused(f"'..' leaves {base}; name {hint} in it")
    return base / reference


def resolved_inside(candidate: Path, base: Path, refused: Callable[[str], PolicyError]) -> Path:
    """``candidate`` with symlinks followed, refused when that leads out of ``base``."""
    target = candidate.resolve()
    if not target.is_relative_to(base):
        raise refused(f"leads to {target}, outside {base} (through a symlink)")
    return target


def apply_runtime_policies(spec: dict[str, Any], loaded: Mapping[str, Any]) -> None:
    """Merge the runtime policy the resolved ``spec`` names into its ``ima`` digests and excludes.

    Only the spec changes (a new ``ima`` mapping; the document keeps what the files say).
    """
    ima = spec.get("ima")
    if not isinstance(ima, Mapping) or "runtime_policy" not in ima:
        return
    runtime = loaded.get(ima.get("runtime_policy_sha256", ""))
    if runtime is None:  # only a document the loader did not read: refuse rather than guess
        raise PolicyError("spec.ima.runtime_policy: the file was not read", code="runtime_policy_invalid")
    digests: dict[str, set[str]] = {path: set(allowed) for path, allowed in runtime.digests.items()}
    for path, allowed in ima.get("digests", {}).items():
        digests.setdefault(path, set()).update(allowed)
    excludes = list(runtime.excludes)
    excludes += [pattern for pattern in ima.get("excludes", ()) if pattern not in excludes]
    merged = {key: value for key, value in ima.items() if key != "runtime_policy"}
    merged["digests"] = {path: sorted(allowed) for path, allowed in digests.items()}
    merged["excludes"] = excludes
    spec["ima"] = merged


def pattern_errors(spec: object) -> list[tuple[list[Any], str]]:
    """(field path, message) for each regular expression of the event rules that does not compile."""
    errors: list[tuple[list[Any], str]] = []
    for rule, key in PATTERN_FIELDS:
        section = spec.get(rule) if isinstance(spec, Mapping) else None
        patterns = section.get(key) if isinstance(section, Mapping) else None
        for index, pattern in enumerate(patterns if isinstance(patterns, list) else ()):
            try:
                re.compile(pattern)
            except (re.error, RecursionError, OverflowError, TypeError) as exc:
                why = getattr(exc, "msg", None) or type(exc).__name__
                shown = pattern[:80] if isinstance(pattern, str) else pattern
                errors.append(
                    (
                        ["spec", rule, key, index],
                        f"spec.{rule}.{key}.{index}: {shown!r} is not a regular expression ({why})",
                    )
                )
    return errors
