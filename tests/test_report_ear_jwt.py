"""report --ear-jwt (issue 15, section 2, the per-record option): one signed EAR JWT per record the
report covers, in report.ear.jwt beside the other report files and signed with them. Tokens are
checked with jwcrypto (code we did not write) against the report key's public half; the signed
report still verifies, and an edited token file fails verify-report."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from pathlib import Path

import pytest
from jwcrypto import jwk
from jwcrypto import jwt as jjwt

from nomyo_audit import SecureChatCompletion
from nomyo_audit.audit import AuditLog, ed25519_private
from nomyo_audit.audit._keys import generate_audit_key
from nomyo_audit.cli import main
from nomyo_audit.errors import ExitCode

TOKENS = "report.ear.jwt"


def chat(router, log: AuditLog, count: int, protocol: str = "1.0") -> None:
    """``count`` real requests through the client, each appending one record to ``log``."""

    async def run() -> None:
        async with SecureChatCompletion(
            router.url, allow_http=True, audit_log=log, protocol=protocol
        ) as client:
            for n in range(count):
                await client.create("qwen3", [{"role": "user", "content": f"q{n}"}])

    asyncio.run(run())


@pytest.fixture
def logged(tmp_path, router):
    """A real log of three replies from a real router, checkpointed, and the audit key (Ed25519)."""
    key, pub = generate_audit_key(tmp_path / "audit.key")
    db = tmp_path / "audit.db"
    with AuditLog(db, key=ed25519_private(key)) as log:
        chat(router, log, 3)
        log.checkpoint()
    return db, key, pub


def report(db: Path, key: Path | None, out: Path, *extra: str) -> int:
    args = ["report", "--log", str(db), "--format", "json,md", "-o", str(out), "--ear-jwt", *extra]
    return main([*args, "--sign", str(key)] if key is not None else args)


def lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / TOKENS).read_text().splitlines()]


def test_each_record_gets_a_token_that_jwcrypto_verifies_with_the_report_key(logged, tmp_path):
    db, key, pub = logged
    out = tmp_path / "out"
    assert report(db, key, out, "--generated-at", "2026-01-01T00:00:00Z") == ExitCode.OK
    document = json.loads((out / "report.json").read_text())
    rows = lines(out)
    assert [row["seq"] for row in rows] == [0, 1, 2] == list(range(document["covers"]["records"]))
    verifying = jwk.JWK.from_pem(pub.read_bytes())
    with AuditLog.open(db) as log:
        stored = {r.seq: json.loads(r.data)["payload_id"] for r in log.store.records(None, None)}
    for row in rows:
        checked = jjwt.JWT(jwt=row["jwt"], key=verifying, algs=["EdDSA"], expected_type="JWS")
        claims = json.loads(checked.claims)
        assert checked.token.jose_header["alg"] == "EdDSA"
        assert row["payload_id"] == claims["nomyo-audit.payload-id"] == stored[row["seq"]]
        assert claims["iat"] == 1767225600  # the report's generation time: re-rendering gives the same bytes
        assert claims["submods"]["tpm"]["ear.status"] in {"affirming", "warning", "contraindicated", "none"}


def test_the_token_file_is_signed_with_the_report_and_an_edit_fails_verify_report(logged, tmp_path, capsys):
    db, key, pub = logged
    out = tmp_path / "out"
    assert report(db, key, out) == ExitCode.OK
    envelope = json.loads((out / "report.dsse.json").read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    digests = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
    assert digests[TOKENS] == hashlib.sha256((out / TOKENS).read_bytes()).hexdigest()
    assert main(["verify-report", str(out), "--key", str(pub), "--log", str(db)]) == ExitCode.OK
    assert (out / TOKENS).stat().st_mode & 0o777 == 0o644
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no partial file left behind
    rows = (out / TOKENS).read_text().splitlines()
    (out / TOKENS).write_text("\n".join(rows[:-1]) + "\n")  # a token removed
    capsys.readouterr()
    assert main(["verify-report", str(out), "--key", str(pub)]) == ExitCode.INTEGRITY
    assert f"{TOKENS}: modified after it was signed" in capsys.readouterr().err


def test_ear_jwt_needs_a_report_key_that_signs_jwts(logged, tmp_path, capsys):
    db, _, _ = logged
    out = tmp_path / "out"
    assert report(db, None, out) == ExitCode.USAGE
    assert "--ear-jwt" in capsys.readouterr().err
    rsa_key, _ = generate_audit_key(tmp_path / "rsa.key", kind="rsa-pss")
    assert report(db, rsa_key, out) == ExitCode.USAGE
    assert "Ed25519" in capsys.readouterr().err
    assert not out.exists()  # refused before anything was read or written


def test_an_existing_token_file_is_refused_without_force_and_nothing_is_written(logged, tmp_path, capsys):
    db, key, _ = logged
    out = tmp_path / "out"
    out.mkdir()
    (out / TOKENS).write_text("kept\n")
    assert report(db, key, out) == ExitCode.USAGE
    assert (out / TOKENS).read_text() == "kept\n"
    assert sorted(p.name for p in out.iterdir()) == [TOKENS]
    assert report(db, key, out, "--force") == ExitCode.OK
    assert len(lines(out)) == 3
