"""docs/ci.md's gate, run as written, against fixtures; and configuration precedence."""

from __future__ import annotations

import asyncio
import importlib
import json
import re
import shlex
import shutil
import time

import pytest
import xmlschema
from conftest import FIXTURES, PRODUCTION_UNANCHORED, REPO

from nomyo_audit import SecureChatCompletion
from nomyo_audit.attest._attester import TPMAttester
from nomyo_audit.attest._software import SoftwareTPM
from nomyo_audit.audit._keys import ed25519_private, generate_audit_key
from nomyo_audit.audit._log import AuditLog
from nomyo_audit.cli import cli, main
from nomyo_audit.errors import ExitCode
from nomyo_audit.tpm._measurements import measure_demo_boot


def docs_block(info: str) -> str:
    block = re.search(rf"```{info}\n(.*?)```", (REPO / "docs" / "ci.md").read_text(), re.S)
    assert block, f"docs/ci.md lost its {info} block"
    return block.group(1)


def gate_commands() -> list[list[str]]:
    lines = docs_block("bash ci-gate").splitlines()
    return [shlex.split(line)[1:] for line in lines if line.startswith("nomyo-audit ")]


@pytest.fixture
def workspace(tmp_path, monkeypatch, make_router, client_keys_dir):
    tpm = SoftwareTPM()
    measure_demo_boot(tpm)
    router = make_router(attester=TPMAttester(tpm))
    key, _ = generate_audit_key(tmp_path / "audit.key")
    (tmp_path / "policies").mkdir()
    # the workspace's production policy for a software-attester router: production's other rules
    # with any AIK (production itself denies the software attester on aik_trust)
    shutil.copy(PRODUCTION_UNANCHORED, tmp_path / "policies" / "production.yaml")
    (tmp_path / "evidence").mkdir()

    async def chats():
        with AuditLog(tmp_path / "audit.db", key=ed25519_private(key)) as log:
            async with SecureChatCompletion(
                router.url,
                allow_http=True,
                key_dir=str(client_keys_dir),
                policy=PRODUCTION_UNANCHORED,
                audit_log=log,
            ) as client:
                replies = [
                    await client.create("echo", [{"role": "user", "content": f"q{n}"}], security_tier="high")
                    for n in range(3)
                ]
            log.checkpoint()
        return replies

    replies = asyncio.run(chats())
    (tmp_path / "evidence" / "replies.jsonl").write_text("".join(json.dumps(r) + "\n" for r in replies))
    monkeypatch.chdir(tmp_path)
    signed = ["report", "--log", "audit.db", "--format", "json,html", "--sign", "audit.key", "-o", "report"]
    assert main(signed) == ExitCode.OK
    return tmp_path


def test_the_documented_gate_passes_on_good_evidence(workspace):
    commands = gate_commands()
    assert len(commands) == 4
    for argv in commands:
        assert main(argv) == ExitCode.OK, argv
    xmlschema.XMLSchema(str(FIXTURES / "junit.xsd")).validate(str(workspace / "verify-report.xml"))


def test_the_documented_gate_fails_on_bad_evidence(workspace):
    replies = (workspace / "evidence" / "replies.jsonl").read_text().splitlines()
    tampered = json.loads(replies[1])
    tampered["_metadata"]["tpm_attestation"]["pcr_values"]["sha256"]["7"] = "00" * 32
    (workspace / "evidence" / "replies.jsonl").write_text(
        "\n".join([replies[0], json.dumps(tampered)]) + "\n"
    )
    verify = next(argv for argv in gate_commands() if argv[0] == "verify")
    assert main(verify) == ExitCode.FINDING
    junit = (workspace / "verify-report.xml").read_text()
    assert junit.count("<failure") >= 1 and "pcr_digest" in junit


def test_the_documented_gate_catches_a_tampered_log(workspace):
    import sqlite3

    with sqlite3.connect(workspace / "audit.db") as db:
        db.execute("DELETE FROM records WHERE seq = 1")
    log_verify = next(argv for argv in gate_commands() if argv[:2] == ["log", "verify"])
    assert main(log_verify) == ExitCode.INTEGRITY


def test_config_file_flags_and_environment_precedence(tmp_path, monkeypatch, router, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nomyo-audit.yaml").write_text(f"chat:\n  base_url: {router.url}\n  allow_http: true\n")
    assert main(["chat", "from the config file"]) == ExitCode.OK
    assert "echo: from the config file" in capsys.readouterr().out
    monkeypatch.setenv("NOMYO_BASE_URL", "http://127.0.0.1:1")  # the environment beats the file
    assert main(["chat", "--timeout", "5", "env wins"]) != ExitCode.OK
    capsys.readouterr()
    assert main(["chat", "--base-url", router.url, "flag wins"]) == ExitCode.OK  # the flag beats both
    (tmp_path / "nomyo-audit.yaml").write_text("chat:\n  api_key: sk-secret\n")
    assert main(["chat", "x"]) == ExitCode.USAGE
    assert "keep API keys out of config files" in capsys.readouterr().err


def test_the_documented_config_file_configures_the_gate(workspace, capsys):
    """docs/ci.md's config example, as written: each key reaches its command and is enforced."""
    (workspace / "nomyo-audit.yaml").write_text(docs_block("yaml ci-config"))
    # verify: {policy: ...}: the policy judges, so the JUnit test cases are its rules
    assert main(["verify", "--format", "junit", "-o", "gate.xml", "evidence/replies.jsonl"]) == ExitCode.OK
    junit = (workspace / "gate.xml").read_text()
    assert 'classname="production-unanchored"' in junit
    assert 'name="max_age"' in junit and "<failure" not in junit
    assert "3 verified: 3 allowed, 0 failed" in capsys.readouterr().err
    # ... and denies: the same replies judged a day after they came in are stale
    assert main(["verify", "--at", str(time.time() + 86400), "evidence/replies.jsonl"]) == ExitCode.FINDING
    assert "max_age" in capsys.readouterr().out
    # report: {log: ...}: no --log needed
    assert main(["report", "--format", "json", "-o", "from-config"]) == ExitCode.OK
    assert (workspace / "from-config" / "report.json").is_file()
    # chat: {...}: every key lands in one of chat's parameters
    cli_main = importlib.import_module("nomyo_audit.cli._main")
    defaults = cli_main.default_map(cli_main.load_config(workspace / "nomyo-audit.yaml"), cli)
    assert defaults["chat"] == {"base_url": "https://router.example", "security_tier": "high"}
    assert set(defaults["chat"]) <= {p.name for p in cli.commands["chat"].params}
    assert defaults["verify"] == {"policy_file": "policies/production.yaml"}
    assert defaults["report"] == {"log_path": "audit.db"}


def test_the_documented_reappraisal_passes_on_a_good_log(workspace, capsys):
    (argv,) = [shlex.split(line)[1:] for line in docs_block("bash reappraisal").splitlines() if line]
    assert main(argv) == ExitCode.OK
    assert "3 verified: 3 allowed, 0 failed" in capsys.readouterr().err
    assert (workspace / "reappraisal.xml").read_text().count("<testsuite ") == 3
