"""``nomyo-audit log tiles`` and ``log serve``: the log as static C2SP tlog-tiles, on disk or over HTTP."""

from __future__ import annotations

import sys
import tempfile
import threading
from pathlib import Path

import click
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..audit import ed25519_public
from ..audit._tiles_server import TileServer
from ..audit._tiles_writer import PublishedTiles, publish_tiles
from ..errors import ConfigurationError, NomyoAuditError
from ._log import LOG_OPTION, open_log
from ._serve import listen_on

__all__ = ["log_serve", "log_tiles"]

KEY_OPTION = click.option(
    "--key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The checkpoint signer's public key (from a trusted place); default: the key the log names.",
)

UNTRUSTED_KEY = (
    "note: the log was verified with the key stored in it; pass --key for a trusted one "
    "(clients check the checkpoint with the key they trust)"
)


def _publish(
    log_path: Path | str, directory: Path, public: Ed25519PublicKey | None
) -> tuple[str, PublishedTiles]:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(f"cannot create {directory}: {exc.strerror or exc}") from None
    with open_log(log_path) as log:
        return log.origin, publish_tiles(log, directory, public)


@click.command("tiles")
@LOG_OPTION
@KEY_OPTION
@click.option(
    "-o",
    "--output",
    "directory",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The directory to write (the log's URL prefix on a static web server).",
)
def log_tiles(log_path: Path | str, key: Path | None, directory: Path) -> None:
    """Write the log's latest signed checkpoint as C2SP tlog-tiles (c2sp.org/tlog-tiles).

    The log is verified first: exit 3 and nothing written when it does not verify, or when it
    is not an extension of the checkpoint DIR already publishes. Re-running writes only the
    tiles that are new; the checkpoint is written last. Exit 2 (tile_entry_too_large) when a
    record is longer than the 65,535 bytes an entry bundle can hold.

    \b
    Example:
      nomyo-audit log tiles --log audit.db --key audit.key.pub -o /srv/www/audit-log
    """
    public = ed25519_public(key) if key is not None else None
    origin, result = _publish(log_path, directory, public)
    click.echo(
        f"published {origin} size {result.size} (was {result.previous_size}) to {directory}: "
        f"{len(result.written)} file(s) written"
    )
    if public is None:
        click.echo(UNTRUSTED_KEY, err=True)


@click.command("serve")
@LOG_OPTION
@KEY_OPTION
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="0: any free port."
)
@click.option(
    "--refresh",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0.1, 86400),
    help="Seconds between looks for a newer checkpoint.",
)
def log_serve(log_path: Path | str, key: Path | None, host: str, port: int, refresh: float) -> None:
    """Serve the log read-only over HTTP as C2SP tlog-tiles, for tile clients, witnesses and monitors.

    Serves the same files ``log tiles`` writes (checkpoint, tile/<L>/<N>, tile/entries/<N>),
    from a private directory refreshed when the log gets a newer checkpoint; a log that stops
    verifying is never published (the last verified state stays served, and stderr says why).

    \b
    Example:
      nomyo-audit log serve --log audit.db --key audit.key.pub --port 8080
    """
    public = ed25519_public(key) if key is not None else None
    with tempfile.TemporaryDirectory(prefix="nomyo-audit-tiles-", ignore_cleanup_errors=True) as scratch:
        directory = Path(scratch)
        origin, result = _publish(log_path, directory, public)
        if public is None:
            click.echo(UNTRUSTED_KEY, err=True)
        sock = listen_on(host, port)
        bound_host, bound_port = sock.getsockname()[:2]
        server = TileServer(sock, directory)
        where = f"[{bound_host}]" if ":" in bound_host else bound_host
        click.echo(f"serving {origin} size {result.size} at http://{where}:{bound_port}/")
        sys.stdout.flush()
        stop = threading.Event()
        refresher = threading.Thread(
            target=_refresh, args=(stop, refresh, log_path, directory, public), daemon=True
        )
        refresher.start()
        try:
            server.stop_on_signals()
            server.serve_forever()
            click.echo("stopped", err=True)
        finally:
            stop.set()
            server.server_close()
            refresher.join(timeout=refresh + 5)


def _state(log_path: Path | str) -> tuple[str | None, bytes | None]:
    """What a refresh looks at: the latest checkpoint and the cosigned one (cheap: no verification)."""
    with open_log(log_path) as log:
        latest = log.latest_checkpoint()
        return (latest.note if latest else None), log.store.meta("cosigned_checkpoint")


def _refresh(
    stop: threading.Event,
    every: float,
    log_path: Path | str,
    directory: Path,
    public: Ed25519PublicKey | None,
) -> None:
    """Publish each newer checkpoint; a failure is said on stderr and the last good state stays served."""
    last_problem, seen = "", _state(log_path)
    while not stop.wait(every):
        try:
            state = _state(log_path)
            if state == seen:
                continue
            _, result = _publish(log_path, directory, public)
            seen, last_problem = state, ""
            click.echo(f"now serving size {result.size}", err=True)
        except (NomyoAuditError, OSError, UnicodeDecodeError) as exc:
            code = getattr(exc, "code", "file_system")
            problem = f"error[{code}]: {exc}; still serving the last verified state"
            if problem != last_problem:
                click.echo(problem, err=True)
            last_problem = problem
