"""Run a software TPM (swtpm) on a free loopback port: for tests, the demo and benchmarks."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from ..errors import ConfigurationError
from ._swtpm_ca import manufacture, store_chain, tools_available

__all__ = ["SwtpmProcess", "swtpm_available"]


def swtpm_available() -> bool:
    """Whether the ``swtpm`` binary is on PATH (tests and the demo fall back without it)."""
    return shutil.which("swtpm") is not None


def _free_port_pair(host: str) -> int:
    """A port P with P+1 also free (swtpm wants the control channel beside the server)."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind((host, 0))
            port = first.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket() as second:
                try:
                    second.bind((host, port + 1))
                except OSError:
                    continue
                return int(port)
    raise ConfigurationError("no free pair of loopback ports for swtpm")


class SwtpmProcess:
    """``with SwtpmProcess() as tpm: tpm.spec`` -> ``"swtpm:host=127.0.0.1,port=N"``.

    A fresh TPM (new state directory) each time, started with TPM2_Startup
    done, stopped and removed on exit. :meth:`start` raises
    :class:`nomyo_audit.errors.ConfigurationError` when swtpm is missing or does not start.

    With ``ek_certificates`` (the default, when swtpm_setup is installed) the TPM is manufactured
    with EK certificates signed by a local CA (:mod:`._swtpm_ca`), which plays the TPM
    manufacturer: :attr:`ca_root_path` is its root certificate (PEM), for a verifier to trust.
    """

    def __init__(self, host: str = "127.0.0.1", *, ek_certificates: bool = True) -> None:
        self.host = host
        self.port = 0
        self.ek_certificates = ek_certificates and tools_available()
        #: the local CA's root certificate (PEM) that the EK certificates chain to; None without them
        self.ca_root_path: Path | None = None
        #: the local CA's intermediate (PEM), also stored in the TPM's EK certificate chain index
        self.ca_intermediate_path: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._state: tempfile.TemporaryDirectory[str] | None = None

    @property
    def spec(self) -> str:
        """The ``--tpm`` value that reaches this swtpm (``swtpm:host=127.0.0.1,port=N``)."""
        return f"swtpm:host={self.host},port={self.port}"

    def start(self) -> SwtpmProcess:
        """Start swtpm on a free pair of loopback ports and wait until it listens."""
        binary = shutil.which("swtpm")
        if binary is None:
            raise ConfigurationError("swtpm is not installed (Debian: apt-get install swtpm swtpm-tools)")
        self._state = tempfile.TemporaryDirectory(prefix="nomyo-swtpm-")
        tpm_state = Path(self._state.name) / "tpm"
        tpm_state.mkdir()
        if self.ek_certificates:
            ca = manufacture(tpm_state, Path(self._state.name) / "ca")
            self.ca_root_path, self.ca_intermediate_path = ca.root, ca.intermediate
        for _ in range(5):
            self.port = _free_port_pair(self.host)
            self._proc = subprocess.Popen(
                [
                    binary,
                    "socket",
                    "--tpm2",
                    "--server",
                    f"type=tcp,port={self.port},bindaddr={self.host}",
                    "--ctrl",
                    f"type=tcp,port={self.port + 1},bindaddr={self.host}",
                    "--tpmstate",
                    f"dir={tpm_state}",
                    "--flags",
                    "not-need-init,startup-clear",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env={**os.environ},
            )
            if self._wait_listening():
                if self.ca_intermediate_path is not None:
                    store_chain(self.spec, self.ca_intermediate_path)
                return self
            self._proc.kill()
            self._proc.wait()
        stderr = self._proc.stderr.read().decode(errors="replace") if self._proc and self._proc.stderr else ""
        raise ConfigurationError(f"swtpm did not start: {stderr.strip()[:300]}")

    def _wait_listening(self) -> bool:
        assert self._proc is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return True
            except OSError:
                time.sleep(0.02)
        return False

    def stop(self) -> None:
        """Stop swtpm and remove its state; safe to call twice."""
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            if self._proc.stderr is not None:
                self._proc.stderr.close()
            self._proc = None
        if self._state is not None:
            self._state.cleanup()
            self._state = None

    def __enter__(self) -> SwtpmProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
