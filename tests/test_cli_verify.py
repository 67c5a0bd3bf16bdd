"""``nomyo-audit verify``: inputs of every shape, fixed exit codes, text, JSON and EAR output."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import FIXTURES

from nomyo_audit.cli import cli, main
from nomyo_audit.errors import ExitCode
from nomyo_audit.tpm._ear import EAT_PROFILE, to_ear
from nomyo_audit.tpm._verify import verify_attestation

VECTORS = {
    v["name"]: v for v in json.loads((FIXTURES / "vectors" / "tpm-evidence.json").read_text())["vectors"]
}


def metadata(name: str) -> dict:
    vector = VECTORS[name]
    meta = {"payload_id": vector["payload_id"], "tpm_attestation": vector["tpm_attestation"]}
    if vector["content_digest"]:
        meta["verification"] = {"content_digest": vector["content_digest"]}
    return meta


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(cli, ["verify", *args], input=input)


def test_passing_metadata_exits_0(tmp_path):
    path = tmp_path / "meta.json"
    path.write_text(json.dumps(metadata("swtpm-ecc256-ecdsa-genuine")))
    result = run(str(path))
    assert result.exit_code == ExitCode.OK, result.output
    assert "PASS" in result.stdout and "aik_not_anchored" in result.stdout
    assert "1 verified: 1 passed, 0 failed" in result.stderr


def test_json_lines_from_stdin_with_a_failure_exits_1():
    lines = "\n".join(json.dumps(metadata(n)) for n in ("swtpm-rsa2048-rsassa-genuine", "altered-pcr-value"))
    result = run("--format", "json", "-", input=lines + "\n")
    assert result.exit_code == ExitCode.FINDING
    docs = json.loads(result.stdout)
    assert [d["result"] for d in docs] == ["pass", "fail"]
    assert docs[1]["source"] == "<stdin>:2"
    assert {f["check"]: f["code"] for f in docs[1]["findings"] if f["status"] == "fail"} == {
        "pcr_digest": "pcr_digest_mismatch"
    }


def test_full_response_rehashes_the_content(make_router, client_keys_dir, tmp_path):
    import asyncio

    from nomyo_audit import SecureChatCompletion
    from nomyo_audit.router._attestation import make_attester

    router = make_router(attester=make_attester("software"))

    async def chat():
        async with SecureChatCompletion(router.url, allow_http=True, key_dir=str(client_keys_dir)) as client:
            return await client.create("echo", [{"role": "user", "content": "to verify"}])

    reply = asyncio.run(chat())
    assert reply["_metadata"]["verification"]["result"] == "pass"
    path = tmp_path / "reply.json"
    path.write_text(json.dumps(reply))
    saved = run("--format", "json", str(path))
    assert saved.exit_code == ExitCode.OK
    assert json.loads(saved.stdout)[0]["binding_digest"] == "content"
    reply["choices"][0]["message"]["content"] = "edited afterwards"
    path.write_text(json.dumps(reply))
    edited = run("--format", "json", str(path))
    assert edited.exit_code == ExitCode.FINDING
    failing = {
        f["check"]: f["code"] for f in json.loads(edited.stdout)[0]["findings"] if f["status"] == "fail"
    }
    assert failing == {"nonce_binding": "nonce_mismatch"}


@pytest.mark.parametrize(
    ("content", "code"),
    [
        ("not json at all\n", "invalid_json"),
        ('{"a": 1}', "invalid_input"),
        ("", "invalid_input"),
        ("[1]", "invalid_input"),
    ],
)
def test_invalid_input_exits_2(tmp_path, capsys, content, code):
    path = tmp_path / "bad.json"
    path.write_text(content)
    assert main(["verify", str(path)]) == ExitCode.USAGE
    assert f"error[{code}]" in capsys.readouterr().err


def test_missing_file_exits_2(capsys):
    assert main(["verify", "/nonexistent/evidence.json"]) == ExitCode.USAGE
    assert "error[unreadable]" in capsys.readouterr().err


def test_ear_output():
    result = run("--format", "ear", "-", input=json.dumps(metadata("swtpm-rsa2048-rsassa-genuine")))
    assert result.exit_code == 0
    ear = json.loads(result.stdout)[0]
    assert ear["eat_profile"] == EAT_PROFILE
    tpm = ear["submods"]["tpm"]
    assert tpm["ear.status"] == "warning"  # never affirming without an anchored AIK
    assert set(tpm["ear.trustworthiness-vector"]) == {
        "instance-identity",
        "configuration",
        "executables",
        "file-system",
        "hardware",
        "runtime-opaque",
        "storage-opaque",
        "sourced-data",
    }


@pytest.mark.parametrize(
    ("name", "claim", "value"),
    [("flipped-signature-byte", "instance-identity", 99), ("altered-pcr-value", "executables", 96)],
)
def test_ear_for_failures_is_contraindicated(name, claim, value):
    vector = VECTORS[name]
    verdict = verify_attestation(
        vector["tpm_attestation"],
        vector["payload_id"],
        content_digest=bytes.fromhex(vector["content_digest"]),
    )
    ear = to_ear(verdict, issued_at=1700000000, policy_id="policy://test")
    tpm = ear["submods"]["tpm"]
    assert tpm["ear.status"] == "contraindicated"
    assert tpm["ear.trustworthiness-vector"][claim] == value
    assert tpm["ear.appraisal-policy-id"] == "policy://test" and ear["iat"] == 1700000000


@pytest.mark.parametrize(("name", "status"), [("swtpm-ecc256-ecdsa-genuine", 0), ("altered-pcr-value", 1)])
def test_exit_status_of_the_real_process(tmp_path, name, status):
    """The console script, not CliRunner: click returns (not raises) exit codes outside standalone mode."""
    import subprocess
    import sys

    path = tmp_path / "meta.json"
    path.write_text(json.dumps(metadata(name)))
    proc = subprocess.run(
        [sys.executable, "-m", "nomyo_audit.cli._main", "verify", str(path)], capture_output=True
    )
    assert proc.returncode == status, proc.stderr
