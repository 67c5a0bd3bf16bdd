"""Best-effort protection of secrets in memory: locking pages and zeroing buffers.

Python gives no real control over where secrets live: ``json``, ``httpx`` and
OpenSSL all make copies this module never sees. So what it offers is modest
and stated plainly by :func:`get_memory_protection_info`, which reports what is
*actually* active in this process rather than what the platform could do:

* :func:`wipe` overwrites a buffer in place (``bytearray``, and as a CPython
  best effort, fresh ``bytes`` objects that the caller owns);
* :func:`lock` ``mlock``\\ s a ``bytearray``'s pages so they are not swapped out;
* :func:`prevent_core_dumps` sets ``RLIMIT_CORE`` to 0 (servers call it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import platform
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

__all__ = ["get_memory_protection_info", "lock", "prevent_core_dumps", "secure_buffer", "unlock", "wipe"]

_PAGE = mmap.PAGESIZE
# Offset of the first data byte in a CPython bytes object (ob_sval).
_BYTES_DATA_OFFSET = sys.getsizeof(b"") - 1


@lru_cache(maxsize=1)
def _libc() -> Any:
    if sys.platform.startswith("linux") or sys.platform == "darwin":
        name = ctypes.util.find_library("c") or ("libc.so.6" if sys.platform.startswith("linux") else None)
        if name:
            try:
                lib = ctypes.CDLL(name, use_errno=True)
                lib.mlock.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
                lib.munlock.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
                return lib
            except (OSError, AttributeError):
                return None
    return None


def wipe(buf: bytes | bytearray | memoryview | None) -> None:
    """Overwrite ``buf`` with zeros, in place.

    ``bytes`` are immutable by contract; they are only zeroed on CPython, and
    only when longer than one byte (one-byte and empty objects are shared
    interpreter singletons). Callers pass only objects they created.
    """
    if buf is None or len(buf) == 0:
        return
    if isinstance(buf, bytearray):
        ctypes.memset((ctypes.c_char * len(buf)).from_buffer(buf), 0, len(buf))
    elif isinstance(buf, memoryview):
        if not buf.readonly:
            buf[:] = bytes(len(buf))
    elif isinstance(buf, bytes) and len(buf) > 1 and platform.python_implementation() == "CPython":
        ctypes.memset(id(buf) + _BYTES_DATA_OFFSET, 0, len(buf))


def _page_span(buf: bytearray) -> tuple[int, int]:
    addr = ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf))
    start = addr - addr % _PAGE
    return start, addr + len(buf) - start


def lock(buf: bytearray) -> bool:
    """``mlock`` the pages of ``buf``; return whether it worked."""
    lib = _libc()
    if lib is None or not buf:
        return False
    start, size = _page_span(buf)
    return bool(lib.mlock(ctypes.c_void_p(start), ctypes.c_size_t(size)) == 0)


def unlock(buf: bytearray) -> None:
    lib = _libc()
    if lib is not None and buf:
        start, size = _page_span(buf)
        lib.munlock(ctypes.c_void_p(start), ctypes.c_size_t(size))


@contextmanager
def secure_buffer(buf: bytearray, *, locked: bool = True) -> Iterator[bytearray]:
    """Hold a secret: pages locked while in use (when ``locked``), zeroed on exit, always."""
    did_lock = lock(buf) if locked else False
    try:
        yield buf
    finally:
        wipe(buf)
        if did_lock:
            unlock(buf)


def prevent_core_dumps() -> bool:
    """Set the core-file limit to 0 so a crash cannot write secrets to disk."""
    try:
        import resource
    except ImportError:  # Windows
        return False
    try:
        _, hard = resource.getrlimit(resource.RLIMIT_CORE)
        resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
    except (ValueError, OSError):
        return False
    return _core_dumps_disabled()


def _core_dumps_disabled() -> bool:
    try:
        import resource
    except ImportError:
        return False
    return resource.getrlimit(resource.RLIMIT_CORE)[0] == 0


@lru_cache(maxsize=1)
def _mlock_works() -> bool:
    probe = bytearray(64)
    ok = lock(probe)
    if ok:
        unlock(probe)
    return ok


def get_memory_protection_info() -> dict[str, Any]:
    """What this process really has, probed rather than assumed.

    The keys of ``nomyo``'s function of the same name, plus
    ``core_dump_prevention``.
    """
    locking = _mlock_works()
    zeroing = platform.python_implementation() == "CPython"
    level = "full" if locking and zeroing else ("zeroing_only" if zeroing else "none")
    return {
        "enabled": True,
        "platform": sys.platform if not sys.platform.startswith("linux") else "linux",
        "protection_level": level,
        "has_memory_locking": locking,
        "has_secure_zeroing": zeroing,
        "supports_full_protection": level == "full",
        "core_dump_prevention": _core_dumps_disabled(),
        "page_size": _PAGE,
    }
