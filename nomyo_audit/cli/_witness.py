"""``nomyo-audit witness serve``, ``log witness {add, list}``, ``log cosign``, and ``log verify --witness``.

The log side asks witnesses to cosign (c2sp.org/tlog-witness); the witness side is a small
stdlib HTTP witness. Importing this module also registers ``log witness`` and ``log cosign``
on the ``log`` group (cli/_main.py imports it once).
"""

from __future__ import annotations

import datetime as _dt
import time
from pathlib import Path

import click
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..audit import AuditLog, IntegrityError, ed25519_private, ed25519_public, verifier_key
from ..audit._cosignature import (
    WitnessKey,
    check_cosigned,
    check_witness_keys,
    parse_log_vkey,
    parse_witness_vkey,
)
from ..audit._note import NoteError
from ..audit._witness_client import (
    COSIGNED_META,
    WitnessOutcome,
    add_witness,
    cosign_latest,
    load_witnesses,
)
from ..errors import ConfigurationError
from ..witness import Witness, WitnessServer, WitnessState
from ._log import LOG_OPTION, log_group, open_log

__all__ = ["cosign_after_checkpoint", "verify_witnessed", "witness_group"]


def _vkey(value: str) -> str:
    """A vkey given on the command line, or read from a file that holds one."""
    path = Path(value)
    if "+" not in value and path.is_file():
        try:
            return path.read_text(encoding="utf-8")[:4096].strip()
        except (OSError, UnicodeDecodeError):
            raise click.BadParameter(f"{value}: not a readable vkey file") from None
    return value.strip()


@click.group("witness")
def witness_group() -> None:
    """Run a C2SP tlog-witness that cosigns consistent extensions of the logs it knows.

    \b
    Example:
      nomyo-audit witness serve --key witness.key --log-key "$(cat log.vkey)" --state witness.json
    """


NAME_OPTION = click.option(
    "--name", default="nomyo-audit.local/witness", show_default=True,
    help="The witness's key name (a schema-less URL; part of its vkey).",
)


@witness_group.command("vkey")
@click.option("--key", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The witness's Ed25519 key (private or public PEM).")
@NAME_OPTION
def witness_vkey(key: Path, name: str) -> None:
    """Print the witness's cosignature/v1 vkey, for `nomyo-audit log witness add` and `log verify --witness`.

    \b
    Example:
      nomyo-audit witness vkey --key witness.key > witness.vkey
    """
    try:
        click.echo(parse_witness_vkey(WitnessKey(name, ed25519_public(key)).vkey).vkey)
    except NoteError as exc:
        raise click.BadParameter(str(exc), param_hint="--name") from None


@witness_group.command("serve")
@click.option("--key", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The witness's Ed25519 private key (nomyo-audit keys generate).")
@NAME_OPTION
@click.option("--log-key", "log_keys", multiple=True, required=True,
              help="A log's Ed25519 note vkey origin+id+key (or a file holding one). Repeatable.")
@click.option("--state", type=click.Path(dir_okay=False, path_type=Path),
              help="Keep the latest cosigned checkpoint per log here (default: in memory only).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=7380, show_default=True)
def serve_witness(
    key: Path, name: str, log_keys: tuple[str, ...], state: Path | None, host: str, port: int
) -> None:
    """Serve add-checkpoint; cosign only checkpoints consistent with the last one cosigned.

    Prints the witness's vkey (give it to `nomyo-audit log witness add`) and its URL.
    A rolled-back or forked log gets no cosignature.
    """
    private = ed25519_private(key)
    try:
        witness_key = WitnessKey.of(name, private)
        logs = _log_keys(log_keys, witness_key)
    except NoteError as exc:
        raise click.BadParameter(str(exc)) from None
    witness = Witness(witness_key, private, logs, WitnessState(state))
    try:
        server = WitnessServer(witness, host, port)
    except OSError as exc:
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    click.echo(f"witness vkey: {witness_key.vkey}")
    click.echo(f"listening on {server.url} for {len(logs)} log(s)", nl=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _log_keys(values: tuple[str, ...], witness: WitnessKey) -> dict[str, Ed25519PublicKey]:
    """``origin -> key`` of the --log-key values; NoteError for two keys of one origin or the witness's key.

    A dict would keep only the last key of an origin, silently; and a log signed with the
    witness's own key would be cosigned by the key that signed it, which is no witness.
    """
    logs: dict[str, Ed25519PublicKey] = {}
    for value in values:
        origin, public = parse_log_vkey(_vkey(value))
        if origin in logs and logs[origin] != public:
            raise NoteError(f"two --log-key values for the log {origin}: give one key per log")
        if public == witness.public:
            raise NoteError(f"the log {origin}'s key is the witness's own key: a log cannot witness itself")
        logs[origin] = public
    return logs


@click.group("witness")
def log_witness_group() -> None:
    """Configure the witnesses that cosign this log's checkpoints."""


@log_witness_group.command("add")
@click.argument("url")
@LOG_OPTION
@click.option("--key", "vkey", required=True,
              help="The witness's cosignature/v1 vkey name+id+key (or a file holding one).")
def add(url: str, log_path: Path, vkey: str) -> None:
    """Add a witness (or move a known one to URL); later checkpoints are sent to it.

    \b
    Example:
      nomyo-audit log witness add http://127.0.0.1:7380 --log audit.db --key "$(cat witness.vkey)"
    """
    with open_log(log_path, write=True) as log:
        entry = add_witness(log.store, url, _vkey(vkey))
    click.echo(f"witness {entry.key.name} at {entry.url}")


@log_witness_group.command("list")
@LOG_OPTION
def list_witnesses(log_path: Path) -> None:
    """The configured witnesses (URL, last size each cosigned, vkey) and the log's own vkey."""
    with open_log(log_path) as log:
        public = log.public_key()
        if public is not None:
            click.echo(f"log vkey: {verifier_key(log.origin, public)}")
        for entry in load_witnesses(log.store):
            click.echo(f"{entry.url}  size {entry.size}  {entry.vkey}")


def _show(outcome: WitnessOutcome) -> None:
    err = outcome.status != "cosigned"
    click.echo(f"{outcome.status}: {outcome.entry.url}: {outcome.detail}", err=err)


def cosign_after_checkpoint(log: AuditLog, timeout: float = 10.0) -> int:
    """Ask the configured witnesses to cosign the latest checkpoint; the number that did."""
    return cosign_latest(log.store, timeout=timeout, report=_show).cosigned


@click.command("cosign")
@LOG_OPTION
@click.option("--timeout", type=click.FloatRange(0.1, 300), default=10.0, show_default=True,
              help="Seconds per witness request.")
def cosign(log_path: Path, timeout: float) -> None:
    """Ask every configured witness to cosign the log's latest checkpoint.

    Exit 0 when all cosigned, 1 when some could not (down, refused), 3 when a witness has
    seen a larger or different tree: the log was rolled back or forked.

    \b
    Example:
      nomyo-audit log cosign --log audit.db
    """
    with open_log(log_path, write=True) as log:
        result = cosign_latest(log.store, timeout=timeout, report=_show)
    if result.cosigned < len(result.outcomes):
        raise click.exceptions.Exit(1)


def verify_witnessed(
    log: AuditLog, vkeys: tuple[str, ...], threshold: int | None, public: Ed25519PublicKey | None
) -> str:
    """The log's cosigned checkpoint, after checking its log signature and ``threshold`` cosignatures.

    The caller passes the note on to ``AuditLog.verify(checkpoints=...)``, which checks that
    the log's records give its root (a log cut below it fails there). IntegrityError (exit 3)
    when there is none, or it lacks valid cosignatures. ``public`` is the log's key from a
    trusted place (--key); without it the key the log names is used.
    """
    if not vkeys:
        raise click.BadParameter("needs at least one --witness", param_hint="--witness-threshold")
    try:
        witnesses = [parse_witness_vkey(_vkey(value)) for value in vkeys]
    except NoteError as exc:
        raise click.BadParameter(str(exc), param_hint="--witness") from None
    needed = len(witnesses) if threshold is None else threshold
    if not 1 <= needed <= len(witnesses):
        raise click.BadParameter(f"must be 1 to {len(witnesses)}", param_hint="--witness-threshold")
    raw = log.store.meta(COSIGNED_META)
    public = public or log.public_key()
    try:
        check_witness_keys(witnesses, public)
    except NoteError as exc:
        raise click.BadParameter(str(exc), param_hint="--witness") from None
    if raw is None or public is None:
        raise IntegrityError("the log holds no cosigned checkpoint (nomyo-audit log cosign)")
    note = raw.decode("utf-8", "replace")
    checkpoint, found = check_cosigned(note, public, witnesses, needed)
    for cosignature in found:
        click.echo(f"cosigned: size {checkpoint.size} by {cosignature.witness.name} at "
                   f"{_when(cosignature.timestamp, int(time.time()))}")
    return note


def _when(timestamp: int, now: int) -> str:
    """A cosignature's time for people; any u64 a witness signed (up to 2^63-1) is shown, never raised on."""
    try:
        shown = _dt.datetime.fromtimestamp(timestamp, _dt.timezone.utc).isoformat()
    except (OverflowError, OSError, ValueError):
        shown = f"time {timestamp}"
    if timestamp > now:
        return f"{shown} (in the future: the witness's clock is wrong)"
    return f"{shown} ({now - timestamp}s ago)"


log_group.add_command(log_witness_group)
log_group.add_command(cosign)
