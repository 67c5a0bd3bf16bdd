"""Where a log lives: an SQLite file path, or a ``postgresql://`` (``postgres://``) URL.

:func:`open_store` picks the backend; :func:`display_location` is how messages name a log, never
with its password.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

from ._store import LogError, LogStore

__all__ = ["database_url", "display_location", "is_database_url", "open_store"]

_SCHEMES = ("postgresql://", "postgres://")
#: A URL of a scheme no store takes (``postgress://``, ``mysql://``): told from a path, never echoed.
_OTHER_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def is_database_url(location: str | os.PathLike[str]) -> bool:
    """True for a ``postgresql://`` or ``postgres://`` URL (any case), False for a path."""
    return isinstance(location, str) and location[:13].lower().startswith(_SCHEMES)


def database_url(url: str) -> str:
    """The URL with its scheme in lower case: nomyo-audit takes any case, libpq only lower case."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.lower()}{sep}{rest}"


def display_location(location: str | os.PathLike[str]) -> str:
    """The location for messages: a URL without its password (and query), or the path as given."""
    if not is_database_url(location):
        return os.fspath(location)
    text = str(location)
    try:
        parts = urlsplit(text)
        netloc = parts.netloc.rpartition("@")
        user = netloc[0].partition(":")[0]
        host = f"{user}@{netloc[2]}" if netloc[1] else netloc[2]
        return f"{parts.scheme}://{host}{parts.path}"  # urlunsplit drops the // of an empty host
    except ValueError:
        return text.partition("://")[0] + "://(unreadable URL)"


def open_store(location: str | os.PathLike[str], *, readonly: bool = False) -> LogStore:
    """The store at ``location``: a :class:`._postgres.PostgresStore` for a URL, else an SQLite one."""
    if is_database_url(location):
        from ._postgres import PostgresStore

        return PostgresStore(database_url(str(location)), readonly=readonly)
    if isinstance(location, str) and (other := _OTHER_URL.match(location)) is not None:
        # a typo of a database URL must not become a local file (nor its password a file name)
        raise LogError(f"{other[1]}://...: not a log location (a file path, or a postgresql:// URL)")
    from ._sqlite import SQLiteStore

    return SQLiteStore(location, readonly=readonly)
