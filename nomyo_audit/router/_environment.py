"""What the router reports about itself in ``_metadata``: probed, never assumed."""

from __future__ import annotations

import glob
import hashlib
import re
from typing import Any

from .._memory import get_memory_protection_info

__all__ = ["cuda_device_info", "memory_protection_metadata"]


def memory_protection_metadata() -> dict[str, Any]:
    """The seed document's ``memory_protection`` block for this process."""
    info = get_memory_protection_info()
    return {
        "platform": info["platform"],
        "memory_locking": info["has_memory_locking"],
        "secure_zeroing": info["has_secure_zeroing"],
        "core_dump_prevention": info["core_dump_prevention"],
    }


def cuda_device_info(proc_root: str = "/proc/driver/nvidia/gpus") -> dict[str, Any]:
    """``{available, device_hash}``: the GPU model name hashed, never the raw name."""
    for info_file in sorted(glob.glob(f"{proc_root}/*/information")):
        try:
            with open(info_file, encoding="utf-8", errors="replace") as fh:
                text = fh.read()
        except OSError:
            continue
        match = re.search(r"^Model:\s*(.+)$", text, re.MULTILINE)
        if match:
            name = match.group(1).strip()
            return {"available": True, "device_hash": hashlib.sha256(name.encode()).hexdigest()}
    return {"available": False, "device_hash": None}
