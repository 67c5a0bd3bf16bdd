"""An IMA measurement list of our own (binary, ``ima-ng``), for the router and the demo on swtpm.

It plays the kernel's part where there is no kernel IMA to read (swtpm, the software TPM): each
``add_*`` appends one entry exactly as Linux would list it and returns what Linux would extend
into PCR 10 in each bank, so the caller extends those digests and the list replays to the PCRs.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

from ._constants import DIGEST_SIZES, digest, hasher
from ._ima_templates import FILE_DIGEST_SIZES

__all__ = ["IMA_PCR", "ImaLogWriter"]

#: The PCR Linux IMA extends unless its policy says otherwise (CONFIG_IMA_MEASURE_PCR_IDX).
IMA_PCR = 10
_TEMPLATE = b"ima-ng"
#: Our bank names -> the kernel's hash_algo_name[] spelling in a d-ng field.
_KERNEL_ALGORITHMS = {"sm3_256": "sm3"}
_MAX_PATH = 4096


def _field(data: bytes) -> bytes:
    return struct.pack("<I", len(data)) + data


def boot_aggregate(pcrs: Mapping[int, bytes], bank: str) -> bytes:
    """The kernel's boot_aggregate (ima_calc_boot_aggregate_tfm): H_bank of PCRs 0-7, then 8-9 unless SHA-1.

    Linux >= 5.8 adds PCRs 8 and 9 (boot loader command line and kernel) to every non-SHA-1
    aggregate; the SHA-1 one stays over PCRs 0-7 for compatibility.
    """
    indices = range(8) if bank == "sha1" else range(10)
    missing = [index for index in indices if index not in pcrs]
    if missing:
        raise ValueError(f"the {bank} boot_aggregate needs PCRs {missing}")
    size = DIGEST_SIZES[bank]
    if any(len(pcrs[index]) != size for index in indices):
        raise ValueError(f"{bank} PCR values must be {size} bytes")
    return digest(bank, b"".join(pcrs[index] for index in indices))


class ImaLogWriter:
    """Builds a little-endian (``ima_canonical_fmt``) ``binary_runtime_measurements`` list."""

    def __init__(self, banks: tuple[str, ...] = ("sha1", "sha256", "sha384")) -> None:
        unknown = [bank for bank in banks if hasher(bank) is None]
        if unknown or not banks:
            raise ValueError(f"cannot extend IMA measurements into banks {unknown or banks}")
        self.banks = banks
        self._entries: list[bytes] = []

    def _add(self, name: bytes, algorithm: str, file_digest: bytes) -> dict[str, bytes]:
        kernel_name = _KERNEL_ALGORITHMS.get(algorithm, algorithm)
        expected = FILE_DIGEST_SIZES.get(kernel_name)
        if expected is None or len(file_digest) != expected:
            raise ValueError(f"a {algorithm} digest of {len(file_digest)} bytes")
        data = _field(kernel_name.encode() + b":\x00" + file_digest) + _field(name + b"\x00")
        template_hash = digest("sha1", data)
        self._entries.append(struct.pack("<I", IMA_PCR) + template_hash + _field(_TEMPLATE) + _field(data))
        return {bank: digest(bank, data) for bank in self.banks}

    def add_boot_aggregate(self, pcrs: Mapping[int, bytes], bank: str = "sha256") -> dict[str, bytes]:
        """The first entry, ``boot_aggregate``, over ``pcrs`` (values of ``bank``, PCRs 0-9 or 0-7 for SHA-1).

        Returns the digest to extend into PCR 10 in each of the writer's banks.
        """
        return self._add(b"boot_aggregate", bank, boot_aggregate(pcrs, bank))

    def add_file(self, path: str, file_digest: bytes, algorithm: str = "sha256") -> dict[str, bytes]:
        """A measured file (``path``, the ``algorithm`` digest of its content); returns what to extend."""
        raw = path.encode("utf-8")
        if not raw or b"\x00" in raw or len(raw) > _MAX_PATH:
            raise ValueError("an IMA path must be 1-4096 bytes without NUL")
        return self._add(raw, algorithm, file_digest)

    def to_bytes(self) -> bytes:
        """The list so far, as ``/sys/kernel/security/ima/binary_runtime_measurements`` would read."""
        return b"".join(self._entries)
