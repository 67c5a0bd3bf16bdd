"""Kill tests for the PostgreSQL log: several writer PROCESSES append to one log while we SIGKILL a
writer, SIGKILL the process holding the sequencer, or terminate every database connection
(pg_terminate_backend), each mid-batch and more than once.

Afterwards every acknowledged record is in the log exactly once at the position it was
acknowledged with, no payload_id appears twice, the pending rows the dead left behind are
sequenced (``pending`` drains), and ``nomyo-audit log verify --key`` passes. The server runs
with PostgreSQL's durable defaults (fsync=on, synchronous_commit=on): an acknowledgement means
the record is on disk, which is what these tests hold the store to.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from conftest import require
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from postgres_server import PostgresServer, PostgresUnavailable

from nomyo_audit.audit import AuditLog
from nomyo_audit.audit._postgres_schema import SEQUENCER_LOCK
from nomyo_audit.cli import cli

pytestmark = pytest.mark.postgres

WRITER = Path(__file__).resolve().parent / "postgres_writer.py"


@pytest.fixture(scope="module")
def durable_server() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer(durable=True).start()
    except PostgresUnavailable as exc:
        require(False, str(exc))
    yield server
    server.stop()


@pytest.fixture
def log_url(durable_server: PostgresServer) -> Iterator[str]:
    url = durable_server.create_database()
    yield url
    durable_server.drop_database(dbname(url))


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    key = Ed25519PrivateKey.generate()
    private, public = tmp_path / "audit.key", tmp_path / "audit.key.pub"
    private.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    return private, public


def dbname(url: str) -> str:
    return url.rsplit("/", 1)[1]


@dataclass
class Writer:
    proc: subprocess.Popen[bytes]
    out: Path

    def lines(self) -> list[list[str]]:
        """Whole lines only: a process killed mid-write may leave half a line at the end."""
        text = self.out.read_text(errors="replace") if self.out.exists() else ""
        return [line.split() for line in text.split("\n")[:-1]]

    def acks(self) -> int:
        return sum(1 for parts in self.lines() if parts[:1] == ["ack"])


@dataclass
class Fleet:
    """Writer processes on one log, and what they acknowledged."""

    url: str
    key: Path
    directory: Path
    writers: list[Writer] = field(default_factory=list)

    def spawn(self, threads: int = 3) -> Writer:
        n = len(self.writers)
        out = self.directory / f"writer-{n}.out"
        with open(out, "wb") as fh, open(out.with_suffix(".err"), "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, str(WRITER), self.url, str(self.key), str(threads), f"w{n}-"],
                stdout=fh, stderr=err,
            )
        writer = Writer(proc, out)
        self.writers.append(writer)
        return writer

    def alive(self) -> list[Writer]:
        return [w for w in self.writers if w.proc.poll() is None]

    def wait_acks(self, writer: Writer, more: int, timeout: float = 60.0) -> None:
        target = writer.acks() + more
        deadline = time.monotonic() + timeout
        while writer.acks() < target:
            stderr = writer.out.with_suffix(".err")
            assert writer.proc.poll() is None, f"writer died: {stderr.read_text()[-800:]}"
            assert time.monotonic() < deadline, f"writer made no progress: {writer.out.read_text()[-500:]}"
            time.sleep(0.05)

    def kill(self, writer: Writer) -> None:
        writer.proc.send_signal(signal.SIGKILL)
        writer.proc.wait(timeout=30)

    def stop(self) -> None:
        for writer in self.alive():
            self.kill(writer)

    def acknowledged(self) -> dict[str, int]:
        acked: dict[str, int] = {}
        for writer in self.writers:
            for parts in writer.lines():
                if parts[:1] == ["ack"] and len(parts) == 3:
                    assert parts[1] not in acked, f"{parts[1]} acknowledged twice"
                    acked[parts[1]] = int(parts[2])
        return acked

    def bugs(self) -> list[str]:
        lines = [parts for writer in self.writers for parts in writer.lines()]
        return [" ".join(p) for p in lines if p[:1] == ["error"] and "BUG:" in p[-1]]


def started(fleet: Fleet, *, writers: int, threads: int = 3) -> Fleet:
    """``writers`` writer processes, each acknowledged 20 times already."""
    for _ in range(writers):
        fleet.spawn(threads)
    try:
        for writer in fleet.writers:
            fleet.wait_acks(writer, 20)
    except BaseException:
        fleet.stop()
        raise
    return fleet


def holder(server: PostgresServer, url: str, fleet: Fleet) -> Writer | None:
    """The writer process whose connection holds the sequencer lock (by the connection's local port)."""
    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
        row = conn.execute(
            "SELECT a.client_port FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "JOIN pg_database d ON d.oid = l.database WHERE l.locktype = 'advisory' AND l.granted "
            "AND d.datname = %s AND l.classid::bigint = %s AND l.objid::bigint = %s AND l.objsubid = 1",
            (dbname(url), SEQUENCER_LOCK >> 32, SEQUENCER_LOCK & 0xFFFFFFFF),
        ).fetchone()
    if row is None:
        return None
    inode = _socket_inode(int(row[0]))
    for writer in fleet.alive():
        fds = Path(f"/proc/{writer.proc.pid}/fd")
        try:
            if any(os.readlink(fd) == f"socket:[{inode}]" for fd in fds.iterdir()):
                return writer
        except OSError:
            continue
    return None


def _socket_inode(port: int) -> str | None:
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            for line in fh.readlines()[1:]:
                parts = line.split()
                if int(parts[1].rsplit(":", 1)[1], 16) == port:
                    return parts[9]
    return None


def wait_for_holder(server: PostgresServer, url: str, fleet: Fleet, timeout: float = 30.0) -> Writer:
    deadline = time.monotonic() + timeout
    while (found := holder(server, url, fleet)) is None:
        assert time.monotonic() < deadline, "no writer process holds the sequencer"
        time.sleep(0.1)
    return found


def settle_and_check(url: str, fleet: Fleet, public_key: Path, *, minimum: int) -> None:
    """Stop everyone, let a fresh writer's sequencer sequence what the dead left pending, then check."""
    fleet.stop()
    acknowledged = fleet.acknowledged()
    with AuditLog(url), psycopg.connect(url, autocommit=True) as conn:
        deadline = time.monotonic() + 60
        while (pending := conn.execute("SELECT count(*) FROM pending").fetchone()[0]) > 0:
            assert time.monotonic() < deadline, f"{pending} pending rows were never sequenced"
            time.sleep(0.1)
        rows = conn.execute("SELECT seq, payload_id FROM records ORDER BY seq").fetchall()
    payload_ids = [payload_id for _, payload_id in rows]
    assert [seq for seq, _ in rows] == list(range(len(rows)))
    doubled = len(payload_ids) - len(set(payload_ids))
    assert doubled == 0, f"{doubled} payload_ids appear twice"
    position = dict(zip(payload_ids, range(len(rows)), strict=True))
    lost = [p for p in acknowledged if p not in position]
    assert not lost, f"{len(lost)} acknowledged records are missing, e.g. {lost[:3]}"
    moved = [p for p, seq in acknowledged.items() if position[p] != seq]
    assert not moved, f"acknowledged at one position, stored at another: {moved[:3]}"
    assert not fleet.bugs(), fleet.bugs()[:3]
    assert len(acknowledged) >= minimum
    result = CliRunner().invoke(cli, ["log", "verify", "--log", url, "--key", str(public_key)])
    assert result.exit_code == 0, result.output


def test_sigkill_of_writers_mid_batch(durable_server: PostgresServer, log_url: str, keys: Any,
                                      tmp_path: Path) -> None:
    rng = random.Random(16_001)
    fleet = started(Fleet(log_url, keys[0], tmp_path), writers=4)
    try:
        for _ in range(4):
            keeper = wait_for_holder(durable_server, log_url, fleet)
            victim = rng.choice([w for w in fleet.alive() if w is not keeper])
            fleet.wait_acks(victim, rng.randint(1, 60))
            time.sleep(rng.uniform(0, 0.05))
            fleet.kill(victim)
            fleet.wait_acks(fleet.spawn(), 20)
        fleet.wait_acks(fleet.alive()[0], 50)
    finally:
        fleet.stop()
    settle_and_check(log_url, fleet, keys[1], minimum=400)


def test_sigkill_of_the_sequencer_holder_mid_batch(durable_server: PostgresServer, log_url: str, keys: Any,
                                                   tmp_path: Path) -> None:
    rng = random.Random(16_002)
    fleet = started(Fleet(log_url, keys[0], tmp_path), writers=4)
    try:
        killed = 0
        for _ in range(4):
            sequencer = wait_for_holder(durable_server, log_url, fleet)
            others = [w for w in fleet.alive() if w is not sequencer]
            fleet.wait_acks(rng.choice(others), rng.randint(1, 60))
            time.sleep(rng.uniform(0, 0.05))
            fleet.kill(sequencer)
            killed += 1
            for writer in others:  # a survivor takes over: everyone keeps being acknowledged
                fleet.wait_acks(writer, 10)
            fleet.spawn()
        assert killed == 4
    finally:
        fleet.stop()
    settle_and_check(log_url, fleet, keys[1], minimum=400)


def test_terminated_connections_mid_batch(durable_server: PostgresServer, log_url: str, keys: Any,
                                          tmp_path: Path) -> None:
    rng = random.Random(16_003)
    fleet = started(Fleet(log_url, keys[0], tmp_path), writers=4)
    try:
        terminated = 0
        for _ in range(5):
            fleet.wait_acks(rng.choice(fleet.writers), rng.randint(1, 60))
            time.sleep(rng.uniform(0, 0.05))
            terminated += durable_server.terminate(dbname(log_url))
            for writer in fleet.writers:  # every process reconnects and goes on being acknowledged
                fleet.wait_acks(writer, 10)
        assert terminated >= 5 * 4
    finally:
        fleet.stop()
    settle_and_check(log_url, fleet, keys[1], minimum=400)


def test_pending_rows_of_dead_writers_are_sequenced_by_the_next_writer(
    durable_server: PostgresServer, log_url: str, keys: Any, tmp_path: Path
) -> None:
    """Freeze the sequencer holder (SIGSTOP: it keeps the lock), let the others fill ``pending``,
    SIGKILL everyone: the rows nobody acknowledged are left pending, and the next writer's
    sequencer gives each exactly one position."""
    fleet = started(Fleet(log_url, keys[0], tmp_path), writers=3, threads=6)
    try:
        frozen = wait_for_holder(durable_server, log_url, fleet)
        frozen.proc.send_signal(signal.SIGSTOP)
        with psycopg.connect(log_url, autocommit=True) as conn:
            deadline = time.monotonic() + 30
            # each of the other two writers' six threads waits with one record in pending
            while (left := conn.execute("SELECT count(*) FROM pending").fetchone()[0]) < 12:
                assert time.monotonic() < deadline, f"only {left} rows pending"
                time.sleep(0.05)
    finally:
        fleet.stop()
    with psycopg.connect(log_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pending").fetchone()[0] >= 12
    settle_and_check(log_url, fleet, keys[1], minimum=60)
