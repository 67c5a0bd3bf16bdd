"""One way to write a file that matters (keys, public keys, reports): explicit mode, no symlinks.

:func:`write_file` never writes through a link an attacker placed beforehand and never
replaces an existing file unless asked:

* by default the file is created exclusively (``O_CREAT | O_EXCL | O_NOFOLLOW``): an
  existing file, or a symlink even to nowhere, is refused;
* with ``overwrite=True`` the bytes go to a fresh temporary file beside it, which is
  renamed over the target; a rename replaces a symlink itself, never what it points to;
* the mode is set explicitly (``fchmod``, so the umask cannot widen or narrow it) before
  any byte is written, and data and directory are fsynced so the file survives a crash.

Failures are :class:`nomyo_audit.errors.ConfigurationError` (exit 2) that name the path.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from .errors import ConfigurationError

__all__ = ["FileExistsRefused", "write_file"]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class FileExistsRefused(ConfigurationError):
    """The target exists (or is a symlink) and overwriting was not asked for."""

    code = "file_exists"


def write_file(path: str | os.PathLike[str], data: bytes, *, mode: int, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` with permissions exactly ``mode``; return the path.

    Without ``overwrite`` an existing file or symlink at ``path`` is refused
    (:class:`FileExistsRefused`). With it, the file is replaced atomically; a
    symlink or a directory at ``path`` is still refused, so the caller never
    writes somewhere other than where it said.
    """
    target = Path(path)
    try:
        if overwrite:
            _refuse_link_or_directory(target)
            _replace(target, data, mode)
        else:
            _create(target, data, mode)
        _fsync_directory(target.parent)
    except FileExistsError:
        raise FileExistsRefused(f"refusing to overwrite existing file {target}") from None
    except OSError as exc:
        raise ConfigurationError(f"cannot write {target}: {exc.strerror or exc}") from None
    return target


def _create(target: Path, data: bytes, mode: int) -> None:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, mode)
    try:
        _fill(fd, data, mode)
    except BaseException:
        os.close(fd)
        target.unlink(missing_ok=True)
        raise
    os.close(fd)


def _replace(target: Path, data: bytes, mode: int) -> None:
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")
    _create(temporary, data, mode)
    try:
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _fill(fd: int, data: bytes, mode: int) -> None:
    os.fchmod(fd, mode)  # exactly this mode, whatever the umask
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
    os.fsync(fd)


def _refuse_link_or_directory(target: Path) -> None:
    try:
        status = os.lstat(target)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(status.st_mode):
        raise ConfigurationError(f"refusing to write {target}: it is a symbolic link")
    if not stat.S_ISREG(status.st_mode):
        raise ConfigurationError(f"refusing to write {target}: it is not a regular file")


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | _CLOEXEC)
    except OSError:
        return  # some platforms cannot open a directory; the file itself is synced
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
