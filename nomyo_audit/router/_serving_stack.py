"""The measured serving stack: which router build, configuration and models serve the replies.

At start the router resets PCR 23 (``SERVING_STACK_PCR``) and extends one ``EV_EVENT_TAG`` event
for each: its own code (the manifest digest of the installed ``nomyo_audit`` package), its
configuration (upstream URL and model tiers), and every model it serves (the weights' digest when
they are local). Each quote that covers PCR 23 then proves, with the log it carries, what served
the reply (docs/serving-stack.md). The digests are computed here; the event bytes are
:func:`nomyo_audit.eventlog.serving_stack_event`'s.
"""

from __future__ import annotations

import functools
import hashlib
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .._canonical import canonical_json
from .._version import __version__
from ..errors import ConfigurationError
from ..eventlog import EV_EVENT_TAG, SERVING_STACK_PCR, serving_stack_event

__all__ = [
    "ModelIdentity",
    "code_digest",
    "manifest_digest",
    "measure_serving_stack",
    "serving_models",
    "serving_stack_events",
    "weights_digest",
]

#: Files a manifest may list: a directory of more is not a model (or a package) we measure at start
MAX_MANIFEST_FILES = 100_000
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ModelIdentity:
    """One served model as measured: ``source`` is ``local`` (weights on this machine, digested),
    ``upstream`` (served by --upstream; only its name is known) or ``echo`` (the built-in model)."""

    name: str
    source: Literal["local", "upstream", "echo"]
    weights_sha256: str | None = None
    upstream_identity: str | None = None


def _file_sha256(path: Path) -> str:
    """SHA-256 of a regular file. Opened without blocking and checked once open, so a FIFO, a socket
    or a device (``/dev/zero``) is refused (OSError) instead of hanging or reading forever."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    with os.fdopen(fd, "rb") as stream:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        digest = hashlib.sha256()
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _walk_error(exc: OSError) -> None:
    raise exc  # a directory that cannot be listed would leave its files out of the manifest


def _manifest_files(root: Path) -> Iterable[tuple[str, Path]]:
    seen: set[tuple[int, int]] = set()
    walk = os.walk(root, onerror=_walk_error, followlinks=True)  # a wheel has the linked files
    for directory, subdirs, files in walk:
        info = os.stat(directory)
        if (info.st_dev, info.st_ino) in seen:  # a symbolic link loop
            subdirs.clear()
            continue
        seen.add((info.st_dev, info.st_ino))
        subdirs[:] = [d for d in subdirs if d != "__pycache__"]
        for name in files:
            if not name.endswith(".pyc"):
                path = Path(directory, name)
                yield path.relative_to(root).as_posix(), path


def manifest_digest(root: Path) -> str:
    """SHA-256 (hex) over the UTF-8 lines ``"<relative path>\\0<sha256 hex>\\n"``, sorted by path, of
    every file under ``root`` but ``__pycache__/`` and ``*.pyc`` (symbolic links followed).

    Raises ConfigurationError when a file cannot be read or there are more than MAX_MANIFEST_FILES.
    """
    entries: list[tuple[str, Path]] = []
    digest = hashlib.sha256()
    try:
        for entry in _manifest_files(root):
            entries.append(entry)
            if len(entries) > MAX_MANIFEST_FILES:
                raise ConfigurationError(f"{root}: more than {MAX_MANIFEST_FILES} files to measure")
        for relative, path in sorted(entries):
            digest.update(f"{relative}\0{_file_sha256(path)}\n".encode())
    except OSError as exc:
        raise ConfigurationError(f"cannot measure {root}: {_reason(exc)}") from None
    return digest.hexdigest()


@functools.cache
def code_digest() -> str:
    """The manifest digest of the installed ``nomyo_audit`` package: the router's code."""
    return manifest_digest(Path(__file__).resolve().parent.parent)


def weights_digest(path: Path) -> str:
    """A model's weights: the SHA-256 of a file, the manifest digest of a directory.

    Raises ConfigurationError when ``path`` is neither, or cannot be read.
    """
    if path.is_dir():
        return manifest_digest(path)
    try:
        return _file_sha256(path)
    except OSError as exc:
        raise ConfigurationError(f"--measure-model {path}: {_reason(exc)}") from None


def _reason(exc: OSError) -> str:
    if exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return str(exc) if exc.args else type(exc).__name__


def serving_models(upstream: str | None, measured: Mapping[str, Path | None]) -> list[ModelIdentity]:
    """The models to measure: ``measured`` (``serve --measure-model NAME[=PATH]``: local weights
    with a path, else a model the upstream serves by name), and the echo model without an upstream."""
    models = [] if upstream else [ModelIdentity("echo", "echo")]
    for name, path in measured.items():
        if path is not None:
            models.append(ModelIdentity(name, "local", weights_digest(path)))
        elif upstream:
            models.append(ModelIdentity(name, "upstream"))
        else:
            raise ConfigurationError(f"--measure-model {name}: without --upstream a model needs =PATH")
    return models


def serving_stack_events(
    upstream: str | None, model_tiers: Mapping[str, Sequence[str]], models: Sequence[ModelIdentity]
) -> list[bytes]:
    """The EV_EVENT_TAG data of the serving stack, in the order they are extended."""
    tiers = {glob: list(names) for glob, names in model_tiers.items()}
    config = canonical_json({"upstream": upstream, "model_tiers": tiers})
    events = [
        serving_stack_event(
            "router", {"name": "nomyo-audit", "version": __version__, "code_sha256": code_digest()}
        ),
        serving_stack_event(
            "config",
            {"config_sha256": hashlib.sha256(config).hexdigest(), "upstream": upstream, "model_tiers": tiers},
        ),
    ]
    for model in models:
        fields: dict[str, Any] = {
            "name": model.name,
            "source": model.source,
            "weights_sha256": model.weights_sha256,
            "upstream_identity": model.upstream_identity,
        }
        events.append(serving_stack_event("model", fields))
    return events


def measure_serving_stack(
    attester: Any,
    upstream: str | None = None,
    model_tiers: Mapping[str, Sequence[str]] | None = None,
    models: Sequence[ModelIdentity] | None = None,
    pcr: int = SERVING_STACK_PCR,
) -> list[bytes]:
    """Reset ``pcr`` on ``attester``'s TPM (a :class:`~nomyo_audit.attest.TPMAttester`) and extend
    the serving stack into it, logged; returns the events. ``models`` default to
    :func:`serving_models` of ``upstream``. Raises ConfigurationError when the TPM refuses the reset
    (a PCR that is not resettable) or an extend."""
    chosen = serving_models(upstream, {}) if models is None else models
    events = serving_stack_events(upstream, model_tiers or {}, chosen)
    attester.measurements.reset(pcr)
    for data in events:
        attester.measurements.extend_event(pcr, EV_EVENT_TAG, data)
    return events
