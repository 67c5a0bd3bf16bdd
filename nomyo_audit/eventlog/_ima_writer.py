"""An IMA measurement list of our own (binary, ima-ng), for the router and the demo on swtpm."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["ImaLogWriter"]


class ImaLogWriter:
    def __init__(self, banks: tuple[str, ...] = ("sha1", "sha256", "sha384")) -> None:
        self.banks = banks

    def add_boot_aggregate(self, pcrs: Mapping[int, bytes], bank: str = "sha256") -> dict[str, bytes]:
        raise NotImplementedError

    def add_file(self, path: str, file_digest: bytes, algorithm: str = "sha256") -> dict[str, bytes]:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        raise NotImplementedError
