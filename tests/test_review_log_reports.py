"""An adversarial review of the log and report gates (issue 10, sections 1, 2, 6, 7), on logs the real
client wrote against a real router: what an insider, a careless user or a CI job can do to them."""

from __future__ import annotations

import asyncio
import json
import shutil

import pytest
from conftest import REPO

from nomyo_audit import SecureChatCompletion
from nomyo_audit.audit.keys import ed25519_private, generate_audit_key
from nomyo_audit.audit.log import AuditLog
from nomyo_audit.cli import main
from nomyo_audit.errors import ExitCode
from nomyo_audit.policy.model import PolicyViolationError
from nomyo_audit.tpm.attester import TPMAttester
from nomyo_audit.tpm.measurements import TAMPER_EVENT, measure_demo_boot
from nomyo_audit.tpm.software import SoftwareTPM


@pytest.fixture
def client_log(tmp_path, make_router, client_keys_dir):
    """Three replies the production policy passed and one it denied, written by the real client."""
    tpm = SoftwareTPM()
    measure_demo_boot(tpm)
    router = make_router(attester=TPMAttester(tpm))
    key, pub = generate_audit_key(tmp_path / "audit.key")
    (tmp_path / "policies").mkdir()
    shutil.copy(REPO / "policies" / "production.yaml", tmp_path / "policies")

    async def chats() -> list[str]:
        with AuditLog(tmp_path / "audit.db", key=ed25519_private(key)) as log:
            async with SecureChatCompletion(
                router.url, allow_http=True, key_dir=str(client_keys_dir), policy="production", audit_log=log
            ) as client:
                ids = []
                for n in range(3):
                    reply = await client.create("echo", [{"role": "user", "content": f"q{n}"}])
                    ids.append(reply["_metadata"]["payload_id"])
                tpm.extend("sha256", *TAMPER_EVENT)
                with pytest.raises(PolicyViolationError):
                    await client.create("echo", [{"role": "user", "content": "after the change"}])
            log.checkpoint()
        return ids

    ids = asyncio.run(chats())
    return tmp_path / "audit.db", key, pub, ids


def cli(*args):
    """The real CLI's exit code for ``args``."""
    return main([str(a) for a in args])


# -- what a record's columns say is what its bytes say ----------------------------------------------------


def test_a_record_with_a_policy_result_is_found_by_its_payload_id(client_log, tmp_path, capsys):
    """The payload_id column mirrors the record's own top-level payload_id, even though the client's
    policy result holds a nested "policy" key (the policy's name)."""
    db, _, pub, ids = client_log
    with AuditLog.open(db) as log:
        stored = {record.seq: record.payload_id for record in log.store.records()}
        assert [stored[n] for n in range(3)] == ids
        for record in log.store.records():
            assert record.payload_id == json.loads(record.data)["payload_id"]
    capsys.readouterr()
    assert main(["log", "show", "--log", str(db), "--payload-id", ids[1], "--format", "json"]) == ExitCode.OK
    shown = capsys.readouterr().out.splitlines()
    assert len(shown) == 1 and json.loads(shown[0])["payload_id"] == ids[1]
    proof = tmp_path / "r.tlog-proof"
    assert main(["log", "prove", ids[2], "--log", str(db), "-o", str(proof)]) == ExitCode.OK
    assert main(["log", "verify-proof", str(proof), "--key", str(pub)]) == ExitCode.OK
    assert "record 2 is in" in capsys.readouterr().out


@pytest.mark.parametrize("payload_id", ['a"b', "a\\", 'x","policy":{"y', "naïve", "\u2028", ""])
def test_the_payload_id_column_is_the_top_level_payload_id_whatever_it_holds(tmp_path, payload_id):
    from nomyo_audit.audit.log import record_fields
    from nomyo_audit.audit.records import build_record

    policy = {"outcome": "pass", "policy": "production", "rules": [{"rule": "r", "status": "pass"}]}
    with AuditLog(tmp_path / "a.db") as log:
        log.append(
            payload_id,
            lambda seq, salt: build_record(
                seq=seq,
                timestamp=1.0e9,
                salt=salt,
                payload_id=payload_id,
                router="r",
                server_key=None,
                model="m",
                security_tier=None,
                outcome="ok",
                request={},
                response=None,
                policy=policy,
                metadata={"payload_id": "router-said", "policy": {"outcome": "pass"}},
            ),
        )
        (record,) = log.store.records()
        assert record.payload_id == payload_id and record_fields(record.data) == (payload_id, 1.0e9)
        assert log.store.find(payload_id) is not None and log.verify().ok
