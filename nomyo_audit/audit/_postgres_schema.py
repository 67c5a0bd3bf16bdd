"""The PostgreSQL log's tables, its advisory-lock keys, and connecting to it without leaking a password.

psycopg is an optional extra (``pip install nomyo-audit[postgres]``): it is imported here, lazily,
so that the SQLite log works without it and a ``postgresql://`` location without it gets a
:class:`LogError` that says what to install.

Tables: ``meta``, ``records``, ``checkpoints`` and ``blobs`` have the SQLite log's columns, so
records, checkpoints and blobs read back as the same Python values. ``pending`` holds appends not
yet given a position (the record built with seq 0, and a random token the writer chose; UNLOGGED:
a pending row is no promise, only the sequencer's durable commit acknowledges); ``acks``
tells a writer, by its token, the position its record got (-1: refused), for a while
(:data:`ACK_RETENTION`), so a writer whose connection died around a commit finds out once.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, unquote_plus

from ..errors import IntegrityError
from ._store import LogError

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "ACK_RETENTION",
    "CHECKPOINT_LOCK",
    "CREATE_LOCK",
    "PENDING_CHANNEL",
    "SCHEMA",
    "SEQUENCED_CHANNEL",
    "SEQUENCER_LOCK",
    "TABLES",
    "connect",
    "database_errors",
    "psycopg_module",
    "schema_problem",
    "storable",
]

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    seq BIGINT PRIMARY KEY,
    payload_id TEXT NOT NULL,
    time DOUBLE PRECISION NOT NULL,
    data BYTEA NOT NULL,
    leaf BYTEA NOT NULL
);
CREATE INDEX IF NOT EXISTS records_payload_id ON records (payload_id);
CREATE TABLE IF NOT EXISTS checkpoints (
    id BIGSERIAL PRIMARY KEY,
    size BIGINT NOT NULL,
    root BYTEA NOT NULL,
    note TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS blobs (sha256 TEXT PRIMARY KEY, data BYTEA NOT NULL);
CREATE UNLOGGED TABLE IF NOT EXISTS pending (
    id BIGSERIAL PRIMARY KEY,
    token BYTEA NOT NULL UNIQUE,
    payload_id TEXT NOT NULL,
    time DOUBLE PRECISION NOT NULL,
    data BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS acks (
    token BYTEA PRIMARY KEY,
    seq BIGINT NOT NULL,
    at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS acks_at ON acks (at);
"""

#: The columns each table must have for a database to be a nomyo-audit log.
TABLES = {
    "meta": {"key", "value"},
    "records": {"seq", "payload_id", "time", "data", "leaf"},
    "checkpoints": {"id", "size", "root", "note", "created"},
    "blobs": {"sha256", "data"},
    "pending": {"id", "token", "payload_id", "time", "data"},
    "acks": {"token", "seq", "at"},
}

#: Advisory lock keys (PostgreSQL scopes advisory locks to one database: one log per database).
SEQUENCER_LOCK = 0x6E6F6D796F0001  # session lock: the one sequencer
CREATE_LOCK = 0x6E6F6D796F0002  # transaction lock: creating the tables and the log's metadata
CHECKPOINT_LOCK = 0x6E6F6D796F0003  # transaction lock: checkpoints kept in size order

#: NOTIFY channels: a writer committed pending rows; the sequencer committed a batch.
PENDING_CHANNEL = "nomyo_audit_pending"
SEQUENCED_CHANNEL = "nomyo_audit_sequenced"

#: Seconds an ack is kept: how long a writer that lost its connection has to ask again.
ACK_RETENTION = 3600.0


def storable(text: str) -> bool:
    """Whether PostgreSQL can keep ``text`` in a text column (no NUL, no lone surrogate)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def psycopg_module() -> Any:
    """psycopg, or a :class:`LogError` naming the extra to install."""
    try:
        import psycopg
    except ImportError:
        raise LogError(
            "a PostgreSQL audit log needs psycopg: pip install 'nomyo-audit[postgres]'"
        ) from None
    return psycopg


def _reason(exc: BaseException, secrets: list[str]) -> str:
    """The server's or libpq's first line, without the password should it ever be quoted."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    text = text.removeprefix("connection failed: ")
    for secret in secrets:
        text = text.replace(secret, "***")
    return text[:300]


def connect(url: str, display: str, *, readonly: bool = False, timeout: int = 10) -> psycopg.Connection[Any]:
    """A new autocommit connection to the log's database (read-only sessions refuse every write).

    Any failure to connect (no server, no such database, wrong credentials) is a
    :class:`LogError` naming ``display`` (the URL without its password) and the reason.
    """
    psycopg = psycopg_module()
    kwargs: dict[str, Any] = {"autocommit": True, "connect_timeout": timeout}
    kwargs["application_name"] = "nomyo-audit"
    try:
        if readonly:  # added to the URL's own options (a schema's search_path), which a keyword replaces
            given = psycopg.conninfo.conninfo_to_dict(url).get("options") or os.environ.get("PGOPTIONS", "")
            kwargs["options"] = f"{given} -c default_transaction_read_only=on".strip()
        return psycopg.connect(url, **kwargs)  # type: ignore[no-any-return]
    except psycopg.Error as exc:
        reason = _reason(exc, _password(url))
        raise LogError(f"{display}: cannot connect to the audit log database ({reason})") from None
    except (ValueError, UnicodeError) as exc:
        raise LogError(f"{display}: not a usable PostgreSQL URL ({_reason(exc, _password(url))})") from None


#: A password in a URL's user info or query, read without parsing the URL (libpq quotes URLs
#: that urlsplit cannot read either, such as an unclosed IPv6 bracket).
_URL_PASSWORDS = re.compile(r"^[^:]*://[^/?#@:]*:([^/?#]*)@|[?&]password=([^&#]*)", re.IGNORECASE)


def _password(url: str) -> list[str]:
    """Every spelling of the passwords ``url`` (or ``PGPASSWORD``) holds, longest first, for redaction."""
    found = {os.environ.get("PGPASSWORD", "")}
    for match in _URL_PASSWORDS.finditer(url):
        for raw in match.groups():
            for part in (raw, *raw.split("@")) if raw else ():  # libpq ends the user info at the first @
                found.update((part, unquote(part), unquote_plus(part)))
    return sorted((secret for secret in found if secret), key=len, reverse=True)


@contextmanager
def database_errors(display: str, url: str) -> Iterator[None]:
    """A database error while using the log: a lost connection or refusal is a :class:`LogError`."""
    psycopg = psycopg_module()
    try:
        yield
    except psycopg.errors.DataCorrupted as exc:  # pragma: no cover - a broken server
        reason = _reason(exc, _password(url))
        raise IntegrityError(f"{display}: the audit log database is damaged ({reason})") from None
    except psycopg.Error as exc:
        raise LogError(f"{display}: the audit log database failed ({_reason(exc, _password(url))})") from None


def schema_problem(conn: psycopg.Connection[Any], *, creating: bool) -> str | None:
    """Why this database is not a log (None when it is one, or, ``creating``, is empty).

    A database with none of the log's tables and no other table is a log still to be made
    (writers); one with other tables only, or some of the log's columns missing, is not a log.
    """
    rows = conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema()"
    ).fetchall()
    columns: dict[str, set[str]] = {}
    for table, column in rows:
        columns.setdefault(table, set()).add(column)
    if not columns:
        return None if creating else "an empty database, not an audit log (nothing was created)"
    if not any(table in columns for table in TABLES):
        return "a database with other tables, not a nomyo-audit log"
    for table, wanted in TABLES.items():
        if table in ("pending", "acks"):
            continue  # only writers need them, and make them when missing
        if not wanted <= columns.get(table, set()):
            return "a database, but not a nomyo-audit log"
    return None
