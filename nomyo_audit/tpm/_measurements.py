"""The demo's measured boot: typed TCG events and IMA entries, as a real machine would log them.

A fresh swtpm and the software TPM both start with zeroed PCRs 0-15, so these events give the
same, known PCR values on either, which is what ``policies/production.yaml`` holds as golden
values. They are shaped like a UEFI machine with secure boot booting shim, grub and Linux (TCG PC
Client Platform Firmware Profile; grub's PCR 8/9 events; IMA's ima-ng list in PCR 10), so that
``nomyo-audit eventlog show`` of the demo's evidence reads like one. On a real machine the
firmware and the OS measure the boot instead; ``nomyo-audit policy from-evidence`` learns them.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from collections.abc import Mapping
from typing import NamedTuple, Protocol, runtime_checkable

from ..eventlog import (
    EV_EFI_ACTION,
    EV_EFI_BOOT_SERVICES_APPLICATION,
    EV_EFI_PLATFORM_FIRMWARE_BLOB,
    EV_EFI_VARIABLE_AUTHORITY,
    EV_EFI_VARIABLE_DRIVER_CONFIG,
    EV_IPL,
    EV_S_CRTM_VERSION,
    EV_SEPARATOR,
    ImaLogWriter,
    parse_ima_log,
)

__all__ = [
    "DEMO_BOOT",
    "DEMO_IMA_FILES",
    "DEMO_PCRS",
    "TAMPER_EVENT",
    "TAMPER_MODULE",
    "BootEvent",
    "demo_ima_allow_list",
    "expected_pcr",
    "measure_demo_boot",
]

_GLOBAL = uuid.UUID("8be4df61-93ca-11d2-aa0d-00e098032b8c")  # EFI_GLOBAL_VARIABLE
_SECURITY_DB = uuid.UUID("d719b2cb-3d3a-4596-a3bc-dad00e67656f")  # EFI_IMAGE_SECURITY_DATABASE_GUID
_CERT_SHA256 = uuid.UUID("c1c41626-504c-4092-aca9-41f936934328")  # EFI_CERT_SHA256_GUID
_OWNER = uuid.UUID("6e6f6d79-6f2d-6175-6469-742d64656d6f")  # the demo's signature owner


class BootEvent(NamedTuple):
    """One event of the demo's boot: ``measured`` is what its digest is of (an image, a firmware
    volume, a kernel file, grub's command line) when that is not the event data itself."""

    pcr: int
    type: int
    data: bytes
    measured: bytes | None = None

    def digests(self, banks: tuple[str, ...]) -> dict[str, bytes]:
        content = self.data if self.measured is None else self.measured
        return {bank: hashlib.new(bank, content).digest() for bank in banks}


def _variable(guid: uuid.UUID, name: str, value: bytes) -> bytes:
    """UEFI_VARIABLE_DATA: VariableName GUID, name length (chars), data length, UTF-16 name, data."""
    unicode_name = name.encode("utf-16-le")
    return guid.bytes_le + struct.pack("<QQ", len(name), len(value)) + unicode_name + value


def _sha256_list(*entries: bytes) -> bytes:
    """An EFI_SIGNATURE_LIST of EFI_CERT_SHA256 entries (owner GUID + hash), as db and dbx hold."""
    body = b"".join(_OWNER.bytes_le + hashlib.sha256(e).digest() for e in entries)
    return _CERT_SHA256.bytes_le + struct.pack("<III", 28 + len(body), 0, 16 + 32) + body


def _file_path(path: str) -> bytes:
    """An EFI device path of one media file path node (type 4, subtype 4) and the end node."""
    name = (path + "\0").encode("utf-16-le")
    return struct.pack("<BBH", 4, 4, 4 + len(name)) + name + b"\x7f\xff\x04\x00"


def _image(path: str, size: int) -> bytes:
    """UEFI_IMAGE_LOAD_EVENT: location, length and link address in memory, then the device path."""
    device_path = _file_path(path)
    return struct.pack("<QQQQ", 0x7E000000, size, 0, len(device_path)) + device_path


def _grub(prefix: str, text: str) -> BootEvent:
    """grub's PCR 8 string events: the data is ``prefix: text\\0``, the digest of ``text`` alone."""
    return BootEvent(8, EV_IPL, f"{prefix}: {text}\0".encode(), text.encode())


_SEPARATOR = b"\x00\x00\x00\x00"
_KERNEL = "/boot/vmlinuz-6.8.0-nomyo-demo"
_CMDLINE = (
    f"{_KERNEL} root=UUID=6e6f6d79-0000-4000-8000-64656d6f0001 ro quiet ima_policy=tcb lockdown=integrity"
)

#: The demo machine's boot, in the order it is extended (PCRs 0, 7, 4, 8, 9)
DEMO_BOOT: tuple[BootEvent, ...] = (
    BootEvent(0, EV_S_CRTM_VERSION, "nomyo-audit demo firmware 1.0\0".encode("utf-16-le")),
    BootEvent(
        0, EV_EFI_PLATFORM_FIRMWARE_BLOB, struct.pack("<QQ", 0xFFC00000, 0x400000), b"demo firmware volume"
    ),
    BootEvent(0, EV_SEPARATOR, _SEPARATOR),
    BootEvent(7, EV_EFI_VARIABLE_DRIVER_CONFIG, _variable(_GLOBAL, "SecureBoot", b"\x01")),
    BootEvent(7, EV_EFI_VARIABLE_DRIVER_CONFIG, _variable(_GLOBAL, "PK", _sha256_list(b"demo platform key"))),
    BootEvent(7, EV_EFI_VARIABLE_DRIVER_CONFIG, _variable(_GLOBAL, "KEK", _sha256_list(b"demo KEK"))),
    BootEvent(7, EV_EFI_VARIABLE_DRIVER_CONFIG, _variable(_SECURITY_DB, "db", _sha256_list(b"demo shim"))),
    BootEvent(
        7, EV_EFI_VARIABLE_DRIVER_CONFIG, _variable(_SECURITY_DB, "dbx", _sha256_list(b"revoked grub"))
    ),
    BootEvent(7, EV_SEPARATOR, _SEPARATOR),
    BootEvent(4, EV_EFI_ACTION, b"Calling EFI Application from Boot Option"),
    BootEvent(4, EV_SEPARATOR, _SEPARATOR),
    BootEvent(
        7,
        EV_EFI_VARIABLE_AUTHORITY,
        _variable(_SECURITY_DB, "db", _OWNER.bytes_le + hashlib.sha256(b"demo shim").digest()),
    ),
    BootEvent(4, EV_EFI_BOOT_SERVICES_APPLICATION, _image(r"\EFI\nomyo\shimx64.efi", 0x10000), b"demo shim"),
    BootEvent(4, EV_EFI_BOOT_SERVICES_APPLICATION, _image(r"\EFI\nomyo\grubx64.efi", 0x20000), b"demo grub"),
    _grub("grub_cmd", f"linux {_CMDLINE.split(' ', 1)[0]} {_CMDLINE.split(' ', 1)[1]}"),
    BootEvent(9, EV_IPL, f"{_KERNEL}\0".encode(), b"demo kernel 6.8.0"),
    _grub("kernel_cmdline", _CMDLINE),
)

#: What the demo router quotes: every PCR its boot and its serving stack extend
DEMO_PCRS = "sha256:0,4,7,8,9,10,23"

#: The files the demo's IMA measured after boot_aggregate (path, SHA-256 of the file)
DEMO_IMA_FILES: tuple[tuple[str, bytes], ...] = tuple(
    (path, hashlib.sha256(f"demo {path}".encode()).digest())
    for path in ("/usr/lib/systemd/systemd", "/usr/bin/python3.12", "/usr/local/bin/nomyo-audit")
)
#: What the demo's IMA measures to show a policy denying a changed machine: a kernel module no
#: allow-list names
TAMPER_MODULE = (
    "/lib/modules/6.8.0-nomyo-demo/extra/unexpected.ko",
    hashlib.sha256(b"an unexpected kernel module").digest(),
)
#: A raw extend outside any log (tests): a firmware change production's golden PCR 0 denies
TAMPER_EVENT = (0, b"nomyo-audit demo: an unapproved firmware update")


@runtime_checkable
class Measurer(Protocol):
    """What logs as it extends: an attester's ``measurements`` (attest/_measured.py)."""

    def extend_event(
        self, pcr: int, event_type: int, data: bytes, digests: Mapping[str, bytes] | None = None
    ) -> dict[str, bytes]: ...

    def extend_ima_boot_aggregate(self, bank: str = "sha256") -> dict[str, bytes]: ...

    def extend_ima_file(
        self, path: str, file_digest: bytes, algorithm: str = "sha256"
    ) -> dict[str, bytes]: ...


class Extendable(Protocol):
    """A bare TPM (a quote source): extends, reads, and keeps no log."""

    def extend_digest(self, bank: str, index: int, digest: bytes) -> None: ...


def measure_demo_boot(target: Measurer | Extendable, banks: tuple[str, ...] = ("sha256",)) -> None:
    """Extend the demo's boot (and its IMA list into PCR 10) into ``target``: logged when it is an
    attester's ``measurements`` (every bank of its TPM), else into ``banks`` of a bare TPM."""
    if isinstance(target, Measurer):
        for event in DEMO_BOOT:
            target.extend_event(event.pcr, event.type, event.data, event.digests(_ALL_BANKS))
        target.extend_ima_boot_aggregate()
        for path, digest in DEMO_IMA_FILES:
            target.extend_ima_file(path, digest)
        return
    for pcr, bank, digest in _demo_extends(banks):
        target.extend_digest(bank, pcr, digest)


_ALL_BANKS = ("sha1", "sha256", "sha384", "sha512")
IMA_PCR = 10


def _boot_extends(banks: tuple[str, ...]) -> list[tuple[int, str, bytes]]:
    return [(e.pcr, bank, d) for e in DEMO_BOOT for bank, d in e.digests(banks).items()]


def _demo_extends(banks: tuple[str, ...]) -> list[tuple[int, str, bytes]]:
    """(PCR, bank, digest) of every extend of the demo's boot on a fresh TPM, PCR 10's included."""
    extends = _boot_extends(banks)
    ima = ImaLogWriter(banks)
    aggregate_bank = "sha256" if "sha256" in banks else banks[0]
    boot_pcrs = {i: _replay(extends, i, aggregate_bank) for i in range(10)}
    entries = [ima.add_boot_aggregate(boot_pcrs, aggregate_bank)]
    entries += [ima.add_file(path, digest) for path, digest in DEMO_IMA_FILES]
    return extends + [(10, bank, d) for entry in entries for bank, d in entry.items() if bank in banks]


def _replay(extends: list[tuple[int, str, bytes]], index: int, bank: str) -> bytes:
    value = bytes(hashlib.new(bank).digest_size)
    for pcr, extended_bank, digest in extends:
        if pcr == index and extended_bank == bank:
            value = hashlib.new(bank, value + digest).digest()
    return value


def expected_pcr(index: int, bank: str = "sha256") -> str:
    """The value PCR ``index`` holds after the demo's boot on a fresh TPM (hex)."""
    extends = _demo_extends((bank,)) if index == IMA_PCR else _boot_extends((bank,))
    return _replay(extends, index, bank).hex()


def demo_ima_allow_list() -> dict[str, list[str]]:
    """The demo machine's IMA allow-list (path -> SHA-256 hex), boot_aggregate included, as read
    back from the IMA list its boot writes: what a Keylime runtime policy of that machine holds."""
    ima = ImaLogWriter(("sha256",))
    ima.add_boot_aggregate({i: bytes.fromhex(expected_pcr(i)) for i in range(10)})
    for path, digest in DEMO_IMA_FILES:
        ima.add_file(path, digest)
    entries = parse_ima_log(ima.to_bytes(), "binary").entries
    return {
        e.path: [e.file_digest.hex()] for e in entries if e.path is not None and e.file_digest is not None
    }
