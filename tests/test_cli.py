"""The CLI, through CliRunner and as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
from click.testing import CliRunner

from nomyo_audit.cli import cli, main
from nomyo_audit.errors import ExitCode


def invoke(*args: str, input: str | None = None):
    return CliRunner().invoke(cli, list(args), input=input)


def test_version_and_help():
    result = invoke("--version")
    assert result.exit_code == 0 and "nomyo-audit" in result.output
    commands = [
        ["serve"],
        ["chat"],
        ["demo"],
        ["verify"],
        ["report"],
        ["verify-report"],
        ["policy"],
        ["policy", "lint"],
        ["policy", "show"],
        ["policy", "from-evidence"],
        ["log"],
        ["log", "show"],
        ["log", "verify"],
        ["log", "checkpoint"],
        ["log", "prove"],
        ["log", "verify-proof"],
        ["log", "digest"],
        ["keys"],
        ["keys", "generate"],
    ]
    for command in commands:
        help_text = invoke(*command, "--help").output
        assert "Example:" in help_text and "nomyo-audit " in help_text, command


def test_chat_against_router(router, client_keys_dir):
    result = invoke("chat", "--base-url", router.url, "--allow-http", "hello cli")
    assert result.exit_code == 0, result.output
    assert "echo: hello cli" in result.stdout
    assert "payload_id bound" in result.stderr


def test_chat_reads_stdin_and_prints_json(router):
    result = invoke(
        "chat",
        "--base-url",
        router.url,
        "--allow-http",
        "--format",
        "json",
        "--security-tier",
        "high",
        input="from stdin",
    )
    assert result.exit_code == 0, result.output
    reply = json.loads(result.stdout)
    assert reply["choices"][0]["message"]["content"] == "echo: from stdin"
    assert reply["_metadata"]["security_tier"] == "high"


def test_errors_exit_through_one_path(router, capsys):
    # plain http without --allow-http: a usage error naming the flag, exit 2, one line on stderr
    code = main(["chat", "--base-url", router.url, "hi"])
    err = capsys.readouterr().err
    assert code == ExitCode.USAGE
    assert err.startswith("error[insecure_transport]:") and "--allow-http" in err and "Traceback" not in err
    # a usage error: exit 2
    assert main(["chat", "--security-tier", "ultra", "hi"]) == ExitCode.USAGE


def test_wrong_api_key_exits_1_and_key_is_never_echoed(make_router, capsys):
    router = make_router(api_keys=("right-key",))
    code = main(["chat", "--base-url", router.url, "--allow-http", "--api-key", "wrong-key-123", "hi"])
    err = capsys.readouterr().err
    assert code == ExitCode.FINDING
    assert "error[authentication]" in err and "wrong-key-123" not in err


def test_demo_runs_the_whole_loop_and_leaves_nothing_running(tmp_path):
    import threading

    before = threading.active_count()
    result = invoke("demo", "--attester", "software", "--dir", str(tmp_path / "demo"))
    assert result.exit_code == 0, result.output
    out = result.output
    assert "SOFTWARE attester" in out and "attested" in out and "PASS" in out
    assert out.count("verdict pass, policy pass") == 3
    assert "anchoring unavailable without swtpm" in out and out.count("AIK not anchored") == 3
    assert "DENIED by policy production-unanchored: ima: not allowed: '/lib/modules/6.8.0-nomyo-demo/" in out
    assert "no content returned" in out
    assert "a forged software quote" in out and "under the shipped production policy: DENY (aik_trust" in out
    assert "report rendered" in out and "nothing is left running" in out
    demo = tmp_path / "demo"
    assert {"audit.db", "audit.key", "audit.key.pub", "report"} <= {p.name for p in demo.iterdir()}
    verified = invoke(
        "verify-report",
        str(demo / "report"),
        "--key",
        str(demo / "audit.key.pub"),
        "--log",
        str(demo / "audit.db"),
    )
    assert verified.exit_code == 0, verified.output
    assert threading.active_count() == before  # router and server threads are gone
    assert invoke("demo", "--dir", str(demo)).exit_code != 0  # never reuses a non-empty directory


def test_serve_as_a_real_process(tmp_path):
    from nomyo_audit.router._server import free_port

    port = free_port()
    key_file = tmp_path / "router" / "key.pem"
    env = {**os.environ, "NOMYO_ROUTER_API_KEYS": "env-key"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nomyo_audit.cli._main",
            "serve",
            "--port",
            str(port),
            "--key-file",
            str(key_file),
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url + "/pki/public_key", timeout=1)
                break
            except httpx.HTTPError:
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert (key_file.stat().st_mode & 0o777) == 0o600
        ok = invoke("chat", "--base-url", url, "--allow-http", "--api-key", "env-key", "over a process")
        assert ok.exit_code == 0 and "echo: over a process" in ok.stdout
        denied = invoke("chat", "--base-url", url, "--allow-http", "hi")
        assert denied.exit_code != 0
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    # restarting with the same --key-file keeps the same key
    assert key_file.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


def test_serve_rejects_bad_model_tiers():
    result = invoke("serve", "--model-tiers", "gpt=ultra")
    assert result.exit_code == 2
    assert "GLOB=TIER" in result.output
