"""The ``--log`` option's type: an SQLite file path, or a PostgreSQL URL kept exactly as typed.

``click.Path`` would turn ``postgresql://user@host/db`` into a path (and a path normalises ``//``
away), so a URL stays text and anything else becomes a :class:`~pathlib.Path`, refused when it
is a directory as ``click.Path(dir_okay=False)`` did.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from ..audit._stores import _OTHER_URL, display_location, is_database_url

__all__ = ["LOG_LOCATION", "LogLocation", "display_location"]



class LogLocation(click.ParamType[Path | str, Any]):
    """A log location: ``postgresql://`` / ``postgres://`` URLs as ``str``, paths as :class:`Path`."""

    name = "log"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path | str:
        if isinstance(value, Path):
            text = os.fspath(value)
        elif isinstance(value, str):
            text = value
        else:
            self.fail(f"{value!r} is not a log location", param, ctx)
        if is_database_url(text):
            return text
        if (scheme := _OTHER_URL.match(text)) is not None:  # a URL, not a path: never echoed (password)
            wanted = "a file path, or a postgresql:// URL"
            self.fail(f"{scheme[1]}://...: not a log location ({wanted})", param, ctx)
        if not text:
            self.fail("an empty log location", param, ctx)
        path = Path(text)
        if path.is_dir():
            self.fail(f"{text!r}: a directory, not an audit log", param, ctx)
        return path

    def get_metavar(self, param: click.Parameter, ctx: click.Context) -> str:
        return "PATH|URL"


LOG_LOCATION = LogLocation()
