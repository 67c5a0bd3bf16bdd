"""Decode one event for people and policies: :func:`decode_event` never raises.

Each event type has a rule for what its digest is of, and ``data_verified`` applies it (as
go-attestation's attest/secureboot.go does for PCR 7): for separators, EFI actions, S-CRTM
versions, GPT tables, variables and tagged events the digest is the hash of the event data, so the
data can be trusted exactly when the digest is proven and ``data_verified`` is True. For firmware
blobs, POST codes and boot applications the digest is of code the event only points at: their
data (addresses, device paths) is a hint, ``data_verified`` is None. Rules for known variants:

* EV_EFI_VARIABLE_BOOT(2): the profile says H(UEFI_VARIABLE_DATA); EDK2 (and so the GCE and most
  real logs) measure H(VariableData) alone. Both verify.
* EV_EFI_VARIABLE_AUTHORITY: shim before commit 8a27a48 logs one byte more than it measured
  (go-attestation issue 157): H(data without its last byte) verifies too.
* EV_IPL from GRUB: data "grub_cmd: <command>\\0" / "kernel_cmdline: <line>\\0", digest of the
  command alone (no prefix, no NUL). GRUB's PCR 9 file events carry a path, digest of the file.
"""

# No ``from __future__ import annotations``: the named tuple's fields stay real types for pdoc.

import hashlib
import struct
from collections.abc import Callable
from typing import Any, NamedTuple

from . import _efi
from ._constants import (
    ALGORITHMS,
    EV_ACTION,
    EV_EFI_ACTION,
    EV_EFI_BOOT_SERVICES_APPLICATION,
    EV_EFI_BOOT_SERVICES_DRIVER,
    EV_EFI_GPT_EVENT,
    EV_EFI_PLATFORM_FIRMWARE_BLOB,
    EV_EFI_PLATFORM_FIRMWARE_BLOB2,
    EV_EFI_RUNTIME_SERVICES_DRIVER,
    EV_EFI_VARIABLE_AUTHORITY,
    EV_EFI_VARIABLE_BOOT,
    EV_EFI_VARIABLE_BOOT2,
    EV_EFI_VARIABLE_DRIVER_CONFIG,
    EV_EVENT_TAG,
    EV_IPL,
    EV_NO_ACTION,
    EV_POST_CODE,
    EV_S_CRTM_VERSION,
    EV_SEPARATOR,
    hasher,
)
from ._parse import SPEC_ID_SIGNATURE, Event, startup_locality
from ._serving import decode_serving_stack

__all__ = ["EventInfo", "decode_event"]

_SUMMARY = 200
GRUB_PREFIXES = {b"grub_cmd: ": "ipl", b"kernel_cmdline: ": "kernel_cmdline"}
SECURE_BOOT_VARIABLES = ("SecureBoot", "PK", "KEK", "db", "dbx")


class EventInfo(NamedTuple):
    """What one event says, decoded (its data is untrusted until a quote proves the event)."""

    kind: str
    """A stable label: "spec_id", "separator", "secure_boot_variable", ... "unknown", "undecodable"."""
    summary: str
    """One printable line of at most 200 characters."""
    fields: dict[str, Any]
    """JSON-ready decoded data."""
    data_verified: bool | None
    """The event's digest is the hash of its data as its type's rule says; None when it is not of its data."""


class _Check:
    """Does the event's digest in one bank equal the hash of some bytes?"""

    def __init__(self, event: Event, bank: str) -> None:
        if bank not in event.digests and event.digests:
            bank = next(iter(event.digests))
        self._digest = event.digests.get(bank)
        self._hash = hasher(bank)

    def __call__(self, *candidates: bytes) -> bool | None:
        if self._digest is None or self._hash is None:
            return None
        return any(self._hash(candidate).digest() == self._digest for candidate in candidates)


def _text(data: bytes) -> str:
    return _efi.printable(bytes(data).decode("utf-8", errors="replace").rstrip("\x00"))


def _line(text: str) -> str:
    text = _efi.printable(text, _SUMMARY)
    return text


def _no_action(event: Event, check: _Check) -> EventInfo:
    if event.number == 0 and event.data.startswith(SPEC_ID_SIGNATURE):
        count = struct.unpack_from("<I", event.data, 24)[0] if len(event.data) >= 28 else 0
        algorithms = [
            struct.unpack_from("<HH", event.data, 28 + 4 * i)
            for i in range(min(count, 16))
            if 32 + 4 * i <= len(event.data)
        ]
        names = [ALGORITHMS.get(alg, (f"0x{alg:04x}", size))[0] for alg, size in algorithms]
        return EventInfo("spec_id", f"Spec ID Event03: {', '.join(names)}", {"algorithms": names}, None)
    locality = startup_locality(event)
    if locality is not None:
        return EventInfo("startup_locality", f"StartupLocality {locality}", {"locality": locality}, None)
    return EventInfo(
        "no_action", _line(f"no action: {_text(event.data[:64])}"), {"data": _text(event.data)}, None
    )


def _separator(event: Event, check: _Check) -> EventInfo:
    value = bytes(event.data).hex()
    error = event.data != b"\x00\x00\x00\x00"
    fields = {"value": value, "error": error}
    summary = f"separator{' (error)' if error else ''}: {value[:16]}"
    return EventInfo("separator", summary, fields, check(event.data))


def _crtm(event: Event, check: _Check) -> EventInfo:
    data = bytes(event.data)
    looks_ucs2 = len(data) >= 2 and len(data) % 2 == 0 and data[1::2].count(0) * 2 >= len(data) // 2
    version = _efi.ucs2(data) if looks_ucs2 else _text(data) if data.isascii() else data.hex()
    return EventInfo("crtm_version", _line(f"S-CRTM version: {version}"), {"version": version}, check(data))


def _post_code(event: Event, check: _Check) -> EventInfo:
    if len(event.data) == 16:
        fields = _efi.firmware_blob(event.data)
        return EventInfo(
            "post_code", f"POST code blob 0x{fields['base']:x}+0x{fields['length']:x}", fields, None
        )
    text = _text(event.data)
    return EventInfo("post_code", _line(f"POST code: {text}"), {"description": text}, None)


def _blob(event: Event, check: _Check) -> EventInfo:
    if event.type == EV_EFI_PLATFORM_FIRMWARE_BLOB:
        fields = _efi.firmware_blob(event.data)
    else:
        fields = _efi.firmware_blob2(event.data)
    label = f" {fields['description']}" if "description" in fields else ""
    return EventInfo(
        "firmware_blob",
        _line(f"firmware blob{label} 0x{fields['base']:x}+0x{fields['length']:x}"),
        fields,
        None,
    )


def _variable_fields(variable: _efi.Variable) -> dict[str, Any]:
    fields: dict[str, Any] = {"guid": variable.guid, "name": variable.name, "size": len(variable.value)}
    if variable.name == "SecureBoot" and len(variable.value) == 1:
        fields["enabled"] = variable.value == b"\x01"
    elif variable.name in ("PK", "KEK", "db", "dbx"):
        try:
            fields["signatures"] = _efi.signature_lists(variable.value)
        except ValueError:
            fields["signatures"] = None
    elif len(variable.value) <= 64:
        fields["value"] = variable.value.hex()
    return fields


def _driver_config(event: Event, check: _Check) -> EventInfo:
    variable = _efi.variable(event.data)
    fields = _variable_fields(variable)
    shown = f" = {'enabled' if fields['enabled'] else 'disabled'}" if "enabled" in fields else ""
    return EventInfo(
        "secure_boot_variable", _line(f"variable {variable.name}{shown}"), fields, check(event.data)
    )


def _boot_variable(event: Event, check: _Check) -> EventInfo:
    variable = _efi.variable(event.data)
    fields: dict[str, Any] = {"guid": variable.guid, "name": variable.name}
    summary = f"boot variable {variable.name}"
    if variable.name == "BootOrder" and len(variable.value) % 2 == 0:
        order = [f"Boot{n:04X}" for (n,) in struct.iter_unpack("<H", variable.value[: 2 * _efi.MAX_ITEMS])]
        fields["order"] = order
        summary += ": " + ",".join(order)
    elif variable.name.startswith("Boot") and len(variable.name) == 8:
        fields.update(_efi.load_option(variable.value))
        summary += f": {fields['description']} {fields['device_path']}"
    return EventInfo("boot_variable", _line(summary), fields, check(event.data, variable.value))


def _authority(event: Event, check: _Check) -> EventInfo:
    variable = _efi.variable(event.data)
    fields: dict[str, Any] = {"guid": variable.guid, "name": variable.name}
    if len(variable.value) > 16:  # EFI_SIGNATURE_DATA: owner GUID, then (usually) a certificate
        fields["owner"] = _efi.guid(variable.value)
        fields["certificate_sha256"] = hashlib.sha256(variable.value[16:]).hexdigest()
    verified = check(event.data, event.data[:-1]) if event.data else check(event.data)
    return EventInfo("authority", _line(f"authority from {variable.name}"), fields, verified)


def _application(event: Event, check: _Check) -> EventInfo:
    fields = _efi.image_load(event.data)
    return EventInfo("boot_application", _line(f"image {fields['device_path']}"), fields, None)


def _gpt(event: Event, check: _Check) -> EventInfo:
    fields = _efi.gpt(event.data)
    return EventInfo(
        "gpt", f"GPT disk {fields['disk_guid']}, {fields['count']} partitions", fields, check(event.data)
    )


def _ipl(event: Event, check: _Check) -> EventInfo:
    data = bytes(event.data)
    for prefix, kind in GRUB_PREFIXES.items():
        if data.startswith(prefix):
            measured = data[len(prefix) :].rstrip(b"\x00")
            key = "command" if kind == "ipl" else "cmdline"
            value = _text(measured)
            return EventInfo(kind, _line(f"{prefix.decode()}{value}"), {key: value}, check(measured, data))
    text = _text(data)
    if event.pcr == 9 and data.endswith(b"\x00") and data[:-1].isascii():
        return EventInfo("ipl", _line(f"file {text}"), {"path": text}, None)
    return EventInfo("ipl", _line(f"IPL: {text}"), {"text": text}, check(data) or None)


def _action(event: Event, check: _Check) -> EventInfo:
    text = _text(event.data)
    return EventInfo("efi_action", _line(f"action: {text}"), {"action": text}, check(event.data))


def _tag(event: Event, check: _Check) -> EventInfo:
    value = decode_serving_stack(event.data)
    if value is None:
        return _unknown(event, check)
    label = value.get("name") or value.get("config_sha256", "")[:16]
    return EventInfo(
        "serving_stack", _line(f"serving stack {value['kind']}: {label}"), value, check(event.data)
    )


def _unknown(event: Event, check: _Check) -> EventInfo:
    preview = bytes(event.data[:32]).hex()
    fields = {"type": event.type_name, "size": len(event.data), "data": preview}
    return EventInfo("unknown", _line(f"{event.type_name}, {len(event.data)} bytes"), fields, None)


_DECODERS: dict[int, Callable[[Event, _Check], EventInfo]] = {
    EV_NO_ACTION: _no_action,
    EV_SEPARATOR: _separator,
    EV_S_CRTM_VERSION: _crtm,
    EV_POST_CODE: _post_code,
    EV_EFI_PLATFORM_FIRMWARE_BLOB: _blob,
    EV_EFI_PLATFORM_FIRMWARE_BLOB2: _blob,
    EV_EFI_VARIABLE_DRIVER_CONFIG: _driver_config,
    EV_EFI_VARIABLE_BOOT: _boot_variable,
    EV_EFI_VARIABLE_BOOT2: _boot_variable,
    EV_EFI_VARIABLE_AUTHORITY: _authority,
    EV_EFI_BOOT_SERVICES_APPLICATION: _application,
    EV_EFI_BOOT_SERVICES_DRIVER: _application,
    EV_EFI_RUNTIME_SERVICES_DRIVER: _application,
    EV_EFI_GPT_EVENT: _gpt,
    EV_IPL: _ipl,
    EV_EFI_ACTION: _action,
    EV_ACTION: _action,
    EV_EVENT_TAG: _tag,
}


def decode_event(event: Event, bank: str = "sha256") -> EventInfo:
    """Decode ``event``; ``data_verified`` checks its ``bank`` digest (or its only bank's). Never raises.

    Data that does not fit its type's structure is kind ``undecodable`` (the reason in the
    summary); a type without a decoder is ``unknown``: kept and shown, never an error alone.
    """
    check = _Check(event, bank)
    decoder = _DECODERS.get(event.type, _unknown)
    try:
        return decoder(event, check)
    except (ValueError, struct.error, IndexError, KeyError) as exc:
        reason = str(exc) or type(exc).__name__
        fields = {"type": event.type_name, "size": len(event.data), "reason": _efi.printable(reason, 120)}
        return EventInfo(
            "undecodable", _line(f"{event.type_name}: {reason}"), fields, check(event.data) or None
        )
