"""Linux IMA measurement lists (binary and ASCII): parse, replay to PCR 10, match a quote."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Literal, TypedDict

if TYPE_CHECKING:
    from ._replay import LogMatch

__all__ = [
    "ImaEntry",
    "ImaLog",
    "ImaSummary",
    "iter_ima_log",
    "match_ima_log",
    "parse_ima_log",
    "replay_ima_log",
    "summarize_ima",
]


@dataclass(frozen=True)
class ImaEntry:
    """One measurement of the list."""

    number: int
    pcr: int
    template_hash: bytes
    template_name: str
    template_data: bytes
    digest_algorithm: str | None
    file_digest: bytes | None
    path: str | None
    signature: bytes | None
    buffer: bytes | None

    @property
    def violation(self) -> bool:
        return not any(self.template_hash)


@dataclass(frozen=True)
class ImaLog:
    entries: tuple[ImaEntry, ...]
    sha256: bytes
    format: Literal["binary", "ascii"]


class ImaSummary(TypedDict, total=False):
    log_sha256: str
    bank: str
    entries: int
    proven: int
    violations: int


def parse_ima_log(data: bytes, format: Literal["auto", "binary", "ascii"] = "auto") -> ImaLog:
    raise NotImplementedError


def iter_ima_log(stream: BinaryIO, format: Literal["auto", "binary", "ascii"] = "auto") -> Iterator[ImaEntry]:
    raise NotImplementedError


def replay_ima_log(log: ImaLog, bank: str) -> dict[int, bytes]:
    raise NotImplementedError


def match_ima_log(log: ImaLog, quoted: Mapping[str, Mapping[int, bytes]]) -> LogMatch:
    raise NotImplementedError


def summarize_ima(log: ImaLog, match: LogMatch) -> ImaSummary:
    raise NotImplementedError
