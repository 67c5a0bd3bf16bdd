"""Reports that chain: three monthly-style reports over one real log (a real router and client append
between them) verify as a series; a missing, altered or re-made report, a log rewritten between
reports, and periods that overlap or leave a gap are each caught with their own message."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path

import pytest

from nomyo_audit import SecureChatCompletion
from nomyo_audit.audit import AuditLog, consistency_proof, ed25519_private, leaf_hash, write_report
from nomyo_audit.audit._keys import generate_audit_key, load_private_key
from nomyo_audit.audit._records import rfc3339
from nomyo_audit.audit._report_chain import (
    ChainError,
    CitedCheckpoint,
    chain_section,
    consistency_from_leaves,
)
from nomyo_audit.cli import main
from nomyo_audit.errors import ExitCode

FORMATS = "json,md"


def chat(router, log: AuditLog, count: int) -> None:
    """``count`` real requests through the client, each appending one record to ``log``."""

    async def run() -> None:
        async with SecureChatCompletion(router.url, allow_http=True, audit_log=log) as client:
            for n in range(count):
                await client.create("qwen3", [{"role": "user", "content": f"q{n}"}])

    asyncio.run(run())


def boundary() -> str:
    """A period boundary strictly between the records before it and those after."""
    time.sleep(0.01)
    stamp = rfc3339(time.time())
    time.sleep(0.01)
    return stamp


class Series:
    """One log, its key (checkpoints and reports), and reports made between batches of real requests."""

    def __init__(self, tmp_path: Path, router) -> None:
        self.dir = tmp_path
        self.key, self.pub = generate_audit_key(tmp_path / "audit.key")
        self.db = tmp_path / "audit.db"
        self.router = router
        self.bounds = [boundary()]

    def batch(self, count: int, *, checkpoint: bool = True) -> None:
        with AuditLog(self.db, key=ed25519_private(self.key)) as log:
            chat(self.router, log, count)
            if checkpoint:
                log.checkpoint()
        self.bounds.append(boundary())

    def report(self, name: str, *extra: str, previous: str | None = None, until: str | None = None) -> int:
        args = ["report", "--log", str(self.db), "--format", FORMATS, "--sign", str(self.key)]
        args += ["--log-key", str(self.pub), "-o", str(self.dir / name)]
        if previous is not None:
            args += ["--previous", str(self.dir / previous)]
        else:
            args += ["--since", self.bounds[-2]]
        return main([*args, "--until", until or self.bounds[-1], *extra])

    def verify(self, *names: str, log: bool = False) -> int:
        args = ["verify-report", *(str(self.dir / n) for n in names), "--key", str(self.pub)]
        return main([*args, "--log", str(self.db)] if log else args)

    def document(self, name: str) -> dict:
        return json.loads((self.dir / name / "report.json").read_text())

    def resign(self, name: str, document: dict) -> None:
        """Re-render and re-sign a report with the same key: what someone holding the key could do."""
        write_report(
            document, FORMATS.split(","), self.dir / name, load_private_key(self.key), overwrite=True
        )


@pytest.fixture
def series(tmp_path, router) -> Series:
    """r1, r2, r3: each after a batch of real requests and a checkpoint, r2 and r3 chained."""
    made = Series(tmp_path, router)
    for number, count in ((1, 2), (2, 3), (3, 2)):
        made.batch(count)
        previous = f"r{number - 1}" if number > 1 else None
        assert made.report(f"r{number}", previous=previous) == ExitCode.OK
    return made


def test_a_report_states_its_period_records_and_checkpoint_exactly(series):
    r1, r2 = series.document("r1"), series.document("r2")
    covers = r1["covers"]
    assert (covers["first_seq"], covers["last_seq"], covers["records"]) == (0, 1, 2)
    assert covers["period"] == {"since": series.bounds[0], "until": series.bounds[1]}
    assert covers["checkpoint"]["size"] == 2
    assert covers["checkpoint"]["note"] == r1["log"]["checkpoint"]["note"]
    assert "chain" not in r1
    # r2 starts where r1 ended, counts the next records, and names r1 exactly
    assert r2["covers"]["period"]["since"] == series.bounds[1]
    assert (r2["covers"]["first_seq"], r2["covers"]["last_seq"]) == (2, 4)
    previous = r2["chain"]["previous"]
    assert previous["checkpoint"] == covers["checkpoint"]
    assert (
        previous["report_sha256"]
        == hashlib.sha256((series.dir / "r1" / "report.json").read_bytes()).hexdigest()
    )
    assert r2["chain"]["consistency_proof"]


def test_a_chain_of_three_reports_verifies(series, capsys):
    assert series.verify("r1", "r2", "r3", log=True) == ExitCode.OK
    out = capsys.readouterr().out
    assert "3 reports chain" in out
    assert "no gap or overlap" in out
    assert (
        main(
            [
                "verify-report",
                str(series.dir / "r3"),
                "--previous",
                str(series.dir / "r2"),
                "--key",
                str(series.pub),
            ]
        )
        == ExitCode.OK
    )
    assert series.verify("r3") == ExitCode.OK  # alone: its own proof, and a note to pass --previous
    assert "pass --previous" in capsys.readouterr().out


def test_removing_the_middle_report_is_detected(series, capsys):
    assert series.verify("r1", "r3") == ExitCode.INTEGRITY
    err = capsys.readouterr().err
    assert "the chain breaks" in err and "r3 chains from checkpoint" in err


def test_altering_any_byte_of_the_middle_report_breaks_its_signature(series, capsys):
    path = series.dir / "r2" / "report.md"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    assert series.verify("r1", "r2", "r3") == ExitCode.INTEGRITY
    assert "report.md: modified after it was signed" in capsys.readouterr().err


def test_a_middle_report_re_signed_with_another_checkpoint_breaks_the_chain(series, capsys):
    document = series.document("r2")
    with AuditLog.open(series.db) as log:
        older = log.checkpoints()[0]  # size 1, made with the first record
    document["covers"]["checkpoint"] = {"size": older.size, "root": older.root.hex(), "note": older.note}
    series.resign("r2", document)
    assert series.verify("r2") == ExitCode.INTEGRITY  # its own proof no longer leads to its checkpoint
    assert "consistency proof does not verify" in capsys.readouterr().err
    assert series.verify("r1", "r2", "r3") == ExitCode.INTEGRITY
    assert "does not verify" in capsys.readouterr().err
    del document["chain"]  # and re-made without a chain: r3 still names the original r2
    series.resign("r2", document)
    assert series.verify("r2", "r3") == ExitCode.INTEGRITY
    assert "the chain breaks: " in capsys.readouterr().err


def test_a_log_rewritten_between_reports_is_refused_and_detected(tmp_path, router, capsys):
    made = Series(tmp_path, router)
    made.batch(2)
    assert made.report("r1") == ExitCode.OK
    origin = json.loads((tmp_path / "r1" / "report.json").read_text())["log"]["checkpoint"]["origin"]
    # the same key writes a new log under the same name: other records at the sizes r1 covered
    made.db.rename(tmp_path / "original.db")
    with AuditLog(made.db, key=ed25519_private(made.key), origin=origin) as log:
        chat(router, log, 3)
        log.checkpoint()
    made.bounds.append(boundary())
    assert made.report("r2", previous="r1") == ExitCode.INTEGRITY
    assert "the log was rewritten after that report" in capsys.readouterr().err
    assert not (tmp_path / "r2").exists()

    # a chained report forged over the rewritten log: its proof cannot lead from r1's checkpoint
    assert made.report("r2", "--since", made.bounds[1]) == ExitCode.OK
    forged = made.document("r2")
    previous = CitedCheckpoint.from_claim(made.document("r1")["covers"]["checkpoint"], "r1")
    own = CitedCheckpoint.from_claim(forged["covers"]["checkpoint"], "r2")
    with AuditLog.open(made.db) as log:
        leaves = [leaf_hash(data) for _, _, _, data, _ in log.store.scan()]
    with pytest.raises(ChainError, match="rewritten"):
        consistency_from_leaves(leaves, previous, own)
    proof = consistency_proof(leaves[: own.size], previous.size)  # from the rewritten log, unchecked
    sha = hashlib.sha256((tmp_path / "r1" / "report.json").read_bytes()).hexdigest()
    forged["chain"] = chain_section(sha, previous, proof)
    made.resign("r2", forged)
    assert made.verify("r1", "r2") == ExitCode.INTEGRITY
    assert "consistency proof does not verify" in capsys.readouterr().err


def test_a_period_that_overlaps_or_leaves_a_gap_is_refused_then_detected(series, capsys):
    series.batch(1)
    for since, word in ((series.bounds[-3], "overlaps"), (series.bounds[-1], "leaves a gap")):
        code = series.report("r4", "--since", since, previous="r3", until=rfc3339(time.time() + 1))
        assert code == ExitCode.USAGE
        assert word in capsys.readouterr().err
    # made anyway by other means and signed: the series check names it (exit 1, a finding)
    r3 = series.document("r3")
    for since, word in (
        (series.bounds[1], "period overlaps"),
        (series.bounds[-1], "period leaves a gap after"),
    ):
        document = {**r3, "covers": {**r3["covers"], "period": {**r3["covers"]["period"], "since": since}}}
        series.resign("r3", document)
        assert series.verify("r2", "r3") == ExitCode.FINDING
        assert word in capsys.readouterr().err


def test_records_a_report_missed_are_named_as_a_gap(tmp_path, router, capsys):
    made = Series(tmp_path, router)
    made.batch(2)
    later = rfc3339(time.time() + 3600)
    assert made.report("r1", until=later) == ExitCode.OK  # made before its period ended
    assert "the period has not ended" in capsys.readouterr().err
    with AuditLog(made.db, key=ed25519_private(made.key)) as log:
        chat(router, log, 2)  # written in r1's period, after r1
        log.checkpoint()
    assert made.report("r2", previous="r1", until=rfc3339(time.time() + 7200)) == ExitCode.OK
    assert made.verify("r1", "r2") == ExitCode.FINDING
    err = capsys.readouterr().err
    assert "records 2 to 3 are in no report" in err


def test_a_report_that_cannot_be_chained_from_is_refused(tmp_path, router, capsys):
    made = Series(tmp_path, router)
    made.batch(1)
    made.batch(2, checkpoint=False)  # records 1 and 2 under no checkpoint
    assert made.report("r1", "--since", made.bounds[0]) == ExitCode.OK
    with AuditLog(made.db, key=ed25519_private(made.key)) as log:
        log.checkpoint()
    made.bounds.append(boundary())
    assert made.report("r2", previous="r1") == ExitCode.USAGE
    assert "which its checkpoint (size 1) does not cover" in capsys.readouterr().err
