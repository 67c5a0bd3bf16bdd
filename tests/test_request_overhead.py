"""Per-request work that is no part of the protocol: a completion in steady state imports nothing.

httpcore (under httpx) runs ``import sniffio`` for every lock and event it sets up, several times
per request. Without the package installed, each of those is a failed import that searches every
``sys.path`` entry again (failed imports are not cached): about 0.3 ms of CPU per request on the
CI machine, more than protocol 2's whole cryptography on one side. nomyo-audit depends on
``sniffio`` for that reason; this test fails when an import is attempted per request again.
"""

from __future__ import annotations

import asyncio
import importlib.abc
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import pytest

from nomyo_audit import SecureChatCompletion

HELLO = [{"role": "user", "content": "hello"}]


class _ImportWatch(importlib.abc.MetaPathFinder):
    """Records every module name the import system has to search for (never finds one itself)."""

    def __init__(self) -> None:
        self.searched: list[str] = []

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> None:
        self.searched.append(fullname)
        return None


@contextmanager
def _imports_searched() -> Iterator[list[str]]:
    watch = _ImportWatch()
    sys.meta_path.insert(0, watch)
    try:
        yield watch.searched
    finally:
        sys.meta_path.remove(watch)


async def _steady_state_searches(router_url: str, protocol: str, client_keys_dir: Any) -> list[str]:
    async with SecureChatCompletion(
        router_url, allow_http=True, protocol=protocol, key_dir=str(client_keys_dir)
    ) as client:
        for _ in range(2):  # warm up: keys, the router key or key configuration, the connection
            await client.create("echo", HELLO)
        with _imports_searched() as searched:
            for _ in range(3):
                await client.create("echo", HELLO)
        return searched


def test_a_protocol_2_completion_imports_nothing(router, client_keys_dir):
    assert asyncio.run(_steady_state_searches(router.url, "2", client_keys_dir)) == []


def test_a_protocol_1_completion_imports_nothing(router, client_keys_dir):
    assert asyncio.run(_steady_state_searches(router.url, "1.0", client_keys_dir)) == []


def test_a_deadline_runs_the_work_in_the_callers_task():
    """``within`` costs no task of its own (asyncio.wait_for on 3.11 wraps the work in a new task:
    about 70 us of client CPU per completion for the two deadlines each call passes through)."""
    from nomyo_audit.client._errors import within

    async def current() -> asyncio.Task[Any] | None:
        return asyncio.current_task()

    async def main() -> tuple[asyncio.Task[Any] | None, asyncio.Task[Any] | None]:
        return asyncio.current_task(), await within(5.0, current(), "the work")

    caller, worker = asyncio.run(main())
    if sys.version_info >= (3, 11):  # asyncio.timeout; 3.10 has only wait_for, which needs a task
        assert worker is caller


def test_a_deadline_still_interrupts_work_that_waits():
    from nomyo_audit import APITimeoutError
    from nomyo_audit.client._errors import within

    async def main() -> None:
        await within(0.05, asyncio.sleep(10), "the slow work")

    with pytest.raises(APITimeoutError, match=r"the slow work did not complete within 0\.05 s"):
        asyncio.run(main())
