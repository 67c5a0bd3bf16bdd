"""What every gate on the audit log notices: tampered columns, metadata, signers, rollback,
damaged files, read-only opening, and files written with explicit modes through no symlink."""

from __future__ import annotations

import os
import stat

import pytest

from nomyo_audit._files import FileExistsRefused, write_file
from nomyo_audit.errors import ConfigurationError, ExitCode

# -- one writer for files that matter (nomyo_audit/_files.py) -----------------------------------------


def test_write_file_creates_exclusively_with_the_mode_asked(tmp_path):
    old = os.umask(0o077)
    try:
        written = write_file(tmp_path / "report.json", b"{}", mode=0o644)
    finally:
        os.umask(old)
    assert written.read_bytes() == b"{}"
    assert stat.S_IMODE(written.stat().st_mode) == 0o644  # explicit, not what the umask left
    with pytest.raises(FileExistsRefused, match="refusing to overwrite"):
        write_file(written, b"other", mode=0o644)
    assert written.read_bytes() == b"{}"


def test_write_file_never_follows_a_planted_symlink(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    link = tmp_path / "audit.key"
    link.symlink_to(victim)
    dangling = tmp_path / "dangling.key"
    dangling.symlink_to(tmp_path / "nowhere")
    for target in (link, dangling):
        with pytest.raises(ConfigurationError):
            write_file(target, b"secret", mode=0o600)
        with pytest.raises(ConfigurationError, match="symbolic link"):
            write_file(target, b"secret", mode=0o600, overwrite=True)
    assert victim.read_bytes() == b"keep" and not (tmp_path / "nowhere").exists()


def test_write_file_overwrite_replaces_atomically_with_the_new_mode(tmp_path):
    target = tmp_path / "report.html"
    target.write_bytes(b"old")
    target.chmod(0o666)
    write_file(target, b"new", mode=0o640, overwrite=True)
    assert target.read_bytes() == b"new" and stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]  # no temporary left


def test_write_file_into_a_missing_directory_is_a_usage_error(tmp_path):
    with pytest.raises(ConfigurationError, match="cannot write") as caught:
        write_file(tmp_path / "missing" / "r.json", b"{}", mode=0o644)
    assert caught.value.exit_code == ExitCode.USAGE
