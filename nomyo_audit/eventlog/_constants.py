"""Numbers of the TCG PC Client Platform Firmware Profile: event types, digest algorithms, caps.

Values from the TCG PC Client Platform Firmware Profile Specification (section 10.4.1, event
types) and the TCG Algorithm Registry (algorithm identifiers); the caps are ours (design of
issue 14): a log is evidence from the network, so every size is bounded before it is read.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from typing import Any

#: The largest TCG event log a verifier decodes (bytes, after base64); larger is ``eventlog_too_large``.
MAX_EVENT_LOG_BYTES = 2 * 1024 * 1024
#: The largest IMA measurement list a verifier decodes (bytes, after base64).
MAX_IMA_LOG_BYTES = 6 * 1024 * 1024
#: The most events one parsed log may hold; more is ``eventlog_too_many_events``.
MAX_EVENTS = 100_000
#: The largest data of one event (bytes); larger is ``eventlog_too_large`` (checked before reading it).
MAX_EVENT_DATA = 1 << 20

#: The PCR the router measures its serving stack into (reset by the router at start).
SERVING_STACK_PCR = 23
#: ``taggedEventID`` of a serving-stack EV_EVENT_TAG event: "nomy" read as a big-endian number.
SERVING_STACK_TAG = 0x6E6F6D79

#: Event type EV_PREBOOT_CERT (TCG PC Client Platform Firmware Profile, 10.4.1).
EV_PREBOOT_CERT = 0x00000000
#: Event type EV_POST_CODE (TCG PC Client Platform Firmware Profile, 10.4.1).
EV_POST_CODE = 0x00000001
#: Event type EV_UNUSED (TCG PC Client Platform Firmware Profile, 10.4.1).
EV_UNUSED = 0x00000002
#: Event type EV_NO_ACTION (TCG PC Client Platform Firmware Profile, 10.4.1).
EV_NO_ACTION = 0x00000003
#: Event type EV_SEPARATOR (TCG PC Client Platform Firmware Profile, 10.4.1).
EV_SEPARATOR = 0x00000004
#: Event type EV_ACTION (TCG PC Client Platform Firmware Profile, 10.4.1).
EV_ACTION = 0x00000005
#: Event type EV_EVENT_TAG (TCG PC Client Platform Firmware Profile, 10.4.1).
EV_EVENT_TAG = 0x00000006
#: Event type EV_S_CRTM_CONTENTS (TCG PC Client Platform Firmware Profile, 10.4.1).
EV_S_CRTM_CONTENTS = 0x00000007
#: Event type EV_S_CRTM_VERSION (TCG PC Client Platform Firmware Profile, 10.4.1).
EV_S_CRTM_VERSION = 0x00000008
#: Event type EV_CPU_MICROCODE (TCG PC Client Platform Firmware Profile, 10.4.1).
EV_CPU_MICROCODE = 0x00000009
#: Event type EV_PLATFORM_CONFIG_FLAGS (TCG PC Client Platform Firmware Profile, 10.4.1).
EV_PLATFORM_CONFIG_FLAGS = 0x0000000A
#: Event type EV_TABLE_OF_DEVICES (TCG PC Client Platform Firmware Profile, 10.4.1).
EV_TABLE_OF_DEVICES = 0x0000000B
#: Event type EV_COMPACT_HASH (TCG PC Client Platform Firmware Profile, 10.4.1).
EV_COMPACT_HASH = 0x0000000C
#: Event type EV_IPL (TCG PC Client Platform Firmware Profile, 10.4.1).
EV_IPL = 0x0000000D
#: Event type EV_IPL_PARTITION_DATA (TCG PC Client Platform Firmware Profile, 10.4.1).
EV_IPL_PARTITION_DATA = 0x0000000E
#: Event type EV_NONHOST_CODE (TCG PC Client Platform Firmware Profile, 10.4.1).
EV_NONHOST_CODE = 0x0000000F
#: Event type EV_NONHOST_CONFIG (TCG PC Client Platform Firmware Profile, 10.4.1).
EV_NONHOST_CONFIG = 0x00000010
#: Event type EV_NONHOST_INFO (TCG PC Client Platform Firmware Profile, 10.4.1).
EV_NONHOST_INFO = 0x00000011
#: Event type EV_OMIT_BOOT_DEVICE_EVENTS (TCG PC Client Platform Firmware Profile, 10.4.1).
EV_OMIT_BOOT_DEVICE_EVENTS = 0x00000012
#: Event type EV_POST_CODE2 (TCG PC Client Platform Firmware Profile, 10.4.1).
EV_POST_CODE2 = 0x00000013
#: Event type EV_EFI_EVENT_BASE (TCG PC Client Platform Firmware Profile, 10.4.1).
EV_EFI_EVENT_BASE = 0x80000000
#: Event type EV_EFI_VARIABLE_DRIVER_CONFIG (TCG PC Client Platform Firmware Profile, 10.4.1).
EV_EFI_VARIABLE_DRIVER_CONFIG = 0x80000001
#: Event type EV_EFI_VARIABLE_BOOT (TCG PC Client Platform Firmware Profile, 10.4.1).
EV_EFI_VARIABLE_BOOT = 0x80000002
#: Event type EV_EFI_BOOT_SERVICES_APPLICATION (TCG PC Client Platform Firmware Profile, 10.4.1).
EV_EFI_BOOT_SERVICES_APPLICATION = 0x80000003
#: Event type EV_EFI_BOOT_SERVICES_DRIVER (TCG PC Client Platform Firmware Profile, 10.4.1).
EV_EFI_BOOT_SERVICES_DRIVER = 0x80000004
#: Event type EV_EFI_RUNTIME_SERVICES_DRIVER (TCG PC Client Platform Firmware Profile, 10.4.1).
EV_EFI_RUNTIME_SERVICES_DRIVER = 0x80000005
#: Event type EV_EFI_GPT_EVENT (TCG PC Client Platform Firmware Profile, 10.4.1).
EV_EFI_GPT_EVENT = 0x80000006
#: Event type EV_EFI_ACTION (TCG PC Client Platform Firmware Profile, 10.4.1).
EV_EFI_ACTION = 0x80000007
#: Event type EV_EFI_PLATFORM_FIRMWARE_BLOB (TCG PC Client Platform Firmware Profile, 10.4.1).
EV_EFI_PLATFORM_FIRMWARE_BLOB = 0x80000008
#: Event type EV_EFI_HANDOFF_TABLES (TCG PC Client Platform Firmware Profile, 10.4.1).
EV_EFI_HANDOFF_TABLES = 0x80000009
#: Event type EV_EFI_PLATFORM_FIRMWARE_BLOB2 (TCG PC Client Platform Firmware Profile, 10.4.1).
EV_EFI_PLATFORM_FIRMWARE_BLOB2 = 0x8000000A
#: Event type EV_EFI_HANDOFF_TABLES2 (TCG PC Client Platform Firmware Profile, 10.4.1).
EV_EFI_HANDOFF_TABLES2 = 0x8000000B
#: Event type EV_EFI_VARIABLE_BOOT2 (TCG PC Client Platform Firmware Profile, 10.4.1).
EV_EFI_VARIABLE_BOOT2 = 0x8000000C
#: Event type EV_EFI_GPT_EVENT2 (TCG PC Client Platform Firmware Profile, 10.4.1).
EV_EFI_GPT_EVENT2 = 0x8000000D
#: Event type EV_EFI_HCRTM_EVENT (TCG PC Client Platform Firmware Profile, 10.4.1).
EV_EFI_HCRTM_EVENT = 0x80000010
#: Event type EV_EFI_VARIABLE_AUTHORITY (TCG PC Client Platform Firmware Profile, 10.4.1).
EV_EFI_VARIABLE_AUTHORITY = 0x800000E0
#: Event type EV_EFI_SPDM_FIRMWARE_BLOB (TCG PC Client Platform Firmware Profile, 10.4.1).
EV_EFI_SPDM_FIRMWARE_BLOB = 0x800000E1
#: Event type EV_EFI_SPDM_FIRMWARE_CONFIG (TCG PC Client Platform Firmware Profile, 10.4.1).
EV_EFI_SPDM_FIRMWARE_CONFIG = 0x800000E2

#: Every event type this package names: value -> "EV_..." (an unknown type shows as "0x%08x").
EVENT_TYPE_NAMES: dict[int, str] = {
    value: name
    for name, value in sorted(globals().items())
    if name.startswith("EV_") and isinstance(value, int)
}

#: TPM_ALG_ID -> (bank name, digest size) for the digest algorithms a log may carry.
ALGORITHMS: dict[int, tuple[str, int]] = {
    0x0004: ("sha1", 20),
    0x000B: ("sha256", 32),
    0x000C: ("sha384", 48),
    0x000D: ("sha512", 64),
    0x0012: ("sm3_256", 32),
    0x0027: ("sha3_256", 32),
    0x0028: ("sha3_384", 48),
    0x0029: ("sha3_512", 64),
}
ALGORITHM_IDS: dict[str, int] = {name: alg for alg, (name, _) in ALGORITHMS.items()}
DIGEST_SIZES: dict[str, int] = {name: size for name, size in ALGORITHMS.values()}
_HASHLIB_NAMES = {"sm3_256": "sm3"}


def hasher(bank: str) -> Callable[[bytes], Any] | None:
    """A hash constructor for ``bank`` (``hasher("sha256")(data).digest()``), or None if unavailable."""
    name = _HASHLIB_NAMES.get(bank, bank)
    if bank not in DIGEST_SIZES:
        return None
    try:
        hashlib.new(name)
    except ValueError:
        return None
    return functools.partial(hashlib.new, name)


def digest(bank: str, data: bytes) -> bytes:
    """H_bank(data); ``bank`` must be one :func:`hasher` supports."""
    make = hasher(bank)
    if make is None:
        raise ValueError(f"no hash function for bank {bank!r}")
    result: bytes = make(data).digest()
    return result


def type_name(event_type: int) -> str:
    """``"EV_SEPARATOR"``, or ``"0x%08x"`` for a type this package does not name."""
    return EVENT_TYPE_NAMES.get(event_type, f"0x{event_type:08x}")
