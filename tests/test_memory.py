"""Secure memory: zeroing really zeroes, and the info reports what is active."""

import sys

from nomyo_audit._memory import get_memory_protection_info, lock, unlock, wipe


def test_wipe_bytearray():
    buf = bytearray(b"secret key material")
    wipe(buf)
    assert buf == bytearray(len(buf))


def test_wipe_fresh_bytes_on_cpython():
    data = bytes(bytearray(b"another secret"))
    wipe(data)
    if sys.implementation.name == "cpython":
        assert data == bytes(len(data))


def test_wipe_leaves_shared_singletons_alone():
    single = b"a"
    wipe(single)
    wipe(b"")
    assert single == b"a"


def test_info_matches_a_real_probe():
    info = get_memory_protection_info()
    assert {
        "platform",
        "has_memory_locking",
        "has_secure_zeroing",
        "core_dump_prevention",
        "protection_level",
        "supports_full_protection",
        "page_size",
    } <= set(info)
    probe = bytearray(32)
    locked = lock(probe)
    unlock(probe)
    assert info["has_memory_locking"] == locked


def test_secure_buffer_wipes_on_exit_even_on_error():
    from nomyo_audit._memory import secure_buffer

    buf = bytearray(b"aes key bytes here")
    try:
        with secure_buffer(buf) as held:
            assert held is buf and held == bytearray(b"aes key bytes here")
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert buf == bytearray(len(buf))
