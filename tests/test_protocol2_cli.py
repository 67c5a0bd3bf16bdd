"""`--protocol` on the CLI commands that talk to a router (issue 13 section 2), and the demo on protocol 2."""

from __future__ import annotations

from click.testing import CliRunner

from nomyo_audit.cli import cli
from nomyo_audit.wire import COMPLETION_PATH, COMPLETION_V2_PATH


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, list(args), env=env)


def chat(router, *extra: str, env: dict[str, str] | None = None):
    return invoke("chat", "--base-url", router.url, "--allow-http", *extra, "hello", env=env)


def test_chat_uses_protocol_2_by_default_and_says_so(router):
    result = chat(router)
    assert result.exit_code == 0, result.output
    assert "protocol 2" in result.stderr
    assert router.app.state.requests[COMPLETION_V2_PATH] == 1


def test_chat_protocol_1_0(router):
    result = chat(router, "--protocol", "1.0")
    assert result.exit_code == 0, result.output
    assert "protocol 1.0" in result.stderr
    assert router.app.state.requests[COMPLETION_PATH] == 1
    assert router.app.state.requests[COMPLETION_V2_PATH] == 0


def test_chat_protocol_from_the_environment(router):
    result = chat(router, env={"NOMYO_PROTOCOL": "1.0"})
    assert result.exit_code == 0, result.output
    assert router.app.state.requests[COMPLETION_PATH] == 1


def test_chat_refuses_an_unknown_protocol(router):
    assert chat(router, "--protocol", "3").exit_code == 2
    assert chat(router, env={"NOMYO_PROTOCOL": "3"}).exit_code == 2
    assert router.app.state.requests[COMPLETION_PATH] + router.app.state.requests[COMPLETION_V2_PATH] == 0


def test_demo_uses_protocol_2_and_says_so(tmp_path):
    result = invoke("demo", "--attester", "software", "--dir", str(tmp_path / "demo"))
    assert result.exit_code == 0, result.output
    assert "protocol 2 (HPKE" in result.output
    assert "key configuration" in result.output and "attested" in result.output
    assert result.output.count("protocol 2, verdict pass, policy pass") == 3


def test_demo_protocol_1_0(tmp_path):
    result = invoke("demo", "--attester", "software", "--protocol", "1.0", "--dir", str(tmp_path / "demo"))
    assert result.exit_code == 0, result.output
    assert result.output.count("protocol 1.0, verdict pass, policy pass") == 3
