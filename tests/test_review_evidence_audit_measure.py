"""Review R3: ``serve --measure-model`` and the code manifest on files that are not regular files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nomyo_audit.errors import ConfigurationError
from nomyo_audit.router._serving_stack import manifest_digest, weights_digest


def run_serve(*args: str) -> subprocess.CompletedProcess[str]:
    """``nomyo-audit serve`` as a process: a hang is a timeout here, not a stuck test run."""
    command = [str(Path(sys.executable).parent / "nomyo-audit"), "serve", "--port", "0", "--tpm", "software"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_measure_model_refuses_a_fifo_or_a_device_with_exit_2_and_does_not_hang(tmp_path, kind):
    if kind == "fifo":
        target = tmp_path / "weights.fifo"
        os.mkfifo(target)
    else:
        target = Path("/dev/zero")
    result = run_serve("--measure-model", f"m={target}")
    assert result.returncode == 2, result.stderr
    assert "not a regular file" in result.stderr and "Traceback" not in result.stderr


def test_a_fifo_or_device_link_in_a_weights_directory_is_refused(tmp_path):
    (tmp_path / "a.safetensors").write_bytes(b"a")
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(ConfigurationError, match="not a regular file"):
        weights_digest(tmp_path)
    os.unlink(tmp_path / "pipe")
    (tmp_path / "zero").symlink_to("/dev/zero")
    with pytest.raises(ConfigurationError, match="not a regular file"):
        manifest_digest(tmp_path)


def test_a_directory_that_cannot_be_listed_fails_instead_of_measuring_nothing(tmp_path):
    # os.walk skips what it cannot list unless told otherwise: a missing (or unreadable) directory
    # measured as the digest of no files would be a weights digest of nothing at all
    with pytest.raises(ConfigurationError, match="gone"):
        manifest_digest(tmp_path / "gone")
