"""The measured serving stack: a reply's evidence proves which router build and which model served it."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

import nomyo_audit
from nomyo_audit import SecureChatCompletion
from nomyo_audit.attest import SoftwareTPM, TPMAttester
from nomyo_audit.cli import cli
from nomyo_audit.errors import ConfigurationError
from nomyo_audit.eventlog import (
    SERVING_STACK_PCR,
    match_event_log,
    parse_event_log,
    summarize_serving_stack,
)
from nomyo_audit.router._serving_stack import (
    ModelIdentity,
    code_digest,
    manifest_digest,
    measure_serving_stack,
    serving_models,
    weights_digest,
)


def proven_stack(block):
    log = parse_event_log(base64.b64decode(block["event_log_b64"]))
    quoted = {b: {int(i): bytes.fromhex(v) for i, v in vs.items()} for b, vs in block["pcr_values"].items()}
    match = match_event_log(log, quoted)
    assert match.ok and any(m.pcr == SERVING_STACK_PCR for m in match.pcrs)
    return summarize_serving_stack(log, match)


def independent_manifest(root: Path) -> str:
    """The design's code digest, written out again from its definition (docs/serving-stack.md)."""
    lines = []
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        if path.is_file() and "__pycache__" not in relative.parts and path.suffix != ".pyc":
            lines.append(f"{relative.as_posix()}\0{hashlib.sha256(path.read_bytes()).hexdigest()}\n")
    return hashlib.sha256("".join(sorted(lines)).encode()).hexdigest()


def test_a_replys_evidence_proves_this_router_build_and_its_model(make_router, client_keys_dir):
    attester = TPMAttester(SoftwareTPM(), "sha256:0,7,10,23")
    measure_serving_stack(attester, model_tiers={"echo*": ("high",)})
    router = make_router(attester=attester)

    async def go():
        async with SecureChatCompletion(router.url, allow_http=True, key_dir=str(client_keys_dir)) as client:
            return await client.create("echo", [{"role": "user", "content": "hi"}], security_tier="high")

    reply = asyncio.run(go())
    stack = proven_stack(reply["_metadata"]["tpm_attestation"])
    assert stack["router"] == {
        "name": "nomyo-audit",
        "version": nomyo_audit.__version__,
        "code_sha256": code_digest(),
    }
    assert stack["models"] == {"echo": {"source": "echo", "weights_sha256": None, "upstream_identity": None}}
    assert stack["upstream"] is None and stack["model_tiers"] == {"echo*": ["high"]}
    assert reply["_metadata"]["verification"]["facts"]["serving_stack"]["router"] == stack["router"]


def test_the_code_digest_is_the_documented_manifest_of_the_installed_package(tmp_path):
    package = Path(nomyo_audit.__file__).parent
    # as a wheel installs it: symbolic links (data/policies) become files, no bytecode
    copy = tmp_path / "nomyo_audit"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    assert code_digest() == manifest_digest(copy) == independent_manifest(copy)
    (copy / "__pycache__").mkdir(exist_ok=True)
    (copy / "__pycache__" / "x.cpython-312.pyc").write_bytes(b"bytecode")
    (copy / "stale.pyc").write_bytes(b"bytecode")
    assert manifest_digest(copy) == code_digest()
    (copy / "_version.py").write_text('__version__ = "9.9.9"\n')
    assert manifest_digest(copy) != code_digest()


def test_weights_are_a_files_sha256_or_a_directorys_manifest(tmp_path):
    (tmp_path / "model.gguf").write_bytes(b"weights" * 1000)
    assert weights_digest(tmp_path / "model.gguf") == hashlib.sha256(b"weights" * 1000).hexdigest()
    shard = tmp_path / "shards"
    (shard / "sub").mkdir(parents=True)
    (shard / "a.safetensors").write_bytes(b"a")
    (shard / "sub" / "config.json").write_bytes(b"{}")
    assert weights_digest(shard) == independent_manifest(shard)
    with pytest.raises(ConfigurationError, match="--measure-model"):
        weights_digest(tmp_path / "missing")


def test_models_by_source(tmp_path):
    (tmp_path / "w").write_bytes(b"w")
    local = ModelIdentity("llama", "local", hashlib.sha256(b"w").hexdigest())
    assert serving_models(None, {"llama": tmp_path / "w"}) == [ModelIdentity("echo", "echo"), local]
    assert serving_models("http://up/v1", {"gpt": None, "llama": tmp_path / "w"}) == [
        ModelIdentity("gpt", "upstream"),
        local,
    ]
    with pytest.raises(ConfigurationError, match="needs =PATH"):
        serving_models(None, {"gpt": None})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--measure-model", "=x"], "expected NAME=PATH or NAME"),
        (["--measure-model", "m=/nonexistent/weights"], "does not exist"),
        (["--measure-model", "m", "--measure-model", "m"], "each name once"),
        (["--serving-pcr", "7"], "'7' is not one of"),
    ],
)
def test_serve_refuses_bad_measurement_options(args, message):
    result = CliRunner().invoke(cli, ["serve", "--port", "0", *args])
    assert result.exit_code == 2 and message in result.output


def serve_once(*args: str) -> tuple[dict, str]:
    """Start ``nomyo-audit serve``, fetch one key attestation, stop it: (the evidence, stderr)."""
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "nomyo-audit"), "serve", "--port", "0", *args],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert process.stderr is not None
    try:
        lines = []
        while (line := process.stderr.readline()) and "router on" not in line:
            lines.append(line)
        url = re.search(r"http://\S+", line)
        assert url, "".join(lines)
        reply = httpx.get(f"{url.group(0)}/pki/attestation", params={"nonce": "00" * 16}, timeout=30)
        return reply.json()["tpm_attestation"], "".join(lines)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_serve_measures_its_stack_into_pcr_23_and_quotes_it(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"local weights")
    block, _ = serve_once("--tpm", "software", "--measure-model", f"tiny={tmp_path / 'weights.bin'}")
    assert block["pcr_banks"] == "sha256:0,7,10,23"
    stack = proven_stack(block)
    assert stack["models"]["tiny"] == {
        "source": "local",
        "weights_sha256": hashlib.sha256(b"local weights").hexdigest(),
        "upstream_identity": None,
    }
    assert set(stack["models"]) == {"echo", "tiny"}


def test_serve_without_a_serving_pcr_measures_nothing(tmp_path):
    block, _ = serve_once("--tpm", "software", "--serving-pcr", "none")
    assert block["pcr_banks"] == "sha256:0,7,10" and "event_log_b64" not in block
    block, stderr = serve_once("--tpm", "software", "--pcrs", "sha256:0")
    assert "does not quote PCR 23" in stderr and "event_log_b64" in block
