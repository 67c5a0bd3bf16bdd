"""Write the log's latest signed checkpoint as static C2SP tlog-tiles into a directory.

The layout is the one a tile client fetches below the log's URL prefix (``checkpoint``,
``tile/<L>/<N>[.p/<W>]``, ``tile/entries/<N>[.p/<W>]``), so any static web server can
serve the directory. Rules the writer keeps:

* the log is verified first (every record rehashed, every checkpoint checked, and the
  checkpoint already published in the directory must be a prefix of it): a log that does
  not verify, or that rolled back or forked from what was published, is an
  :class:`nomyo_audit.errors.IntegrityError` and nothing is written;
* only resources new since the published checkpoint are written; full tiles never change,
  so they are never rewritten;
* one publisher at a time per directory (``flock`` on the directory itself, held from reading
  the published checkpoint to writing the new one): a slower run that verified an older
  checkpoint can never publish it over a newer one another run published meanwhile;
* the tiles are written into a staging directory and renamed into place only once the whole
  stream gave the checkpoint's root (the records may change after verifying), and every
  file is written atomically (a temporary file renamed over the target), the
  ``checkpoint`` last, so a reader never sees half a tile nor a checkpoint whose tiles are
  not there yet; an interrupted run leaves the previous checkpoint published.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .._files import write_file
from ..errors import IntegrityError
from ._log import AuditLog
from ._note import Checkpoint, parse_checkpoint, verify_checkpoint
from ._store import LogError, missing
from ._tiles import TileBuilder, TileRef, new_tiles

__all__ = ["PublishedTiles", "publish_tiles", "published_checkpoint"]

#: Tiles are public data: readable by the web server that serves them.
_MODE = 0o644
#: A published checkpoint larger than this is not one we wrote.
_MAX_CHECKPOINT = 64 * 1024


@dataclass
class PublishedTiles:
    """What :func:`publish_tiles` did: the size published and the files it wrote (paths below DIR)."""

    size: int
    previous_size: int
    written: list[str] = field(default_factory=list)


def published_checkpoint(directory: Path) -> str | None:
    """The checkpoint note a directory publishes, or None when it has none yet."""
    path = directory / "checkpoint"
    try:
        with open(path, "rb") as fh:
            data = fh.read(_MAX_CHECKPOINT + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LogError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > _MAX_CHECKPOINT:
        raise LogError(f"{path} is not a checkpoint (over {_MAX_CHECKPOINT} bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise LogError(f"{path} is not a checkpoint (not UTF-8)") from None


def publish_tiles(
    log: AuditLog, directory: Path, public_key: Ed25519PublicKey | None = None
) -> PublishedTiles:
    """Publish the log's latest signed checkpoint and its tiles into ``directory``.

    ``public_key`` is the trusted signer (else the key the log names). The checkpoint is
    the latest one that verified, with the witnesses' cosignatures when the log's meta
    ``cosigned_checkpoint`` holds that checkpoint. Raises :class:`IntegrityError` (exit 3)
    when the log does not verify or is not an extension of what ``directory`` publishes,
    :class:`LogError` (exit 2) when the log has no signed checkpoint, ``directory`` holds
    another log's tiles, or a record is too long for an entry bundle
    (``tile_entry_too_large``).
    """
    with _exclusive(directory):
        return _publish(log, directory, public_key)


@contextmanager
def _exclusive(directory: Path) -> Iterator[None]:
    """Hold the directory's ``flock`` (other publishers wait): no lock file is needed or served."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise LogError(f"cannot open {directory}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _publish(log: AuditLog, directory: Path, public_key: Ed25519PublicKey | None) -> PublishedTiles:
    key = public_key or log.public_key()
    previous = published_checkpoint(directory)
    old = _parse_published(previous, directory, log.origin)
    report = log.verify(public_key)
    if not report.ok:
        shown = "; ".join(report.problems[:5])
        raise IntegrityError(f"the audit log does not verify, so no tiles were written: {shown}")
    latest = report.checkpoint
    if latest is None or key is None:
        raise LogError("the log has no signed checkpoint to publish: run 'nomyo-audit log checkpoint' first")
    if old.size > latest.size:
        raise IntegrityError(
            f"{directory} publishes size {old.size}, but the log's latest checkpoint is size {latest.size} "
            "(its newer checkpoints were removed?); nothing was written"
        )
    note = _with_cosignatures(log, latest.note, key)
    result = PublishedTiles(latest.size, old.size)
    if (old.size, old.root) != (latest.size, latest.root):  # else: only cosignatures may be new
        wanted = set(new_tiles(old.size, latest.size))
        staging = directory / f".staging-{secrets.token_hex(8)}"
        try:
            _write_tiles(log, staging, (old, latest.size, latest.root), wanted, result)
            _move_into_place(staging, directory, result.written)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    if note != previous:
        _write(directory, "checkpoint", note.encode(), result)
    return result


def _parse_published(note: str | None, directory: Path, origin: str) -> Checkpoint:
    if note is None:
        return Checkpoint(origin, 0, b"")
    try:
        published = parse_checkpoint(note)[0]
    except ValueError as exc:  # NoteError, or a size too long for int()
        raise LogError(f"{directory}/checkpoint is not a checkpoint: {exc}") from None
    if published.origin != origin:
        raise LogError(
            f"{directory} publishes the log {published.origin!r}, not {origin!r}: use another directory"
        )
    return published


def _with_cosignatures(log: AuditLog, note: str, key: Ed25519PublicKey) -> str:
    """The cosigned form of ``note`` from the log's meta, when it is the same checkpoint, else ``note``.

    The cosignatures themselves are the witnesses' to check (a client verifies them against
    the witness keys it trusts); here the note must only carry the same signed body and a
    valid signature by the log's key, so serving it never changes what the log signed.
    """
    raw = log.store.meta("cosigned_checkpoint")
    if not raw:
        return note
    try:
        cosigned = raw.decode("utf-8")
        if cosigned.partition("\n\n")[0] != note.partition("\n\n")[0]:
            return note
        verify_checkpoint(cosigned, key)
    except ValueError:  # not UTF-8, not a checkpoint
        return note
    return cosigned


def _write_tiles(
    log: AuditLog,
    directory: Path,
    sizes: tuple[Checkpoint, int, bytes],
    wanted: set[TileRef],
    result: PublishedTiles,
) -> None:
    """Stream the records 0..size-1 through a :class:`TileBuilder`, writing the wanted tiles.

    Every wanted tile ends after the published size, so the published root is checked
    against the records before the first write: a fork writes nothing.
    """
    old, size, root = sizes
    builder = TileBuilder()
    if size:
        for seq, _, _, data, _ in log.store.scan():
            if seq != builder.size or type(data) is not bytes:
                raise IntegrityError(missing(builder.size, seq) if seq != builder.size else f"record {seq}")
            if builder.size == old.size and old.size and builder.frontier.root() != old.root:
                raise _forked(directory, old.size)
            for ref, tile in builder.add(data):
                if ref in wanted:
                    _write(directory, ref.path, tile, result)
            if builder.size == size:
                break
    if old.size == size and size and builder.frontier.root() != old.root:
        raise _forked(directory, old.size)
    if builder.size != size or builder.frontier.root() != root:
        raise IntegrityError(
            f"the log changed while its tiles were written (size {builder.size}, checkpoint {size}); "
            "the published checkpoint was left as it was"
        )
    for ref, tile in builder.finish():
        if ref in wanted:
            _write(directory, ref.path, tile, result)


def _move_into_place(staging: Path, directory: Path, written: list[str]) -> None:
    """Rename the staged tiles into ``directory`` once the whole stream gave the checkpoint's root.

    Tiles are served as immutable: one written from records that changed after verifying
    would be cached for a year, so none is in place before the root was checked.
    """
    parents = {directory}
    try:
        for relative in written:
            target = directory / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / relative, target)
            parents.add(target.parent)
        for parent in parents:  # the renames survive a crash before the checkpoint names them
            fd = os.open(parent, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    except OSError as exc:
        raise LogError(f"cannot write the tiles into {directory}: {exc.strerror or exc}") from None


def _forked(directory: Path, size: int) -> IntegrityError:
    return IntegrityError(
        f"{directory} publishes a checkpoint of size {size} whose root the log's records 0..{size - 1} "
        "do not give (the log was rewritten or forked since); nothing was written"
    )


def _write(directory: Path, relative: str, data: bytes, result: PublishedTiles) -> None:
    target = directory / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    write_file(target, data, mode=_MODE, overwrite=True)
    result.written.append(relative)
