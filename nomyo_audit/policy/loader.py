"""Reading policy files: YAML -> schema validation -> ``extends`` -> :class:`Policy`.

This is the I/O edge of the policy package. Errors name the file, the line and
the field path, e.g. ``policies/prod.yaml:14 spec.pcrs.sha256.7: 'abc' is not a
64-hex-digit SHA-256 digest``; every error in a file is reported at once.
Unknown keys and duplicate keys are errors, not ignored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jsonschema.exceptions import ValidationError

from .model import Policy, PolicyError

__all__ = ["load_policy", "policy_schema", "shipped_policies", "validate_document"]

_DIGEST_BITS = {
    "sha1": ("40", "SHA-1"),
    "sha256": ("64", "SHA-256"),
    "sha384": ("96", "SHA-384"),
    "sha512": ("128", "SHA-512"),
}


@lru_cache(maxsize=1)
def policy_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(resources.files(__package__).joinpath("schema.json").read_text())
    return schema


@lru_cache(maxsize=1)
def _validator() -> jsonschema.protocols.Validator:
    schema = policy_schema()
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def shipped_policies() -> dict[str, Path]:
    """The policies in the package (``development``, ``production``, ``maximum``)."""
    root = resources.files("nomyo_audit").joinpath("data").joinpath("policies")
    return {p.name.removesuffix(".yaml"): Path(str(p)) for p in root.iterdir() if p.name.endswith(".yaml")}


def load_policy(path: str | Path) -> Policy:
    """Load, validate and resolve a policy file (a shipped policy may be named bare: ``production``)."""
    resolved = _locate(str(path), Path.cwd())
    document = _resolve(resolved, ())
    return Policy.from_document(document, source=str(path))


def _locate(reference: str, base: Path) -> Path:
    candidate = Path(reference) if Path(reference).is_absolute() else base / reference
    if candidate.exists():
        return candidate.resolve()
    shipped = shipped_policies()
    name = Path(reference).name.removesuffix(".yaml")
    if "/" not in reference and name in shipped:
        return shipped[name]
    raise PolicyError(f"{reference}: no such policy file")


def _resolve(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    if path in chain:
        cycle = " -> ".join(p.name for p in (*chain, path))
        raise PolicyError(f"{path}: extends cycle: {cycle}", code="policy_cycle")
    document, _ = _read(path)
    parents = document.get("extends")
    if not parents:
        return document
    merged: dict[str, Any] = {}
    for parent in [parents] if isinstance(parents, str) else parents:
        merged = _merge(merged, _resolve(_locate(parent, path.parent), (*chain, path)))
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


def _read(path: Path) -> tuple[dict[str, Any], yaml.Node]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise PolicyError(f"{path}: empty policy file")
        _check_duplicates(node, path)
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise PolicyError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    finally:
        loader.dispose()
    document = _string_keys(data)
    if not isinstance(document, dict):
        raise PolicyError(f"{path}:1: a policy is a mapping with apiVersion, kind, metadata and spec")
    validate_document(document, path, node)
    return document, node


def _string_keys(value: Any) -> Any:
    """YAML reads ``7:`` as an integer key; policies address PCRs by their index as text."""
    if isinstance(value, dict):
        return {str(k): _string_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_string_keys(v) for v in value]
    return value


def _check_duplicates(node: yaml.Node, path: Path) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if key.value in seen:
                raise PolicyError(f"{path}:{key.start_mark.line + 1}: duplicate key {key.value!r}")
            seen.add(key.value)
            _check_duplicates(value, path)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_duplicates(item, path)


def validate_document(
    document: Mapping[str, Any], path: Path | str = "<policy>", node: yaml.Node | None = None
) -> None:
    """Raise :class:`PolicyError` listing every schema error with its line and field path."""
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
