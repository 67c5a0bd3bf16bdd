"""Keylime-style runtime policies for IMA measurement lists."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, NamedTuple

from ._ima import ImaEntry

__all__ = ["ImaPolicy", "ImaViolation", "check_ima"]


@dataclass(frozen=True)
class ImaPolicy:
    digests: Mapping[str, frozenset[str]]
    excludes: tuple[str, ...]

    @classmethod
    def from_keylime(cls, data: bytes) -> ImaPolicy:
        raise NotImplementedError

    @classmethod
    def from_mapping(cls, digests: Mapping[str, Iterable[str]], excludes: Iterable[str] = ()) -> ImaPolicy:
        raise NotImplementedError


class ImaViolation(NamedTuple):
    number: int
    path: str
    digest: str
    reason: Literal["not_allowed", "digest_mismatch", "violation"]


def check_ima(entries: Iterable[ImaEntry], policy: ImaPolicy, *, limit: int = 20) -> tuple[ImaViolation, ...]:
    raise NotImplementedError
