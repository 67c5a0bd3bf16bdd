"""Reading policy files: YAML -> schema validation -> ``extends`` -> :class:`Policy`.

(About 500 lines on purpose: the bounded YAML reader, the duplicate-key check and the
schema-error messages all work on one YAML node graph and its line numbers; apart, each
would pass that graph and the file's path around.)

This is the I/O edge of the policy package. Errors name the file, the line and
the field path, e.g. ``policies/prod.yaml:14 spec.pcrs.sha256.7: 'abc' is not a
64-hex-digit SHA-256 digest``; every error in a file is reported at once.
Unknown keys and duplicate keys are errors, not ignored.

A policy file is input that may come from anyone who can open a pull request,
so reading one is bounded before any work grows with it: at most
:data:`MAX_POLICY_BYTES` are read, and only from a regular file; the YAML may
nest :data:`MAX_DEPTH` deep and use :data:`MAX_ALIASES` aliases that expand to
at most :data:`MAX_NODES` nodes, all checked on the node graph *before* any
Python object is built (a "billion laughs" file is refused, not expanded).
``extends`` names a shipped policy or a file inside the extending policy's own
directory (no absolute path, no ``..``, no symlink out), and one policy reads
at most :data:`MAX_EXTENDS` files. Each refusal is a :class:`PolicyError`
(exit status 2) with its own stable ``code``.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jsonschema.exceptions import ValidationError

from ._anchor_rule import resolve_roots
from ._model import Policy, PolicyError, parse_duration
from ._runtime_policy import (
    apply_runtime_policies,
    lexically_inside,
    pattern_errors,
    read_runtime_policy,
    resolved_inside,
)

__all__ = [
    "MAX_ALIASES",
    "MAX_DEPTH",
    "MAX_EXTENDS",
    "MAX_NODES",
    "MAX_POLICY_BYTES",
    "load_policy",
    "policy_schema",
    "shipped_policies",
    "validate_document",
]

#: The largest policy file read (1 MiB): a policy with thousands of golden values fits in a few KiB.
MAX_POLICY_BYTES = 1 << 20
#: How deep mappings and lists may nest (a policy needs 5), counted after aliases are expanded.
MAX_DEPTH = 32
#: How many YAML aliases (``*name``) one file may use.
MAX_ALIASES = 64
#: How many YAML nodes a file may hold once its aliases are expanded.
MAX_NODES = 100_000
#: How many policy files one policy may read, itself and everything it ``extends``.
MAX_EXTENDS = 16

_DIGEST_BITS = {
    "sha1": ("40", "SHA-1"),
    "sha256": ("64", "SHA-256"),
    "sha384": ("96", "SHA-384"),
    "sha512": ("128", "SHA-512"),
}


@lru_cache(maxsize=1)
def policy_schema() -> dict[str, Any]:
    """The JSON Schema every policy document is validated against (a fresh copy: change it freely).

    For editors and other tools that check policy files as they are written. Raises
    nothing for an intact installation (the schema ships in the package).
    """
    schema: dict[str, Any] = json.loads(resources.files(__package__).joinpath("schema.json").read_text())
    return schema


@lru_cache(maxsize=1)
def _validator() -> jsonschema.protocols.Validator:
    schema = policy_schema()
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def shipped_policies() -> dict[str, Path]:
    """The policies shipped in the package, by name (``development``, ``production``, ``maximum``).

    Any of them can be named bare in :func:`load_policy` or ``extends``. Raises nothing.
    """
    root = resources.files("nomyo_audit").joinpath("data").joinpath("policies")
    return {p.name.removesuffix(".yaml"): Path(str(p)) for p in root.iterdir() if p.name.endswith(".yaml")}


def load_policy(path: str | Path) -> Policy:
    """Load, validate and resolve a policy file (a shipped policy may be named bare: ``production``).

    ``extends`` layers are applied, so the :class:`Policy` is the one that will be
    enforced. Raises :class:`PolicyError` for a file that is missing, unreadable,
    not YAML, over a size or nesting limit, invalid against the schema (every error,
    each with file:line and field path) or part of an ``extends`` cycle.
    """
    resolved = _locate(str(path))
    runtime: dict[str, Any] = {}  # the runtime policies read, by SHA-256
    document = _resolve(resolved, (), [MAX_EXTENDS], runtime)
    policy = Policy.from_document(document, source=str(path))
    resolve_roots(policy.spec, resolved.parent)  # type: ignore[arg-type]  # aik_trust roots: relative to the file
    apply_runtime_policies(policy.spec, runtime)  # type: ignore[arg-type]  # ima: merged into the spec
    return policy


def _locate(reference: str) -> Path:
    """The file a policy named on the command line or in code is read from."""
    if "\x00" in reference:
        raise PolicyError(f"{reference!r}: not a file name", code="policy_not_found")
    if os.path.lexists(reference):
        return Path(reference).resolve()
    return _shipped(reference)


def _shipped(reference: str) -> Path:
    shipped = shipped_policies()
    name = Path(reference).name.removesuffix(".yaml")
    if "/" not in reference and name in shipped:
        return shipped[name].resolve()
    raise PolicyError(f"{reference[:200]}: no such policy file", code="policy_not_found")


def _locate_parent(reference: str, child: Path) -> Path:
    """Where ``extends: reference`` in ``child`` leads: inside child's directory, or a shipped policy.

    ``child`` is a resolved path, so its directory is the real one; the parent
    must resolve (symlinks followed) to a path inside that same directory.
    """
    base = child.parent
    shown = repr(reference[:80])

    def refused(why: str) -> PolicyError:
        return PolicyError(f"{child}: extends {shown}: {why}", code="policy_extends_refused")

    candidate = lexically_inside(reference, base, refused, "a shipped policy or a file")
    if not os.path.lexists(candidate):
        return _shipped(reference)
    return resolved_inside(candidate, base, refused)


def _resolve(
    path: Path, chain: tuple[Path, ...], budget: list[int], runtime: dict[str, Any]
) -> dict[str, Any]:
    if path in chain:
        cycle = " -> ".join(p.name for p in (*chain, path))
        raise PolicyError(f"{path}: extends cycle: {cycle}", code="policy_cycle")
    budget[0] -= 1
    if budget[0] < 0:
        raise PolicyError(
            f"{chain[0]}: reads more than {MAX_EXTENDS} policy files through extends",
            code="policy_extends_refused",
        )
    document = _read(path, nofollow=bool(chain))
    read_runtime_policy(document, path, _read_file, runtime)  # relative to this file, not the child's
    parents = document.get("extends")
    if not parents:
        return document
    merged: dict[str, Any] = {}
    for parent in [parents] if isinstance(parents, str) else parents:
        merged = _merge(merged, _resolve(_locate_parent(parent, path), (*chain, path), budget, runtime))
    child = {k: v for k, v in document.items() if k != "extends"}
    return _merge(merged, child)


def _merge(
    base: Mapping[str, Any], override: Mapping[str, Any], path: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Later keys override; golden-value lists under ``spec.pcrs`` and pins are merged."""
    out = dict(base)
    for key, value in override.items():
        here = (*path, key)
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value, here)
        elif isinstance(value, list) and isinstance(out.get(key), list) and _merges_lists(here):
            out[key] = out[key] + [v for v in value if v not in out[key]]
        else:
            out[key] = value
    return out


def _merges_lists(path: tuple[str, ...]) -> bool:
    return path[:2] == ("spec", "pcrs") or path == ("spec", "aik_trust", "pinned")


# -- reading and validating one file ------------------------------------------------------


def _read(path: Path, *, nofollow: bool = False) -> dict[str, Any]:
    """One file, read and checked: bounded text -> bounded YAML node graph -> data -> schema."""
    text = _read_text(path, nofollow)
    loader = _BoundedLoader(text, path)
    try:
        node = loader.get_single_node()
        if node is None:
            raise PolicyError(f"{path}: empty policy file")
        _check_expansion(node, path)
        _check_duplicates(node, path, loader)
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise PolicyError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. 2001-02-30, an int of 5000 digits
        raise PolicyError(f"{path}: a value cannot be read as data ({exc})") from None
    finally:
        loader.dispose()
    document = _string_keys(data)
    if not isinstance(document, dict):
        raise PolicyError(f"{path}:1: a policy is a mapping with apiVersion, kind, metadata and spec")
    validate_document(document, path, node)
    patterns = pattern_errors(document.get("spec"))
    if patterns:
        raise PolicyError("\n".join(f"{path}:{_line(node, where)} {message}" for where, message in patterns))
    _check_durations(document, path, node)
    _check_text(document, path)
    return document


def _check_durations(document: Mapping[str, Any], path: Path, node: yaml.Node) -> None:
    """Durations within :data:`.model.MAX_DURATION` (they are added to clocks)."""
    spec = document.get("spec")
    for key in _DURATIONS:
        if isinstance(spec, Mapping) and key in spec:
            try:
                parse_duration(spec[key])
            except PolicyError as exc:
                raise PolicyError(f"{path}:{_line(node, ['spec', key])} spec.{key}: {exc.message}") from None


def _check_text(document: Mapping[str, Any], path: Path) -> None:
    """No lone UTF-16 surrogate (YAML's ``"\\ud800"``): the policy's digest could not be computed."""
    try:
        json.dumps(document, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise PolicyError(
            f"{path}: a string holds a lone UTF-16 surrogate escape, which is not Unicode text",
            code="policy_not_text",
        ) from None


def _read_file(path: Path, limit: int, nofollow: bool = False) -> bytes:
    """At most ``limit`` bytes from a regular file; never blocks on a FIFO or device."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if nofollow:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise PolicyError(f"{path}: no such policy file", code="policy_not_found") from None
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise PolicyError(f"{path}: not a regular file", code="policy_not_a_file")
        raw = _read_at_most(fd, limit + 1)
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(raw) > limit:
        raise PolicyError(f"{path}: larger than {limit} bytes, the most it may be", code="policy_too_large")
    return raw


def _read_text(path: Path, nofollow: bool) -> str:
    """At most MAX_POLICY_BYTES of UTF-8 text from a regular file; never blocks on a FIFO or device."""
    raw = _read_file(path, MAX_POLICY_BYTES, nofollow)
    if b"\x00" in raw:
        raise PolicyError(f"{path}: contains NUL bytes: a policy is YAML text", code="policy_not_text")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(
            f"{path}: not UTF-8 text (byte {exc.start}): a policy is YAML text", code="policy_not_text"
        ) from None


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    while limit > 0:
        chunk = os.read(fd, min(limit, 1 << 16))
        if not chunk:
            break
        chunks.append(chunk)
        limit -= len(chunk)
    return b"".join(chunks)


class _BoundedLoader(yaml.SafeLoader):
    """A SafeLoader that counts aliases and nesting while it composes, before any object is built.

    PyYAML composes recursively, so nesting is refused here, on the way down,
    long before Python's recursion limit.
    """

    def __init__(self, text: str, path: Path) -> None:
        self.policy_path = path
        self.depth = 0
        self.aliases = 0
        try:
            super().__init__(text)
        except yaml.YAMLError as exc:  # the reader refuses control characters at once
            raise PolicyError(f"{path}: not YAML text ({exc})", code="policy_not_text") from None

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise _too_many_aliases(self.policy_path, self._line())
            return super().compose_node(parent, index)
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise _too_deep(self.policy_path, self._line())
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def _line(self) -> int:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        return int(event.start_mark.line) + 1


def _too_many_aliases(path: Path, line: int) -> PolicyError:
    return PolicyError(
        f"{path}:{line}: more than {MAX_ALIASES} YAML aliases; a policy needs few, if any",
        code="policy_yaml_aliases",
    )


def _too_deep(path: Path, line: int) -> PolicyError:
    return PolicyError(
        f"{path}:{line}: nested more than {MAX_DEPTH} deep; a policy nests 5 deep",
        code="policy_too_deep",
    )


def _check_expansion(root: yaml.Node, path: Path) -> None:
    """Refuse a node graph whose aliases expand past MAX_NODES or MAX_DEPTH, or refer to themselves.

    The graph is walked once (iteratively; each node's expanded size and depth
    is memoised), so the cost follows the file's size, not the expansion's.
    """
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (nodes once expanded, depth)
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            below = [sizes[id(child)] for child in _children(node)]
            size = 1 + sum(count for count, _ in below)
            depth = 1 + max((d for _, d in below), default=0)
            if size > MAX_NODES:
                raise PolicyError(
                    f"{path}:{node.start_mark.line + 1}: YAML aliases expand to more than {MAX_NODES} "
                    "nodes (an alias bomb?)",
                    code="policy_yaml_aliases",
                )
            if depth > MAX_DEPTH:
                raise _too_deep(path, node.start_mark.line + 1)
            sizes[key] = (size, depth)
            on_path.discard(key)
        elif key in on_path:
            raise PolicyError(
                f"{path}:{node.start_mark.line + 1}: a YAML alias refers to a node that contains it",
                code="policy_yaml_aliases",
            )
        elif key not in sizes:
            on_path.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in _children(node) if id(child) not in sizes)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _string_keys(value: Any) -> Any:
    """YAML reads ``7:`` as an integer key; policies address PCRs by their index as text."""
    if isinstance(value, dict):
        return {str(k): _string_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_string_keys(v) for v in value]
    return value


def _check_duplicates(node: yaml.Node, path: Path, loader: yaml.SafeLoader) -> None:
    """Duplicate keys are errors; keys are plain scalars (the node graph is already bounded).

    Keys are compared as the policy reads them (:func:`_string_keys`), not as written: YAML
    reads ``7``, ``07``, ``0x7`` and ``+7`` as one integer, and ``'7'`` names the same PCR, so
    a second spelling would silently replace the golden values under the first.
    """
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                raise PolicyError(f"{path}:{key.start_mark.line + 1}: a key must be plain text")
            read = key.value if key.tag == _MERGE_TAG else str(loader.construct_object(key))
            if read in seen:
                raise PolicyError(f"{path}:{key.start_mark.line + 1}: duplicate key {key.value!r}")
            seen.add(read)
            _check_duplicates(value, path, loader)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_duplicates(item, path, loader)


_MERGE_TAG = "tag:yaml.org,2002:merge"


def validate_document(
    document: Mapping[str, Any], path: Path | str = "<policy>", node: yaml.Node | None = None
) -> None:
    """Check a policy document (already parsed) against :func:`policy_schema`.

    Raises :class:`PolicyError` listing every schema error, each with ``path``, its
    line (when ``node``, the YAML node, is given) and the field path; returns None
    for a valid document.
    """
    errors = sorted(_validator().iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    if not errors:
        return
    lines = []
    for error in errors:
        error = _most_specific(error)
        where, message = _describe(error)
        on_key = error.validator == "additionalProperties"
        lines.append(f"{path}:{_line(node, where, on_key)} {message}")
    raise PolicyError("\n".join(lines))


def _most_specific(error: ValidationError) -> ValidationError:
    """For anyOf/oneOf, the alternative that got furthest: a bad digest, not "'any' was expected"."""
    while error.validator in ("anyOf", "oneOf") and error.context:
        deepest = max(error.context, key=lambda e: (len(e.absolute_path), e.validator == "pattern"))
        if len(deepest.absolute_path) <= len(error.absolute_path) and error.validator == "oneOf":
            break
        error = deepest
    return error


def _describe(error: ValidationError) -> tuple[list[Any], str]:
    """(where, message): the path to point the line at, and the text."""
    path = list(error.absolute_path)
    field = ".".join(str(p) for p in path) or "(top level)"
    if error.validator == "pattern" and len(path) >= 4 and path[1] == "pcrs":
        digits, name = _DIGEST_BITS[str(path[2])]
        pcr = ".".join(str(p) for p in path[:4])
        return path, f"{pcr}: {error.instance!r} is not a {digits}-hex-digit {name} digest"
    hexes = _HEX.get(str(error.schema.get("pattern"))) if isinstance(error.schema, Mapping) else None
    if error.validator == "pattern" and hexes:
        return path, f"{field}: {error.instance!r} is not a {hexes} digest"
    if error.validator == "additionalProperties":
        schema = error.schema if isinstance(error.schema, Mapping) else {}
        instance = error.instance if isinstance(error.instance, Mapping) else {}
        extra = sorted(set(instance) - set(schema.get("properties", {})))
        return [*path, extra[0]] if extra else path, f"{field}: unknown key(s) {', '.join(map(repr, extra))}"
    if path and path[-1] in _DURATIONS:
        return path, f"{field}: {error.instance!r} is not a duration (seconds, or like 30s, 5m, 2h, 1d)"
    if error.validator == "minItems" and error.instance == []:
        return path, f"{field}: must not be empty"
    return path, f"{field}: {error.message}"


_DURATIONS = ("max_age", "clock_skew", "key_attestation_ttl")
_HEX = {
    "^[0-9a-f]{64}$": "64-hex-digit SHA-256",
    "^([0-9a-f]{40}|[0-9a-f]{64}|[0-9a-f]{96}|[0-9a-f]{128})$": "hex SHA-1, SHA-256, SHA-384 or SHA-512",
}


def _line(node: yaml.Node | None, path: list[Any], on_key: bool = False) -> int:
    """The line of the deepest YAML node on ``path`` (1-based); with ``on_key``, of the last key."""
    if node is None:
        return 1
    line = node.start_mark.line + 1
    for depth, step in enumerate(path):
        if on_key and depth == len(path) - 1 and isinstance(node, yaml.MappingNode):
            key = next((k for k, _ in node.value if str(k.value) == str(step)), None)
            return key.start_mark.line + 1 if key is not None else line
        child = None
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if str(k.value) == str(step)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            child = node.value[step]
        if child is None and isinstance(node, yaml.MappingNode):  # an unknown key: point at the key itself
            key = next((k for k, _ in node.value if str(k.value) == str(step)), None)
            return key.start_mark.line + 1 if key is not None else line
        if child is None:
            break
        node, line = child, child.start_mark.line + 1
    return line
