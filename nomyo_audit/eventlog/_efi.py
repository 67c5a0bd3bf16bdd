"""UEFI structures inside event data: GUIDs, UEFI_VARIABLE_DATA, load options, device paths, GPT.

Pure decoders over untrusted bytes: each raises ``ValueError`` (caught by :func:`decode_event`)
on data that does not fit, and bounds what it returns (device path nodes, partitions, list
entries), so a hostile event cannot make the output large. Structures and text forms follow
the UEFI specification 2.10 (section 3.1.3 load options, 5.3 GPT, 10.3 device path nodes,
10.6 device path text, 32.4 signature lists) and the TCG PC Client profile (UEFI_VARIABLE_DATA,
UEFI_IMAGE_LOAD_EVENT, UEFI_PLATFORM_FIRMWARE_BLOB(2), UEFI_GPT_DATA).
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from typing import Any, NamedTuple

MAX_NODES = 64
MAX_ITEMS = 64
MAX_TEXT = 1024

EFI_GLOBAL_VARIABLE = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
EFI_IMAGE_SECURITY_DATABASE = "d719b2cb-3d3a-4596-a3bc-dad00e67656f"
EFI_CERT_X509 = "a5c059a1-94e4-4aa7-87b5-ab155c2bf072"
EFI_CERT_SHA256 = "c1c41626-504c-4092-aca9-41f936934328"


def guid(data: bytes, offset: int = 0) -> str:
    """The text form of an EFI_GUID (its first three fields are little-endian)."""
    if len(data) < offset + 16:
        raise ValueError("GUID cut short")
    return str(uuid.UUID(bytes_le=bytes(data[offset : offset + 16])))


def ucs2(data: bytes) -> str:
    """UCS-2 text up to its first NUL, bounded and with unprintable characters escaped."""
    text = bytes(data[: 2 * MAX_TEXT]).decode("utf-16-le", errors="replace").split("\x00", 1)[0]
    return printable(text)


def printable(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` with control characters escaped, at most ``limit`` characters."""
    out = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 256 else "?" for c in text)
    return out if len(out) <= limit else out[: limit - 3] + "..."


class Variable(NamedTuple):
    """A UEFI_VARIABLE_DATA: the variable's GUID, name and value."""

    guid: str
    name: str
    value: bytes


def variable(data: bytes) -> Variable:
    """Parse UEFI_VARIABLE_DATA (GUID, UINT64 name length in characters, UINT64 data length, name, data)."""
    if len(data) < 32:
        raise ValueError("UEFI_VARIABLE_DATA cut short")
    name_length, value_length = struct.unpack_from("<QQ", data, 16)
    end = 32 + 2 * name_length + value_length
    if name_length > MAX_TEXT or end > len(data):
        raise ValueError("UEFI_VARIABLE_DATA sizes exceed the event")
    name = bytes(data[32 : 32 + 2 * name_length]).decode("utf-16-le", errors="replace")
    return Variable(guid(data), printable(name), bytes(data[32 + 2 * name_length : end]))


def signature_lists(data: bytes) -> dict[str, Any]:
    """Count the entries of EFI_SIGNATURE_LISTs (PK, KEK, db, dbx): X.509 certificates, SHA-256 hashes.

    ``certificates`` holds the SHA-256 of each X.509 certificate (at most :data:`MAX_ITEMS`).
    """
    offset, counts = 0, {"x509": 0, "sha256": 0, "other": 0}
    certificates: list[str] = []
    while offset < len(data):
        if len(data) - offset < 28:
            raise ValueError("EFI_SIGNATURE_LIST cut short")
        kind = guid(data, offset)
        list_size, header_size, size = struct.unpack_from("<III", data, offset + 16)
        if list_size < 28 + header_size or offset + list_size > len(data) or size < 16:
            raise ValueError("EFI_SIGNATURE_LIST sizes do not fit")
        entries = list_size - 28 - header_size
        if entries % size:
            raise ValueError("EFI_SIGNATURE_LIST holds a partial entry")
        label = {EFI_CERT_X509: "x509", EFI_CERT_SHA256: "sha256"}.get(kind, "other")
        counts[label] += entries // size
        if label == "x509":
            start = offset + 28 + header_size
            for at in range(start, start + entries, size):
                if len(certificates) < MAX_ITEMS:
                    certificates.append(hashlib.sha256(data[at + 16 : at + size]).hexdigest())
        offset += list_size
    return {**counts, "certificates": certificates}


def load_option(data: bytes) -> dict[str, Any]:
    """EFI_LOAD_OPTION (a Boot#### variable): attributes, description, device path text."""
    if len(data) < 6:
        raise ValueError("EFI_LOAD_OPTION cut short")
    attributes, path_length = struct.unpack_from("<IH", data)
    end = 6
    while end + 1 < len(data) and data[end : end + 2] != b"\x00\x00":
        end += 2
    description = ucs2(data[6:end])
    path = data[end + 2 : end + 2 + path_length]
    return {"attributes": attributes, "description": description, "device_path": device_path(path)}


def image_load(data: bytes) -> dict[str, Any]:
    """UEFI_IMAGE_LOAD_EVENT: where the image was, its length, its device path as text."""
    if len(data) < 32:
        raise ValueError("UEFI_IMAGE_LOAD_EVENT cut short")
    address, length, _, path_length = struct.unpack_from("<QQQQ", data)
    if 32 + path_length > len(data):
        raise ValueError("UEFI_IMAGE_LOAD_EVENT device path exceeds the event")
    return {"address": address, "length": length, "device_path": device_path(data[32 : 32 + path_length])}


def firmware_blob(data: bytes) -> dict[str, Any]:
    """UEFI_PLATFORM_FIRMWARE_BLOB: base address and length."""
    if len(data) != 16:
        raise ValueError("UEFI_PLATFORM_FIRMWARE_BLOB is 16 bytes")
    base, length = struct.unpack("<QQ", data)
    return {"base": base, "length": length}


def firmware_blob2(data: bytes) -> dict[str, Any]:
    """UEFI_PLATFORM_FIRMWARE_BLOB2: description, base address and length."""
    if not data or len(data) != 1 + data[0] + 16:
        raise ValueError("UEFI_PLATFORM_FIRMWARE_BLOB2 sizes do not fit")
    base, length = struct.unpack_from("<QQ", data, 1 + data[0])
    description = printable(bytes(data[1 : 1 + data[0]]).decode("ascii", errors="replace").rstrip("\x00"))
    return {"description": description, "base": base, "length": length}


def gpt(data: bytes) -> dict[str, Any]:
    """UEFI_GPT_DATA: the disk GUID and its partitions (type, GUID, name)."""
    if len(data) < 92 + 8 or data[:8] != b"EFI PART":
        raise ValueError("not a GPT header")
    header_size = struct.unpack_from("<I", data, 12)[0]
    entry_size = struct.unpack_from("<I", data, 84)[0]
    if header_size < 92 or len(data) < header_size + 8 or entry_size < 128:
        raise ValueError("GPT header sizes do not fit")
    (count,) = struct.unpack_from("<Q", data, header_size)
    if header_size + 8 + count * entry_size != len(data):
        raise ValueError("GPT partition count does not match the event")
    partitions = []
    for index in range(min(count, MAX_ITEMS)):
        at = header_size + 8 + index * entry_size
        partitions.append(
            {"type": guid(data, at), "guid": guid(data, at + 16), "name": ucs2(data[at + 56 : at + 128])}
        )
    return {"disk_guid": guid(data, 56), "partitions": partitions, "count": count}


def _hex_words(data: bytes, fmt: str) -> tuple[int, ...]:
    if len(data) < struct.calcsize(fmt):
        raise ValueError("device path node cut short")
    return struct.unpack_from(fmt, data)


def _node_text(kind: int, subtype: int, body: bytes) -> str:
    if kind == 1 and subtype == 1:
        function, device = _hex_words(body, "<BB")
        return f"Pci(0x{device:x},0x{function:x})"
    if kind == 1 and subtype == 4:
        return f"VenHw({guid(body)})"
    if kind == 2 and subtype == 1:
        hid, uid = _hex_words(body, "<II")
        names = {0x0A0341D0: "PciRoot", 0x0A0841D0: "PcieRoot"}
        return f"{names[hid]}(0x{uid:x})" if hid in names else f"Acpi(0x{hid:x},0x{uid:x})"
    if kind == 3 and subtype == 2:
        return "Scsi(0x{:x},0x{:x})".format(*_hex_words(body, "<HH"))
    if kind == 3 and subtype == 5:
        return "USB(0x{:x},0x{:x})".format(*_hex_words(body, "<BB"))
    if kind == 3 and subtype == 0x12:
        return "Sata(0x{:x},0x{:x},0x{:x})".format(*_hex_words(body, "<HHH"))
    if kind == 3 and subtype == 0x17:
        (namespace,) = _hex_words(body, "<I")
        return f"NVMe(0x{namespace:x},{'-'.join(f'{b:02X}' for b in body[4:12])})"
    if kind == 3 and subtype == 10:
        return f"VenMsg({guid(body)})"
    if kind == 3 and subtype == 0x18:
        return f"Uri({printable(bytes(body).decode('ascii', errors='replace'))})"
    if kind == 4 and subtype == 1:
        number, start, size = _hex_words(body, "<IQQ")
        if len(body) < 38:
            raise ValueError("hard drive node cut short")
        signature = guid(body, 20) if body[37] == 2 else f"0x{struct.unpack_from('<I', body, 20)[0]:08x}"
        table = {1: "MBR", 2: "GPT"}.get(body[36], str(body[36]))
        return f"HD({number},{table},{signature},0x{start:x},0x{size:x})"
    if kind == 4 and subtype == 3:
        return f"VenMedia({guid(body)})"
    if kind == 4 and subtype == 4:
        return ucs2(body)
    if kind == 4 and subtype == 6:
        return f"FvFile({guid(body)})"
    if kind == 4 and subtype == 7:
        return f"Fv({guid(body)})"
    if kind == 4 and subtype == 8:
        return "Offset(0x{:x},0x{:x})".format(*_hex_words(body, "<QQ"))
    return f"Path({kind},{subtype},{bytes(body[:64]).hex()})"


def device_path(data: bytes) -> str:
    """An EFI device path in UEFI's text form: ``PciRoot(0x0)/Pci(0x3,0x0)/Scsi(0x0,0x1)/HD(...)/...``.

    Nodes this decoder does not name show as ``Path(type,subtype,hex)``, as the UEFI text form does.
    """
    parts: list[str] = []
    offset = 0
    while offset + 4 <= len(data) and len(parts) < MAX_NODES:
        kind, subtype, length = struct.unpack_from("<BBH", data, offset)
        if length < 4 or offset + length > len(data):
            raise ValueError("device path node length does not fit")
        if kind == 0x7F:
            if subtype == 0xFF:
                break
            parts.append(",")
        else:
            parts.append(_node_text(kind, subtype, data[offset + 4 : offset + length]))
        offset += length
    text = "/".join(parts).replace("/,/", ",")
    return printable(text)
