"""Rendering and signing reports: the I/O edge of reporting.

The JSON report is the source of truth; HTML, Markdown, CSV and JUnit render
from it with the jinja2 templates shipped in the package (autoescape on for
HTML and XML, ``StrictUndefined`` everywhere). The generation time is data in
the report, so rendering the same report again gives the same bytes. A DSSE
envelope around an in-toto Statement then signs the digests of every rendered
file (``report.dsse.json``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._files import FileExistsRefused, write_file
from ..errors import ConfigurationError
from ._controls import controls_evidenced
from ._dsse import EnvelopeError, key_fingerprint, sign_envelope, statement, statement_of
from ._keys import SigningKey, VerifyingKey
from ._report import PREDICATE_TYPE
from ._timeline import timeline_svg

if TYPE_CHECKING:
    import jinja2

__all__ = [
    "ENVELOPE_NAME",
    "FORMATS",
    "REPORT_FILE_MODE",
    "render_report",
    "verify_report_dir",
    "write_report",
]

#: Report formats (``--format`` values) and the file each one is written to.
FORMATS = {
    "json": "report.json",
    "html": "report.html",
    "md": "report.md",
    "csv": "report.csv",
    "junit": "report.junit.xml",
    "oscal": "report.oscal.json",
}
#: The signed DSSE envelope written beside the report files.
ENVELOPE_NAME = "report.dsse.json"
#: Reports hold no secrets and are meant to be shared: readable by all, whatever the umask.
REPORT_FILE_MODE = 0o644


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    """The one template environment (made on first use: importing the package does not load jinja2)."""
    import jinja2

    root = resources.files("nomyo_audit").joinpath("data").joinpath("templates")
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(root)),
        autoescape=lambda name: name is not None and (".html" in name or ".xml" in name),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    environment.filters["csv"] = csv_field
    return environment


def csv_field(value: Any) -> str:
    """One CSV field: quoted when it holds a separator, quote or line break; never read as a formula."""
    text = str(value)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        text = "'" + text
    if any(c in text for c in ',"\r\n'):
        text = '"' + text.replace('"', '""') + '"'
    return text


def render_report(
    report: Mapping[str, Any], formats: list[str], signer: str | None = None
) -> dict[str, bytes]:
    """File name -> bytes for each format; deterministic for a given report.

    Raises :class:`nomyo_audit.errors.ConfigurationError` for an unknown format.
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ConfigurationError(f"unknown report format(s) {', '.join(unknown)}: use {', '.join(FORMATS)}")
    report = {**report, "signer": signer}
    files: dict[str, bytes] = {}
    controls = controls_evidenced(report)  # the project's control mapping, judged from this report
    for fmt in formats:
        name = FORMATS[fmt]
        if fmt == "json":
            files[name] = (json.dumps(report, indent=2, sort_keys=True) + "\n").encode()
            continue
        if fmt == "oscal":  # OSCAL assessment results, findings from the shipped control mapping
            from ._oscal import oscal_report

            files[name] = oscal_report(report)
            continue
        template = _environment().get_template(f"{name}.j2" if fmt != "junit" else "report.junit.xml.j2")
        uncheckpointed = _uncheckpointed(report)
        files[name] = template.render(
            report=report,
            signer=signer,
            timeline=timeline_svg(report),
            uncheckpointed=uncheckpointed,
            controls=controls,
        ).encode()
    return files


def _uncheckpointed(report: Mapping[str, Any]) -> str | None:
    """The records of the report's log that no signed checkpoint covers, in words (HTML and Markdown)."""
    log = report["log"]
    checkpoint = log.get("checkpoint")
    if not checkpoint or checkpoint["size"] >= log["size"]:
        return None
    first, last = checkpoint["size"], log["size"] - 1
    if first == last:
        which, them = f"record {first} was", "it"
    else:
        which, them = f"records {first} to {last} were", "them"
    return (
        f"{which} written after this checkpoint: no signed checkpoint covers {them} yet, "
        f"so whoever can write the log could have changed {them}"
    )


def write_report(
    report: Mapping[str, Any],
    formats: list[str],
    out_dir: str | os.PathLike[str],
    key: SigningKey | None = None,
    *,
    overwrite: bool = False,
    streamed: Mapping[str, Path] | None = None,
) -> dict[str, Path]:
    """Render into ``out_dir``; with ``key``, also write the signed envelope over every file.

    ``streamed`` names files too large to render in memory (``report --ear-jwt``'s tokens): file
    name -> a temporary file already written in ``out_dir``, hashed here in chunks, signed with
    the rest and moved into place under its name (the caller removes it if this raises).

    Every file is written with mode :data:`REPORT_FILE_MODE`, never through a
    symlink, and an existing file is replaced only with ``overwrite``; which
    files would be refused is checked before any is written, so a refusal
    leaves no half-written report. Returns file name -> path written. Raises
    :class:`nomyo_audit.errors.ConfigurationError` (an unknown format, a directory or file
    that cannot be written, an existing file without ``overwrite``).
    """
    directory = Path(out_dir)
    streamed = dict(streamed or {})
    signer = key_fingerprint(key.public_key()) if key is not None else None
    files = render_report(report, formats if "json" in formats else ["json", *formats], signer)
    outputs = dict(files)
    if key is not None:
        predicate = {
            "checkpoint": report["log"].get("checkpoint"),
            "log": {k: report["log"].get(k) for k in ("size", "root")},
            "covers": report.get("covers"),
            "period": report["period"],
            "summary": report["summary"],
            "policy_digest": (report.get("policy") or {}).get("digest"),
            "tool": report["tool"],
            "generated_at": report["generated_at"],
        }
        if report.get("scope"):  # a report limited to part of a fleet's log says which part it counts
            predicate["scope"] = report["scope"]
        signed = statement(files, PREDICATE_TYPE, predicate)
        signed["subject"] = sorted(
            [
                *signed["subject"],
                *(
                    {"name": name, "digest": {"sha256": _file_sha256(path)}}
                    for name, path in streamed.items()
                ),
            ],
            key=lambda subject: str(subject["name"]),
        )
        payload = json.dumps(signed, sort_keys=True).encode()
        outputs[ENVELOPE_NAME] = (json.dumps(sign_envelope(payload, key), indent=2) + "\n").encode()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(f"cannot create the report directory {directory}: {exc.strerror}") from None
    _refuse_existing(directory, [*outputs, *streamed], overwrite)
    written = {name: _move(path, directory / name, overwrite) for name, path in streamed.items()}
    return {
        **written,
        **{
            name: write_file(directory / name, data, mode=REPORT_FILE_MODE, overwrite=overwrite)
            for name, data in outputs.items()
        },
    }


def _move(source: Path, target: Path, overwrite: bool) -> Path:
    """A streamed file into place: never over an existing file unless ``overwrite`` (a hard link
    fails on one), never through a symlink (a rename replaces the link itself)."""
    os.chmod(source, REPORT_FILE_MODE)
    try:
        if overwrite:
            os.replace(source, target)
        else:
            os.link(source, target)
            source.unlink()
    except FileExistsError:
        raise FileExistsRefused(
            f"refusing to overwrite existing file {target} (pass --force to replace it)"
        ) from None
    except OSError as exc:
        raise ConfigurationError(f"cannot write {target}: {exc.strerror}") from None
    return target


def _file_sha256(path: Path) -> str:
    """SHA-256 hex of a file, read in chunks (a report's token file may be large)."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _refuse_existing(directory: Path, names: Iterable[str], overwrite: bool) -> None:
    for name in names:
        path = directory / name
        if path.is_symlink():
            raise ConfigurationError(f"refusing to write {path}: it is a symbolic link")
        if path.exists() and not overwrite:
            raise FileExistsRefused(
                f"refusing to overwrite existing file {path} (pass --force to replace it)"
            )


def verify_report_dir(target: str | os.PathLike[str], key: VerifyingKey) -> dict[str, Any]:
    """Check the envelope's signature and every signed file's digest; return the statement.

    ``target`` is a report directory or the envelope itself (its files beside it).
    Raises :class:`EnvelopeError` (an :class:`nomyo_audit.errors.IntegrityError`, exit 3)
    when the envelope is missing or not signed by ``key``, or a signed file is missing or
    was modified.
    """
    path = Path(target)
    envelope_path = path / ENVELOPE_NAME if path.is_dir() else path
    try:
        envelope = json.loads(envelope_path.read_text())
    except FileNotFoundError:
        raise EnvelopeError(
            f"{envelope_path}: no signed envelope (was the report made with --sign?)"
        ) from None
    except ValueError:
        raise EnvelopeError(f"{envelope_path}: not JSON") from None
    doc = statement_of(envelope, key)
    if doc.get("predicateType") != PREDICATE_TYPE:
        raise EnvelopeError(f"predicateType is not {PREDICATE_TYPE}")
    subjects = doc.get("subject")
    if not isinstance(subjects, list):
        raise EnvelopeError("the signed statement has no subject list")
    for subject in subjects:
        name, digest = _subject(subject)
        file = envelope_path.parent / name
        if file.name != name or not file.is_file():
            raise EnvelopeError(f"{name}: signed, but missing from {envelope_path.parent}")
        if _file_sha256(file) != digest:
            raise EnvelopeError(f"{name}: modified after it was signed (digest differs)")
    return doc


def _subject(subject: Any) -> tuple[str, str]:
    """(file name, SHA-256 hex) of one signed subject; a malformed one is an integrity failure."""
    name = subject.get("name") if isinstance(subject, Mapping) else None
    digest = subject.get("digest") if isinstance(subject, Mapping) else None
    sha256 = digest.get("sha256") if isinstance(digest, Mapping) else None
    if not isinstance(name, str) or not name or not isinstance(sha256, str):
        raise EnvelopeError("a signed subject has no file name or SHA-256 digest")
    return name, sha256
