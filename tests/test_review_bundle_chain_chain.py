"""Review of chained reports (issue 15 section 4): what verify-report must catch that it did not.

The series are real: a real router and client append the records (tests/test_report_chain.py's
Series), reports are made and signed by the CLI; a lying report is re-signed with the same key,
which is what someone holding the report key could do.
"""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_report_chain import Series, chat

from nomyo_audit.audit import AuditLog, consistency_proof, ed25519_private, leaf_hash
from nomyo_audit.audit._merkle import root_of
from nomyo_audit.audit._note import Checkpoint, sign_checkpoint
from nomyo_audit.audit._records import rfc3339
from nomyo_audit.audit._report_chain import ChainError, CitedCheckpoint, chain_section, verify_chain_proof
from nomyo_audit.errors import ExitCode


def test_a_span_that_hides_a_gap_is_caught_against_the_log(tmp_path, router, capsys):
    """r2 re-signed claiming its span starts where r1's ended, hiding the records no report counted:
    without the log nothing can show it; with --log the span is recomputed and the lie is exit 3."""
    made = Series(tmp_path, router)
    made.batch(2)
    assert made.report("r1", until=rfc3339(time.time() + 3600)) == ExitCode.OK
    with AuditLog(made.db, key=ed25519_private(made.key)) as log:
        chat(router, log, 2)  # written in r1's period, after r1: no report counts them
        log.checkpoint()
    assert made.report("r2", previous="r1", until=rfc3339(time.time() + 7200)) == ExitCode.OK
    assert made.verify("r1", "r2", log=True) == ExitCode.FINDING  # the truth: records 2 and 3 missed
    capsys.readouterr()
    lie = made.document("r2")
    assert lie["covers"]["span"] == {"from": 4, "to": 4}
    lie["covers"]["span"] = {"from": 2, "to": 4}
    made.resign("r2", lie)
    assert made.verify("r1", "r2") == ExitCode.OK  # the signer's word, all there is without the log
    capsys.readouterr()
    assert made.verify("r1", "r2", log=True) == ExitCode.INTEGRITY
    err = capsys.readouterr().err
    assert "span" in err and "records 4 to 3" not in err and "Traceback" not in err


def test_a_lying_span_of_a_single_report_is_caught_against_the_log(tmp_path, router, capsys):
    made = Series(tmp_path, router)
    made.batch(3)
    assert made.report("r1") == ExitCode.OK
    lie = made.document("r1")
    lie["covers"]["span"] = {"from": 0, "to": 7}
    made.resign("r1", lie)
    assert made.verify("r1", log=True) == ExitCode.INTEGRITY
    assert "but the log holds records 0 to 2 in it" in capsys.readouterr().err


def test_verify_report_reads_the_log_once_for_a_whole_series(tmp_path, router, monkeypatch):
    """Each report used to rescan the log twice (checkpoint and log root): 24 passes for 12 reports."""
    from nomyo_audit.audit._sqlite import SQLiteStore

    made = Series(tmp_path, router)
    made.batch(1)
    assert made.report("r1") == ExitCode.OK
    for number in range(2, 5):
        made.batch(1)
        assert made.report(f"r{number}", previous=f"r{number - 1}") == ExitCode.OK
    scans = []
    real = SQLiteStore.scan

    def counted(self):
        scans.append(1)
        return real(self)

    monkeypatch.setattr(SQLiteStore, "scan", counted)
    assert made.verify("r1", "r2", "r3", "r4", log=True) == ExitCode.OK
    assert len(scans) == 1


def _report(leaves: list[bytes], size: int, origin: str, key: Ed25519PrivateKey) -> dict:
    note = sign_checkpoint(Checkpoint(origin, size, root_of(leaves[:size])), key)
    return {"covers": {"checkpoint": {"size": size, "root": root_of(leaves[:size]).hex(), "note": note}}}


def test_a_chain_from_a_checkpoint_of_another_log_is_refused():
    """Two logs with the same records and key but other origins (a copied log renamed): a report of
    one must not chain from a report of the other, as report --previous already refuses to make."""
    key = Ed25519PrivateKey.generate()
    leaves = [leaf_hash(b"record %d" % n) for n in range(9)]
    previous = _report(leaves, 4, "example.test/log-a", key)
    report = _report(leaves, 9, "example.test/log-b", key)
    cited = CitedCheckpoint.from_claim(previous["covers"]["checkpoint"], "a")
    report["chain"] = chain_section("00" * 32, cited, consistency_proof(leaves, 4))
    with pytest.raises(ChainError, match="another log"):
        verify_chain_proof(report, "b")
    same = _report(leaves, 9, "example.test/log-a", key)  # the same origin chains
    same["chain"] = report["chain"]
    assert verify_chain_proof(same, "b") == cited


def test_reports_given_out_of_order_are_named_so_and_never_pass(tmp_path, router, capsys):
    """They failed closed, but as 'a report between them is missing or was replaced' (exit 3), which
    sends an auditor looking for a tampered archive; a misordered command line is usage (exit 2)."""
    made = Series(tmp_path, router)
    made.batch(1)
    assert made.report("r1") == ExitCode.OK
    for number in (2, 3):
        made.batch(1)
        assert made.report(f"r{number}", previous=f"r{number - 1}") == ExitCode.OK
    capsys.readouterr()
    for order in (("r2", "r1"), ("r1", "r3", "r2"), ("r3", "r2", "r1")):
        assert made.verify(*order) == ExitCode.USAGE, order
        assert "oldest first" in capsys.readouterr().err
    assert made.verify("r1", "r3") == ExitCode.INTEGRITY  # one missing is still a broken chain
    assert "the chain breaks" in capsys.readouterr().err
