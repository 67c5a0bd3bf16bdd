"""``nomyo-audit eventlog show|replay FILE``: read a TCG event log (or, with --ima, an IMA list).

Both commands stream the file (iter_event_log / iter_ima_log), so a log of gigabytes is read in
bounded memory: one event at a time, each capped. A log that cannot be read is
``error[<EventLogError code>]`` and exit 2, never a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import click

from ..eventlog import EV_NO_ACTION, Event, ImaEntry, decode_event, iter_event_log, iter_ima_log
from ..eventlog._constants import DIGEST_SIZES, digest, hasher
from ..eventlog._efi import printable
from ..eventlog._parse import startup_locality

_IMA_BANKS = ("sha1", "sha256", "sha384")
def _regular_file(ctx: click.Context, param: click.Parameter, value: Path) -> Path:
    """Only a regular file: a device or a pipe (/dev/zero, a FIFO) may never end, and the reader
    streams without a count cap so that real logs of any size read."""
    if not value.is_file():
        raise click.BadParameter(f"{str(value)[:200]!r} is not a regular file", ctx, param)
    return value


_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
_FORMAT = click.option(
    "--format", "output", type=click.Choice(["text", "json"]), default="text", show_default=True
)
_IMA = click.option("--ima", is_flag=True, help="FILE is a Linux IMA measurement list (binary or ASCII).")


@click.group("eventlog")
def eventlog_group() -> None:
    """Read TCG PC Client event logs and Linux IMA measurement lists (docs/event-logs.md)."""


def _event_json(event: Event, bank: str) -> dict[str, Any]:
    info = decode_event(event, bank)
    return {
        "number": event.number,
        "pcr": event.pcr,
        "type": event.type_name,
        "digests": {name: value.hex() for name, value in event.digests.items()},
        "kind": info.kind,
        "summary": info.summary,
        "data_verified": info.data_verified,
        "fields": info.fields,
    }


def _ima_json(entry: ImaEntry) -> dict[str, Any]:
    return {
        "number": entry.number,
        "pcr": entry.pcr,
        "template": entry.template_name,
        "template_hash": entry.template_hash.hex(),
        "algorithm": entry.digest_algorithm,
        "digest": entry.file_digest.hex() if entry.file_digest is not None else None,
        "path": entry.path,
        "violation": entry.violation,
    }


def _records(stream: BinaryIO, ima: bool, bank: str) -> Iterator[tuple[dict[str, Any], str]]:
    if ima:
        for entry in iter_ima_log(stream):
            record = _ima_json(entry)
            shown = printable(record["path"]) if record["path"] is not None else "(buffer)"
            yield (
                record,
                f"{entry.number:6d}  PCR {entry.pcr:2d}  {entry.template_name} {record['digest']}  {shown}",
            )
    else:
        for event in iter_event_log(stream):
            record = _event_json(event, bank)
            yield record, f"{event.number:6d}  PCR {event.pcr:2d}  {event.type_name:34s}  {record['summary']}"


@eventlog_group.command("show")
@click.argument("file", type=_FILE, callback=_regular_file)
@_FORMAT
@_IMA
@click.option(
    "--bank", default="sha256", show_default=True, help="The bank whose digests data_verified checks."
)
def show(file: Path, output: str, ima: bool, bank: str) -> None:
    """Print every event of FILE, decoded (--format json: one JSON document)."""
    with file.open("rb") as stream:
        if output == "json":
            click.echo('{"events": [', nl=False)
            for index, (record, _) in enumerate(_records(stream, ima, bank)):
                click.echo(("," if index else "") + json.dumps(record, sort_keys=True), nl=False)
            click.echo("]}")
        else:
            for _, line in _records(stream, ima, bank):
                click.echo(line)


def _replay_tcg(stream: BinaryIO) -> dict[str, dict[int, bytes]]:
    values: dict[str, dict[int, bytes]] = {}
    locality = 0
    for event in iter_event_log(stream):
        found = startup_locality(event)
        if found is not None and not any(values.values()):
            locality = found
        if event.type == EV_NO_ACTION:
            continue
        for bank, measurement in event.digests.items():
            if hasher(bank) is None:
                continue
            size = DIGEST_SIZES[bank]
            pcrs = values.setdefault(bank, {})
            start = bytes(size - 1) + bytes([locality if event.pcr == 0 else 0])
            pcrs[event.pcr] = digest(bank, pcrs.get(event.pcr, start) + measurement)
    return values


def _replay_ima(stream: BinaryIO) -> dict[str, dict[int, bytes]]:
    values: dict[str, dict[int, bytes]] = {bank: {} for bank in _IMA_BANKS}
    for entry in iter_ima_log(stream):
        for bank in list(values):
            measurement = entry.measurement(bank)
            if measurement is None:  # an entry that replays only in its own bank: drop the others
                del values[bank]
                continue
            pcrs = values[bank]
            pcrs[entry.pcr] = digest(bank, pcrs.get(entry.pcr, bytes(DIGEST_SIZES[bank])) + measurement)
    return values


@eventlog_group.command("replay")
@click.argument("file", type=_FILE, callback=_regular_file)
@_FORMAT
@_IMA
def replay(file: Path, output: str, ima: bool) -> None:
    """Replay FILE to PCR values per bank (--format json: {"<bank>": {"<pcr>": "<hex>"}})."""
    with file.open("rb") as stream:
        values = _replay_ima(stream) if ima else _replay_tcg(stream)
    if output == "json":
        shown = {
            bank: {str(pcr): value.hex() for pcr, value in sorted(pcrs.items())}
            for bank, pcrs in values.items()
        }
        click.echo(json.dumps(shown, indent=2))
        return
    for bank, pcrs in values.items():
        for pcr, value in sorted(pcrs.items()):
            click.echo(f"{bank:8s} {pcr:2d}  {value.hex()}")
