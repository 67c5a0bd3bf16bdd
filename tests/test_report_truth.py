"""Reports say what is true: they verify the log they summarise, name what they cover, never take the
router's word for a result, survive malformed records, and say what kind of attester stood behind
each quote (issue 10, sections 1, 2, 6 and 7)."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import stat
import time

import pytest
from click.testing import CliRunner
from conftest import PRODUCTION_UNANCHORED
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nomyo_audit.attest._attester import TPMAttester
from nomyo_audit.attest._software import SoftwareTPM
from nomyo_audit.audit import AuditLog, build_report
from nomyo_audit.audit._keys import generate_audit_key, load_private_key
from nomyo_audit.audit._merkle import leaf_hash
from nomyo_audit.audit._records import build_record
from nomyo_audit.audit._render import FORMATS, render_report
from nomyo_audit.cli import cli, main
from nomyo_audit.errors import ExitCode
from nomyo_audit.policy import load_policy
from nomyo_audit.tpm._binding import client_key_binding, response_content_digest
from nomyo_audit.tpm._measurements import measure_demo_boot
from nomyo_audit.tpm._verify import verify_attestation

DAY = 1_795_000_000.0  # 2026-11-18T...Z: records of one day, an hour apart
ALL_FORMATS = ",".join(FORMATS)
#: SHA-256 of the DER SPKI of the client's protocol 1.0 key, as the router names it in _metadata
CLIENT_KEY = bytes(range(32))


def attested_record(tpm, payload_id, *, moment, stated_tier="high", outcome="ok"):
    """What the client writes for one attested reply (software attester, the client's own verdict)."""
    response = {"id": "c", "model": "echo", "choices": [{"message": {"content": "SECRET-COMPLETION"}}]}
    digest = response_content_digest(response)
    block = TPMAttester(tpm).evidence(client_key_binding(payload_id, digest, CLIENT_KEY))
    response["_metadata"] = {
        "payload_id": payload_id,
        "client_key_sha256": CLIENT_KEY.hex(),  # what the client keeps of a reply it accepted
        "processed_at": int(moment),
        "security_tier": stated_tier,
        "memory_protection": {"memory_locking": True, "secure_zeroing": True, "core_dump_prevention": True},
        "tpm_attestation": block,
        "verification": verify_attestation(
            block, payload_id, content_digest=digest, client_key_sha256=CLIENT_KEY
        ).to_dict(),
    }
    return lambda seq, salt: build_record(
        seq=seq,
        timestamp=moment,
        salt=salt,
        payload_id=payload_id,
        router="http://router-a:8000",
        server_key="ab" * 32,
        model="echo",
        security_tier=None,  # the caller asked for no tier; the reply states one
        outcome=outcome,
        request={"messages": [{"role": "user", "content": "SECRET-PROMPT"}]},
        response=response,
    )


@pytest.fixture
def signed_log(tmp_path):
    """Six attested records an hour apart on one day, a checkpoint over them, the audit key pair."""
    key, pub = generate_audit_key(tmp_path / "audit.key")
    tpm = SoftwareTPM()
    measure_demo_boot(tpm)
    db = tmp_path / "audit.db"
    with AuditLog(db, key=load_private_key(key), checkpoint_every=10**9, checkpoint_interval=1e12) as log:
        for n in range(6):
            log.append(
                f"p-{n}", attested_record(tpm, f"p-{n}", moment=DAY + 3600 * n), timestamp=DAY + 3600 * n
            )
        log.checkpoint()
    return db, key, pub


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result


def make_report(db, out, *extra):
    result = run(
        "report",
        "--log",
        db,
        "--format",
        ALL_FORMATS,
        "--generated-at",
        "2026-11-25T12:00:00Z",
        "-o",
        out,
        *extra,
    )
    assert result.exit_code == 0, result.output
    return json.loads((out / "report.json").read_text())


def alter_record_bytes(db, seq, old, new):
    """An insider edits a record's bytes and leaves its stored leaf hash alone."""
    with sqlite3.connect(db) as con:
        (data,) = con.execute("SELECT data FROM records WHERE seq = ?", (seq,)).fetchone()
        assert old in data
        con.execute("UPDATE records SET data = ? WHERE seq = ?", (data.replace(old, new), seq))


# -- 1. the log behind a report ------------------------------------------------------------------------


def test_verify_report_recomputes_the_root_from_the_record_bytes(signed_log, tmp_path, capsys):
    db, key, pub = signed_log
    out = tmp_path / "r"
    make_report(db, out, "--sign", key)
    assert main(["verify-report", str(out), "--key", str(pub), "--log", str(db)]) == ExitCode.OK
    capsys.readouterr()
    alter_record_bytes(db, 3, b'"outcome":"ok"', b'"outcome":"ko"')
    assert main(["verify-report", str(out), "--key", str(pub), "--log", str(db)]) == ExitCode.INTEGRITY
    assert "record 3" in capsys.readouterr().err
    # the insider also rewrites the stored leaf hash: the root at the report's size still differs
    with sqlite3.connect(db) as con:
        (data,) = con.execute("SELECT data FROM records WHERE seq = 3").fetchone()
        con.execute("UPDATE records SET leaf = ? WHERE seq = 3", (leaf_hash(data),))
    assert main(["verify-report", str(out), "--key", str(pub), "--log", str(db)]) == ExitCode.INTEGRITY
    assert "does not match the report's checkpoint" in capsys.readouterr().err


def test_report_refuses_a_log_that_does_not_verify_and_writes_nothing(signed_log, tmp_path, capsys):
    db, key, _ = signed_log
    alter_record_bytes(db, 2, b'"outcome":"ok"', b'"outcome":"ko"')
    out = tmp_path / "r"
    code = main(["report", "--log", str(db), "--sign", str(key), "-o", str(out)])
    assert code == ExitCode.INTEGRITY
    assert "record 2" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_report_refuses_a_checkpoint_the_records_do_not_match(signed_log, tmp_path):
    db, _, _ = signed_log
    with sqlite3.connect(db) as con:  # the cited checkpoint's root no longer describes the records
        con.execute("UPDATE checkpoints SET root = zeroblob(32)")
    assert main(["report", "--log", str(db), "-o", str(tmp_path / "r")]) == ExitCode.INTEGRITY


def test_a_report_states_the_sequence_range_it_covers_and_the_log_it_verified(signed_log, tmp_path):
    db, _, pub = signed_log
    out = tmp_path / "r"
    since, until = (
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(DAY + 3600)),
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(DAY + 4 * 3600)),
    )
    report = make_report(db, out, "--since", since, "--until", until, "--log-key", pub)
    covers = report["covers"]
    assert (covers["first_seq"], covers["last_seq"], covers["records"]) == (1, 3, 3)
    assert covers["span"] == {"from": 1, "to": 4}  # records 1 to 3 are all the period's
    assert covers["checkpoint"]["note"] == report["log"]["checkpoint"]["note"]
    verified = report["log"]["verification"]
    assert verified["intact"] is True and verified["size"] == 6
    assert verified["checkpoint"]["size"] == 6 and verified["checkpoint"]["time"]
    assert verified["checkpoint"]["signer"] == report["log"]["checkpoint"]["signer"]
    assert verified["key"] == "given"  # checked with the key passed on the command line
    for name in ("report.html", "report.md"):
        text = (out / name).read_text()
        assert "records 1 to 3" in text and "verified intact" in text
        assert verified["checkpoint"]["signer"][:16] in text


def test_report_files_have_explicit_modes_and_never_follow_or_replace(signed_log, tmp_path):
    db, _, _ = signed_log
    out = tmp_path / "r"
    old = os.umask(0o077)
    try:
        make_report(db, out)
    finally:
        os.umask(old)
    assert stat.S_IMODE((out / "report.json").stat().st_mode) == 0o644
    # an existing file is not replaced unless asked
    assert main(["report", "--log", str(db), "-o", str(out)]) == ExitCode.USAGE
    # a symlink planted where a report file goes is never written through: refused, even with --force
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (out / "report.md").unlink()
    (out / "report.md").symlink_to(victim)
    assert main(["report", "--log", str(db), "--format", "md", "-o", str(out)]) == ExitCode.USAGE
    assert main(["report", "--log", str(db), "--format", "md", "--force", "-o", str(out)]) == ExitCode.USAGE
    assert victim.read_text() == "precious"
    (out / "report.md").unlink()
    assert make_report(db, out, "--force")["summary"]["requests"] == 6


# -- 2. re-appraisal and the router's word ---------------------------------------------------------------


def test_a_router_sent_policy_result_never_becomes_the_records_result(tmp_path):
    response = {
        "choices": [],
        "_metadata": {"payload_id": "x", "policy": {"outcome": "pass", "rules": []}},  # the router's claim
    }
    data = build_record(
        seq=0,
        timestamp=DAY,
        salt=b"s" * 32,
        payload_id="x",
        router="r",
        server_key=None,
        model="m",
        security_tier=None,
        outcome="ok",
        request={},
        response=response,
    )
    doc = json.loads(data)
    assert doc["policy"] is None and "policy" not in doc["metadata"]
    report = build_report([doc], generated_at="t", log_state={"size": 1, "root": "", "checkpoint": None})
    assert report["summary"]["passed"] == 0 and report["summary"]["failed"] == 1


def test_reappraisal_judges_freshness_at_the_records_time_or_at(signed_log, tmp_path):
    db, _, _ = signed_log
    fresh = make_report(db, tmp_path / "a", "--policy", PRODUCTION_UNANCHORED)
    assert fresh["summary"]["passed"] == 6
    later = make_report(db, tmp_path / "b", "--policy", PRODUCTION_UNANCHORED, "--at", "2030-01-01T00:00:00Z")
    assert later["summary"]["denied"] == 6 and later["policy"]["at"] == "2030-01-01T00:00:00.000Z"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--generated-at", "yesterday"], "RFC 3339"),
        (["--since", "2026-11-02", "--until", "2026-11-01"], "after --until"),
        (["--at", "soon"], "--at"),
    ],
)
def test_report_usage_errors_are_exit_2(signed_log, tmp_path, args, message, capsys):
    db, _, _ = signed_log
    assert main(["report", "--log", str(db), "-o", str(tmp_path / "r"), *args]) == ExitCode.USAGE
    assert message in capsys.readouterr().err


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)
KEYS = st.sampled_from(
    [
        "seq",
        "time",
        "payload_id",
        "router",
        "model",
        "security_tier",
        "outcome",
        "error",
        "metadata",
        "verdict",
        "policy",
        "tool",
    ]
)
METADATA_KEYS = st.sampled_from(
    ["tpm_attestation", "security_tier", "payload_id", "processed_at", "key_attestation", "policy"]
)
DOCUMENT = st.one_of(
    JSON,
    st.dictionaries(KEYS, JSON, max_size=8),
    st.fixed_dictionaries(
        {"time": st.one_of(st.text(max_size=30), JSON), "outcome": JSON},
        optional={
            "metadata": st.dictionaries(METADATA_KEYS, JSON, max_size=4) | JSON,
            "verdict": st.dictionaries(st.sampled_from(["result", "failed", "facts", "findings"]), JSON)
            | JSON,
            "policy": st.dictionaries(st.sampled_from(["outcome", "rules"]), JSON) | JSON,
            "seq": JSON,
        },
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(DOCUMENT, max_size=4), st.booleans())
def test_malformed_records_never_crash_a_report(documents, reappraise):
    policy = load_policy(PRODUCTION_UNANCHORED) if reappraise else None
    report = build_report(
        documents, generated_at="t", log_state={"size": 0, "root": "", "checkpoint": None}, policy=policy
    )
    assert report["summary"]["requests"] == len(documents)
    files = render_report(report, list(FORMATS))
    assert set(files) == set(FORMATS.values())


# -- 7. what the report shows ----------------------------------------------------------------------------


def test_every_format_names_the_attester_kind_and_flags_no_hardware(signed_log, tmp_path):
    db, _, _ = signed_log
    out = tmp_path / "r"
    report = make_report(db, out)
    assert report["summary"]["no_hardware"] == 6
    [entry] = report["attesters"]
    assert entry["router"] == "http://router-a:8000" and entry["attester"] == "software"
    assert entry["aik"] == report["aiks"][0]["fingerprint"] and entry["records"] == 6
    for name in FORMATS.values():
        text = (out / name).read_text()
        assert "software" in text, name
        assert entry["aik"][:16] in text, name
    for name in ("report.html", "report.md"):
        text = (out / name).read_text()
        assert "no hardware" in text and "declared by the router" in text
        assert "genuine TPM" not in text.replace("not evidence of a genuine TPM", "")


def test_the_security_tier_is_the_one_the_reply_stated(signed_log, tmp_path):
    report = make_report(signed_log[0], tmp_path / "r")
    assert report["by_tier"] == {"high": 6}


def test_pcrs_sort_numerically_and_the_chart_has_a_legend_and_hours_for_one_day(signed_log, tmp_path):
    out = tmp_path / "r"
    report = make_report(signed_log[0], out)
    assert [p["pcr"] for p in report["pcr_values"]] == ["sha256:0", "sha256:7", "sha256:10"]
    html = (out / "report.html").read_text()
    assert html.index(">sha256:7<") < html.index(">sha256:10<")
    svg = html[html.index("<svg") : html.index("</svg>")]
    for status in ("passed", "warned", "denied", "failed"):
        assert f">{status}</text>" in svg  # the legend
    assert ">00:00</text>" in svg and ">12:00</text>" in svg  # an hourly axis for one day
    assert "requests per hour" in svg


def test_a_legend_explains_every_status(signed_log, tmp_path):
    out = tmp_path / "r"
    make_report(signed_log[0], out)
    for name in ("report.html", "report.md"):
        text = (out / name).read_text()
        for words in ("passed:", "warned:", "denied:", "failed:", "denied before sending:", "no hardware:"):
            assert words in text, (name, words)


def test_a_request_denied_before_sending_is_labelled_so(make_router, client_keys_dir, tmp_path):
    from nomyo_audit import PolicyViolationError, SecureChatCompletion
    from nomyo_audit.tpm._measurements import TAMPER_EVENT

    tpm = SoftwareTPM()
    measure_demo_boot(tpm)
    router = make_router(attester=TPMAttester(tpm))
    db = tmp_path / "client.db"

    async def go():
        async with SecureChatCompletion(
            router.url,
            allow_http=True,
            key_dir=str(client_keys_dir),
            audit_log=str(db),
            policy=PRODUCTION_UNANCHORED,
        ) as client:
            await client.create("echo", [{"role": "user", "content": "q"}], security_tier="high")
            tpm.extend("sha256", *TAMPER_EVENT)
            client.client._key_attested_until.clear()
            with pytest.raises(PolicyViolationError):
                await client.create("echo", [{"role": "user", "content": "q"}], security_tier="high")

    asyncio.run(go())
    for extra in ([], ["--policy", PRODUCTION_UNANCHORED]):
        out = tmp_path / f"r{len(extra)}"
        report = make_report(db, out, *extra)
        assert report["summary"]["denied"] == 1 and report["summary"]["denied_before_sending"] == 1
        [failure] = report["failures"]
        assert failure["status"] == "denied before sending"
        assert "router key" in failure["reason"] and "signature" not in failure["reason"]
        assert any("pcrs" in rule for rule in failure["rules"])
        assert "denied before sending" in (out / "report.html").read_text()
        assert report["by_tier"] == {"high": 1, "not stated": 1}


def test_report_over_a_missing_or_empty_file_is_exit_2_and_creates_nothing(tmp_path):
    missing, empty = tmp_path / "missing.db", tmp_path / "empty.db"
    empty.write_bytes(b"")
    for path in (missing, empty):
        assert main(["report", "--log", str(path), "-o", str(tmp_path / "r")]) == ExitCode.USAGE
    assert not missing.exists() and empty.read_bytes() == b""
    assert not (tmp_path / "r").exists()


def test_report_with_a_log_key_that_signed_no_checkpoint_is_exit_3(signed_log, tmp_path):
    db, _, _ = signed_log
    _, stranger = generate_audit_key(tmp_path / "stranger.key")
    assert main(["report", "--log", str(db), "--log-key", str(stranger), "-o", str(tmp_path / "r")]) == (
        ExitCode.INTEGRITY
    )
