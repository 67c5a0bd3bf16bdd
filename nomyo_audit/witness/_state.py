"""The witness's memory: the latest checkpoint it cosigned for each log origin.

One JSON file, ``{"version": 1, "logs": {origin: {"size", "root", "note"}}}``, replaced
atomically (``_files.write_file``) and only under an exclusive lock, held across the read,
the consistency check and the write: two add-checkpoint requests can never interleave,
which c2sp.org/tlog-witness requires (otherwise a slower, smaller request could roll the
witness back). The lock is a thread lock plus ``flock`` on ``<state>.lock``, so two
witness processes sharing a state file are serialised too. Without a file the state
lives in memory (tests, a throwaway demo witness).
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .._files import write_file
from ..errors import ConfigurationError

__all__ = ["LogHead", "WitnessState"]

_MAX_STATE = 64 * 1024 * 1024


@dataclass(frozen=True)
class LogHead:
    """The latest checkpoint the witness cosigned for one log: size, root, and the note itself."""

    size: int
    root: bytes
    note: str


class WitnessState:
    """``origin -> LogHead``, persisted in ``path`` (or kept in memory when it is None)."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._memory: dict[str, LogHead] = {}
        self._lock = threading.Lock()
        if self.path is not None:
            if not self.path.parent.is_dir():
                raise ConfigurationError(f"witness state {self.path}: no such directory")
            self._read()  # a damaged state file is a startup error, not a request-time one

    @contextmanager
    def locked(self) -> Iterator[dict[str, LogHead]]:
        """The heads, for one atomic check-and-update: changes to the dict are saved on exit."""
        with self._lock:
            if self.path is None:
                heads = dict(self._memory)
                yield heads
                self._memory = heads
                return
            try:
                lock = open(self.path.with_name(self.path.name + ".lock"), "a")  # noqa: SIM115
            except OSError as exc:
                raise ConfigurationError(f"cannot lock witness state {self.path}: {exc.strerror}") from None
            with lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                heads = self._read()
                before = dict(heads)
                yield heads
                if heads != before:
                    self._write(heads)

    def get(self, origin: str) -> LogHead | None:
        """The head kept for ``origin``, read under the lock."""
        with self.locked() as heads:
            return heads.get(origin)

    def _read(self) -> dict[str, LogHead]:
        assert self.path is not None
        try:
            with open(self.path, "rb") as fh:
                raw = fh.read(_MAX_STATE + 1)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise ConfigurationError(f"cannot read witness state {self.path}: {exc.strerror}") from None
        try:
            if len(raw) > _MAX_STATE:
                raise ValueError("too large")
            document = json.loads(raw)
            heads = {
                origin: LogHead(int(entry["size"]), base64.b64decode(entry["root"], validate=True),
                                str(entry["note"]))
                for origin, entry in document["logs"].items()
            }
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
            raise ConfigurationError(f"{self.path} is not a witness state file") from None
        return heads

    def _write(self, heads: dict[str, LogHead]) -> None:
        assert self.path is not None
        document = {
            "version": 1,
            "logs": {
                origin: {"size": head.size, "root": base64.b64encode(head.root).decode(), "note": head.note}
                for origin, head in sorted(heads.items())
            },
        }
        write_file(self.path, json.dumps(document, indent=1).encode() + b"\n", mode=0o600, overwrite=True)
