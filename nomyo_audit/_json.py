"""One strict JSON object reader for documents whose meaning must not depend on a parser's choice."""

from __future__ import annotations

from typing import Any

__all__ = ["DuplicateKeyError", "unique_object"]


class DuplicateKeyError(ValueError):
    """A JSON object names a key twice (``key`` is the first repeated one)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"duplicate key {key[:80]!r}")
        self.key = key


def unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads(..., object_pairs_hook=unique_object)``: an object whose keys are distinct.

    ``json`` keeps the last of two values for one key and other readers may keep the first, so
    what a reviewer read (or another verifier checked) would not be what is enforced: refuse it.
    """
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise DuplicateKeyError(key)
        document[key] = value
    return document
