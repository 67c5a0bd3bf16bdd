"""``nomyo-audit log migrate SRC DST``: copy a log into another store, proving the copy."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any, cast

import click

from ..audit import LogError, ed25519_public
from ..audit._migrate import BulkLoadable, migrate
from ..audit._stores import display_location, open_store
from ._log_location import LOG_LOCATION
from ._progress import Progress

__all__ = ["migrate_command"]


@click.command("migrate")
@click.argument("source", type=LOG_LOCATION)
@click.argument("destination", type=LOG_LOCATION)
@click.option(
    "--key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The checkpoint signer's public key (from a trusted place): both logs are verified with it.",
)
def migrate_command(source: Path | str, destination: Path | str, key: Path | None) -> None:
    """Copy the log SOURCE into the new, empty log DESTINATION (paths or postgresql:// URLs).

    The source is verified first (exit 3 if it does not verify; nothing is copied), a
    destination that is not empty is refused (exit 2), the records, checkpoints, event-log
    blobs and the metadata they depend on are copied exactly in one transaction, and the
    destination is verified: it must have the same size, root and checkpoints (exit 3 if not).
    The source is only read; stop the writers of the source first, or the copy stops at the
    size verified.

    \b
    Example:
      nomyo-audit log migrate audit.db postgresql://audit@db.internal/audit --key audit.key.pub
    """
    public = ed25519_public(key) if key is not None else None
    with ExitStack() as stack:
        source_store = open_store(source, readonly=True)
        stack.callback(_close, source_store)
        target = open_store(destination)
        stack.callback(_close, target)
        if not callable(getattr(target, "bulk_load", None)):
            raise LogError(f"{display_location(destination)}: this kind of log cannot be migrated into")

        def progress(stage: str, total: int | None) -> Callable[[int], None]:
            return stack.enter_context(Progress(stage, total))

        done = migrate(source_store, cast(BulkLoadable, target), key=public, progress=progress)
    click.echo(
        f"migrated {done.size} records, {done.checkpoints} checkpoints, {done.blobs} blobs "
        f"from {display_location(source)} to {display_location(destination)}; root {done.root.hex()}"
    )


def _close(store: Any) -> None:
    closer = getattr(store, "close", None)
    if closer is not None:
        closer()
