"""A real, throw-away PostgreSQL server for the tests and benchmarks (issue 16).

``initdb`` into a fresh temporary directory and ``pg_ctl start`` on a free loopback port, the way
the swtpm tests start swtpm. initdb refuses to run as root, so when we are root every PostgreSQL
binary runs as the unprivileged ``postgres`` user through ``runuser -u postgres --`` (the data and
socket directories are handed to that user); otherwise they run as ourselves. Authentication is
``trust`` for the superuser role :data:`ROLE` on 127.0.0.1 only (``listen_addresses=127.0.0.1``),
and the unix socket lives in the temporary directory, never in /var/run.

Two durability modes:

- ``durable=False`` (the ``postgres_server`` fixture for the functional tests): ``fsync=off``,
  ``synchronous_commit=off``, ``full_page_writes=off``. These only matter if the *machine* or the
  *server* crashes; the functional tests kill neither, and a crash would take the temporary cluster
  with it anyway. They make each test's commits cost microseconds instead of a disk flush.
- ``durable=True`` (kill tests and benchmarks): PostgreSQL's defaults, ``fsync=on`` and
  ``synchronous_commit=on``, so an acknowledged append really is on disk, and the figures are what
  a production server would give on this machine.

Either way ``initdb --no-sync`` skips the one-off flush of the fresh cluster (seconds on a busy
disk): the cluster is temporary, nothing in it predates the server start.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

__all__ = ["ROLE", "PostgresServer", "PostgresUnavailable", "find_bindir"]

#: the superuser role the tests connect as (trust authentication, loopback only)
ROLE = "nomyo_test"

_RELAXED = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
_START_TIMEOUT = 60


class PostgresUnavailable(RuntimeError):
    """PostgreSQL's binaries are not installed, or psycopg (the ``postgres`` extra) is missing."""


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name)) or (0,)


def find_bindir() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres: the newest /usr/lib/postgresql/*/bin,
    else ``pg_config --bindir``, else the directory of ``initdb`` on PATH."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    for candidate in candidates:
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        bindir = Path(out.stdout.strip())
        if out.returncode == 0 and (bindir / "initdb").exists():
            return bindir
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """``with PostgresServer() as pg: pg.create_database()`` -> ``postgresql://nomyo_test@127.0.0.1:N/db``.

    Stopped (``pg_ctl stop -m immediate``) and its directory removed on exit, also when the body
    raises. ``settings`` adds ``-c name=value`` server settings (e.g. ``max_connections``).
    """

    def __init__(self, *, durable: bool = False, settings: Mapping[str, str] | None = None,
                 host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.durable = durable
        self.settings = {**({} if durable else _RELAXED), **(settings or {})}
        self.directory: Path | None = None
        self._bindir: Path | None = None
        self._as_postgres = os.geteuid() == 0

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def data_dir(self) -> Path:
        assert self.directory is not None, "server not started"
        return self.directory / "data"

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        assert self._bindir is not None
        command = [str(self._bindir / argv[0]), *argv[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, check=False, cwd="/")
        if check and result.returncode != 0:
            output = (result.stderr or result.stdout)[-800:]
            raise RuntimeError(f"{argv[0]} failed ({result.returncode}): {output}")
        return result

    def start(self) -> PostgresServer:
        """initdb a fresh cluster and start it on a free loopback port; wait until it accepts."""
        self._bindir = find_bindir()
        if self._bindir is None:
            raise PostgresUnavailable("PostgreSQL is not installed (Debian: apt-get install postgresql)")
        try:
            import psycopg  # noqa: F401
        except ImportError as exc:
            hint = "pip install 'nomyo-audit[postgres]'"
            raise PostgresUnavailable(f"psycopg is not installed ({hint})") from exc
        # mkdtemp directly under /tmp: the postgres user must be able to traverse every parent
        self.directory = Path(tempfile.mkdtemp(prefix="nomyo-pg-"))
        try:
            self._initdb()
            self._start_server()
        except BaseException:
            self.stop()
            raise
        return self

    def _initdb(self) -> None:
        assert self.directory is not None
        if self._as_postgres:
            shutil.chown(self.directory, user="postgres", group="postgres")
        self._run("initdb", "-D", str(self.data_dir), "-U", ROLE, "--auth=trust", "-E", "UTF8",
                  "--locale=C", "--no-sync", "--no-instructions")

    def _start_server(self) -> None:
        assert self.directory is not None
        options = [f"-c listen_addresses={self.host}", f"-k {self.directory}"]
        options += [f"-c {name}={value}" for name, value in self.settings.items()]
        last_error = ""
        for _ in range(5):  # another process may take the free port between our probe and the bind
            self.port = _free_port(self.host)
            result = self._run("pg_ctl", "start", "-w", "-t", str(_START_TIMEOUT), "-D", str(self.data_dir),
                               "-l", str(self.directory / "server.log"),
                               "-o", " ".join([f"-p {self.port}", *options]), check=False)
            if result.returncode == 0 and self._accepts():
                return
            last_error = self.log_tail()
            self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "immediate", check=False)
        raise RuntimeError(f"PostgreSQL did not start: {last_error}")

    def _accepts(self) -> bool:
        import psycopg

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(self.url("postgres"), connect_timeout=2):
                    return True
            except psycopg.OperationalError:
                time.sleep(0.05)
        return False

    def log_tail(self, chars: int = 2000) -> str:
        """The end of the server log (for failure messages)."""
        if self.directory is None:
            return ""
        try:
            return (self.directory / "server.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the server (immediately: nothing in it is kept) and remove its directory."""
        if self.directory is None:
            return
        if (self.data_dir / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "immediate", "-w", check=False)
        for _ in range(50):  # a server process still exiting may write a last file meanwhile
            shutil.rmtree(self.directory, ignore_errors=True)
            if not self.directory.exists():
                break
            time.sleep(0.1)
        self.directory = None

    # -- databases -----------------------------------------------------------------------------

    def url(self, dbname: str) -> str:
        """``postgresql://nomyo_test@127.0.0.1:<port>/<dbname>`` (no password: trust on loopback)."""
        return f"postgresql://{ROLE}@{self.host}:{self.port}/{dbname}"

    def _admin(self, statement: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            cursor = conn.execute(statement.encode(), params)
            return list(cursor.fetchall()) if cursor.description else []

    def create_database(self, name: str | None = None) -> str:
        """A fresh empty database; returns its URL."""
        name = name or f"t_{uuid.uuid4().hex[:16]}"
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise ValueError(f"unsafe database name {name!r}")
        self._admin(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def terminate(self, dbname: str) -> int:
        """pg_terminate_backend every connection to ``dbname``; returns how many were terminated."""
        rows = self._admin(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()", (dbname,))
        return int(rows[0][0]) if rows else 0

    def drop_database(self, dbname: str) -> None:
        """Drop ``dbname``, closing any connection still open to it."""
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", dbname):
            raise ValueError(f"unsafe database name {dbname!r}")
        self._admin(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
