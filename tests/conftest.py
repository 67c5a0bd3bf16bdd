"""Shared fixtures: real routers on loopback, real keys, the real reference client."""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nomyo_audit.client._keys import KeyPair, generate_key_pair, save_key_pair
from nomyo_audit.router import EchoBackend, RouterConfig, RouterThread

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
#: TEST ONLY: production's other rules for the software attester, which production denies on aik_trust
PRODUCTION_UNANCHORED = str(FIXTURES / "policies" / "production-unanchored.yaml")
IN_CI = bool(os.environ.get("CI"))


def require(condition: bool, reason: str) -> None:
    """Skip locally when a real component is missing; in CI, fail instead."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def router_keys() -> KeyPair:
    return generate_key_pair()


@pytest.fixture(scope="session")
def client_keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One client key pair on disk for the session (RSA-4096 takes ~0.5 s to make)."""
    directory = tmp_path_factory.mktemp("client-keys")
    save_key_pair(generate_key_pair(), directory)
    return directory


class RecordingBackend(EchoBackend):
    """The echo model, keeping every decrypted payload the router received."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []

    async def complete(self, payload: dict[str, Any]) -> dict[str, Any]:
        self.payloads.append(payload)
        return await super().complete(payload)


@pytest.fixture
def make_router(router_keys: KeyPair) -> Iterator[Callable[..., RouterThread]]:
    started: list[RouterThread] = []

    def make(**overrides: Any) -> RouterThread:
        overrides.setdefault("backend", RecordingBackend())
        router = RouterThread(RouterConfig(private_key=router_keys.private_key, **overrides)).start()
        started.append(router)
        return router

    yield make
    for router in started:
        router.stop()


@pytest.fixture
def router(make_router: Callable[..., RouterThread]) -> RouterThread:
    return make_router()


@pytest.fixture(scope="session")
def nomyo_reference() -> Any:
    """The real ``nomyo`` 0.2.9 from PyPI (installed by scripts/test.sh)."""
    path = os.environ.get("NOMYO_REFERENCE_PATH") or str(REPO / ".cache" / "nomyo-0.2.9")
    require(Path(path, "nomyo", "__init__.py").exists(), f"nomyo 0.2.9 not installed at {path}")
    sys.path.insert(0, path)
    try:
        module = importlib.import_module("nomyo")
    finally:
        sys.path.remove(path)
    assert module.__version__ == "0.2.9"
    return module


@pytest.fixture(scope="session")
def swtpm() -> Iterator[Any]:
    """A real swtpm on a free loopback port, for the session (fails, never skips, in CI)."""
    from nomyo_audit.attest._swtpm import SwtpmProcess, swtpm_available

    try:
        import tpm2_pytss  # noqa: F401

        pytss = True
    except ImportError:
        pytss = False
    require(swtpm_available(), "swtpm is not installed")
    require(pytss, "tpm2-pytss (the 'tpm' extra) is not installed")
    require(shutil.which("tpm2_checkquote") is not None, "tpm2-tools is not installed")
    with SwtpmProcess() as process:
        yield process


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """A real PostgreSQL server (tests/postgres_server.py, relaxed fsync) for the session; fails in CI."""
    from postgres_server import PostgresServer, PostgresUnavailable

    try:
        server = PostgresServer().start()
    except PostgresUnavailable as exc:
        require(False, str(exc))
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: Any) -> Iterator[str]:
    """A fresh empty database on the session's server, dropped after the test."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url.rsplit("/", 1)[1])
