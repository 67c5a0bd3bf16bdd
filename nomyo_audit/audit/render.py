"""Rendering and signing reports: the I/O edge of reporting.

The JSON report is the source of truth; HTML, Markdown, CSV and JUnit render
from it with the jinja2 templates shipped in the package (autoescape on for
HTML and XML, ``StrictUndefined`` everywhere). The generation time is data in
the report, so rendering the same report again gives the same bytes. A DSSE
envelope around an in-toto Statement then signs the digests of every rendered
file (``report.dsse.json``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from ..errors import ConfigurationError
from .dsse import EnvelopeError, key_fingerprint, sign_envelope, statement, statement_of
from .keys import SigningKey, VerifyingKey
from .report import PREDICATE_TYPE, timeline_svg

__all__ = ["ENVELOPE_NAME", "FORMATS", "render_report", "verify_report_dir", "write_report"]

FORMATS = {
    "json": "report.json",
    "html": "report.html",
    "md": "report.md",
    "csv": "report.csv",
    "junit": "report.junit.xml",
}
ENVELOPE_NAME = "report.dsse.json"


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    root = resources.files("nomyo_audit").joinpath("data").joinpath("templates")
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(root)),
        autoescape=lambda name: name is not None and (".html" in name or ".xml" in name),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def render_report(
    report: Mapping[str, Any], formats: list[str], signer: str | None = None
) -> dict[str, bytes]:
    """File name -> bytes for each format; deterministic for a given report."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ConfigurationError(f"unknown report format(s) {', '.join(unknown)}: use {', '.join(FORMATS)}")
    report = {**report, "signer": signer}
    files: dict[str, bytes] = {}
    for fmt in formats:
        name = FORMATS[fmt]
        if fmt == "json":
            files[name] = (json.dumps(report, indent=2, sort_keys=True) + "\n").encode()
            continue
        template = _environment().get_template(f"{name}.j2" if fmt != "junit" else "report.junit.xml.j2")
        files[name] = template.render(
            report=report, signer=signer, timeline=timeline_svg(report["by_day"])
        ).encode()
    return files


def write_report(
    report: Mapping[str, Any],
    formats: list[str],
    out_dir: str | os.PathLike[str],
    key: SigningKey | None = None,
) -> dict[str, Path]:
    """Render into ``out_dir``; with ``key``, also write the signed envelope over every file."""
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    signer = key_fingerprint(key.public_key()) if key is not None else None
    files = render_report(report, formats if "json" in formats else ["json", *formats], signer)
    written = {}
    for name, data in files.items():
        (directory / name).write_bytes(data)
        written[name] = directory / name
    if key is not None:
        predicate = {
            "checkpoint": report["log"].get("checkpoint"),
            "log": {k: report["log"].get(k) for k in ("size", "root")},
            "period": report["period"],
            "summary": report["summary"],
            "policy_digest": (report.get("policy") or {}).get("digest"),
            "tool": report["tool"],
            "generated_at": report["generated_at"],
        }
        payload = json.dumps(statement(files, PREDICATE_TYPE, predicate), sort_keys=True).encode()
        (directory / ENVELOPE_NAME).write_text(json.dumps(sign_envelope(payload, key), indent=2) + "\n")
        written[ENVELOPE_NAME] = directory / ENVELOPE_NAME
    return written


def verify_report_dir(target: str | os.PathLike[str], key: VerifyingKey) -> dict[str, Any]:
    """Check the envelope's signature and every signed file's digest; return the statement.

    ``target`` is a report directory or the envelope itself (its files beside it).
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
    import hashlib

    for subject in doc.get("subject", []):
        file = envelope_path.parent / subject["name"]
        if file.name != subject["name"] or not file.is_file():
            raise EnvelopeError(f"{subject['name']}: signed, but missing from {envelope_path.parent}")
        if hashlib.sha256(file.read_bytes()).hexdigest() != subject["digest"]["sha256"]:
            raise EnvelopeError(f"{subject['name']}: modified after it was signed (digest differs)")
    return doc
