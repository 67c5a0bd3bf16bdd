"""The CLI under misuse: the config file is applied and checked, plain user errors exit 2 with a
message that names the flag, and ``verify --log`` re-appraises a stored log truthfully and in flat
memory."""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
from conftest import FIXTURES, REPO
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nomyo_audit.audit._log import AuditLog
from nomyo_audit.audit._records import build_record
from nomyo_audit.cli import cli, main
from nomyo_audit.errors import ExitCode

VECTOR = next(
    v
    for v in json.loads((FIXTURES / "vectors" / "tpm-evidence.json").read_text())["vectors"]
    if v["name"] == "swtpm-ecc256-ecdsa-genuine"
)
FRESH_POLICY = """\
apiVersion: nomyo-audit/v1
kind: AttestationPolicy
metadata: {name: fresh}
spec:
  require_attestation: true
  max_age: 5m
  clock_skew: 60s
"""
YEAR = 365 * 86400
cli_main = importlib.import_module("nomyo_audit.cli._main")  # the module: cli.main is the function


def write_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str | bytes) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "nomyo-audit.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def evidence_file(tmp_path: Path) -> Path:
    path = tmp_path / "meta.json"
    meta = {
        "payload_id": VECTOR["payload_id"],
        "tpm_attestation": VECTOR["tpm_attestation"],
        "verification": {"content_digest": VECTOR["content_digest"]},
    }
    path.write_text(json.dumps(meta))
    return path


def log_with_replies(path: Path, replies: list[tuple[float, float]]) -> Path:
    """A real audit log holding one record per (processed_at, received) pair, with genuine evidence."""
    with AuditLog(path) as log:
        for processed, received in replies:
            metadata = {
                "payload_id": VECTOR["payload_id"],
                "processed_at": processed,
                "tpm_attestation": VECTOR["tpm_attestation"],
                "verification": {
                    "result": "pass",
                    "findings": [],
                    "content_digest": VECTOR["content_digest"],
                },
            }

            def build(seq: int, salt: bytes, received: float = received, metadata: dict = metadata) -> bytes:
                return build_record(
                    seq=seq,
                    timestamp=received,
                    salt=salt,
                    payload_id=VECTOR["payload_id"],
                    router="https://router.example",
                    server_key=None,
                    model="echo",
                    security_tier="high",
                    outcome="ok",
                    request=None,
                    response=None,
                    metadata=metadata,
                )

            log.append(VECTOR["payload_id"], build, timestamp=received)
    return path


# -- the config file --------------------------------------------------------------------------


def test_config_keys_are_the_flags_and_reach_the_command(tmp_path, monkeypatch, capsys):
    evidence = evidence_file(tmp_path)
    (tmp_path / "fresh.yaml").write_text(FRESH_POLICY)
    write_config(tmp_path, monkeypatch, "verify:\n  policy: fresh.yaml\n  format: json\n")
    # the evidence has no processed_at: with the policy from the file, max_age denies it
    assert main(["verify", str(evidence)]) == ExitCode.FINDING
    docs = json.loads(capsys.readouterr().out)
    assert docs[0]["policy"]["policy"] == "fresh"
    # a flag still wins over the file
    assert main(["verify", "--format", "text", "--policy", "fresh.yaml", str(evidence)]) == ExitCode.FINDING
    assert "DENY" in capsys.readouterr().out.upper()


def test_report_log_from_the_config_file(tmp_path, monkeypatch, capsys):
    log_with_replies(tmp_path / "audit.db", [(1_700_000_000, 1_700_000_001)])
    write_config(tmp_path, monkeypatch, "report:\n  log: audit.db\n  format: json\n")
    assert main(["report", "-o", "out"]) == ExitCode.OK, capsys.readouterr().err
    assert (tmp_path / "out" / "report.json").is_file()


def test_groups_take_one_mapping_per_subcommand(tmp_path, monkeypatch, capsys):
    log_with_replies(tmp_path / "audit.db", [(1_700_000_000, 1_700_000_001)])
    write_config(tmp_path, monkeypatch, "log:\n  show:\n    log: audit.db\n    format: json\n")
    assert main(["log", "show"]) == ExitCode.OK
    assert json.loads(capsys.readouterr().out.splitlines()[0])["payload_id"] == VECTOR["payload_id"]


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("verify:\n  format: json\n  polcy: p.yaml\n", 3, ["verify", "'polcy'", "did you mean 'policy'"]),
        ("verfy:\n  policy: p.yaml\n", 1, ["'verfy'", "did you mean 'verify'"]),
        ("chat:\n  model: echo\n  timeout: soon\n", 3, ["chat.timeout", "'soon'", "number"]),
        ("serve:\n  port: 99999\n", 2, ["serve.port", "99999"]),
        ("chat:\n  allow_http: maybe\n", 2, ["chat.allow_http", "boolean"]),
        ("log:\n  verify:\n    key: [a, b]\n", 3, ["log.verify.key", "string"]),
        ("- verify\n", 1, ["mapping"]),
        ("verify: [policy]\n", 1, ["verify", "mapping"]),
        ("verify:\n  policy: a.yaml\n  policy: b.yaml\n", 3, ["'policy' is given twice"]),
        ("chat:\n  api_key: sk-secret\n", 2, ["keep API keys out of config files"]),
        ("verify:\n  policy: [unclosed\n", 3, ["not valid YAML"]),
    ],
)
def test_unknown_keys_and_wrong_types_exit_2_with_file_and_line(
    tmp_path, monkeypatch, capsys, text, line, words
):
    write_config(tmp_path, monkeypatch, text)
    assert main(["verify", "-"]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"error[configuration]: nomyo-audit.yaml:{line}: "), err
    for word in words:
        assert word in err, (word, err)
    assert "sk-secret" not in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\xff", "not UTF-8 text"),
        ("verify:\n  policy: caf\u00e9.yaml\n".encode("latin-1"), "not UTF-8 text"),
        (b"verify:\n  policy: a\x00b\n", "not valid YAML"),
    ],
)
def test_a_binary_or_non_utf8_config_file_exits_2(tmp_path, monkeypatch, capsys, content, words):
    write_config(tmp_path, monkeypatch, content)
    assert main(["verify", "-"]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.startswith("error[configuration]: nomyo-audit.yaml") and words in err, err


def test_a_missing_config_file_exits_2(tmp_path, capsys):
    assert main(["--config", str(tmp_path / "absent.yaml"), "verify", "-"]) == ExitCode.USAGE
    assert "absent.yaml: cannot read the config file: No such file or directory" in capsys.readouterr().err


def test_yaml_aliases_are_refused_before_they_expand(tmp_path, monkeypatch, capsys):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(20)
    )
    write_config(tmp_path, monkeypatch, bomb)
    start = time.monotonic()
    assert main(["verify", "-"]) == ExitCode.USAGE
    assert time.monotonic() - start < 2
    assert "aliases" in capsys.readouterr().err


def test_an_empty_command_section_is_allowed(tmp_path, monkeypatch):
    write_config(tmp_path, monkeypatch, "# nothing set yet\nverify:\n")
    assert cli_main.load_config(tmp_path / "nomyo-audit.yaml") == {"verify": None}


def _options(command: click.Command) -> dict[str, click.Option]:
    found = {}
    for param in command.params:
        if isinstance(param, click.Option):
            for opt in param.opts + param.secondary_opts:
                if opt.startswith("--"):
                    found[opt[2:].replace("-", "_")] = param
    return found


def _walk(schema: dict, command: click.Command, where: str):
    if isinstance(command, click.Group):
        for name, sub in schema["properties"].items():
            assert name in command.commands, f"{where} {name}: no such command"
            yield from _walk(sub, command.commands[name], f"{where} {name}".strip())
        return
    options = _options(command)
    for key, spec in schema["properties"].items():
        assert key in options, f"{where}: the config key {key!r} is no flag of the command"
        yield where, key, spec, options[key]


def test_every_key_the_schema_allows_is_a_flag_of_its_command():
    """The schema shipped in the wheel and the commands agree: no key the file accepts is ignored."""
    schema = cli_main.config_schema()
    resolved = {}
    for where, key, spec, option in _walk(schema, cli, ""):
        spec = schema["$defs"][spec["$ref"].rsplit("/", 1)[1]] if "$ref" in spec else spec
        kind = spec.get("type")
        if option.is_flag:
            assert kind == "boolean", (where, key)
        elif option.multiple:
            assert kind == "array", (where, key)
        elif isinstance(option.type, click.Choice):
            assert set(spec["enum"]) == set(option.type.choices), (where, key)
        elif isinstance(option.type, (click.types.IntParamType, click.IntRange)):
            assert kind == "integer", (where, key)
        elif isinstance(option.type, click.types.FloatParamType):
            assert kind == "number", (where, key)
        else:
            assert kind == "string" or "string" in kind, (where, key)
        resolved[(where, key)] = option.name
    # the three settings docs/ci.md names, and the parameters they land in
    assert resolved[("verify", "policy")] == "policy_file"
    assert resolved[("report", "log")] == "log_path"
    assert resolved[("chat", "base_url")] == "base_url"
    # secrets are never accepted from a file
    assert "api_key" not in schema["properties"]["chat"]["properties"]
    assert "api_key" not in schema["properties"]["serve"]["properties"]


# -- plain user errors exit 2 ----------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["text", "json", "junit", "ear"])
def test_an_unwritable_output_path_exits_2_before_any_work(tmp_path, capsys, fmt):
    evidence = evidence_file(tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for target, reason in [
        (tmp_path / "missing" / "out.xml", "No such file or directory"),
        (blocker / "out.xml", "Not a directory"),
    ]:
        assert main(["verify", "--format", fmt, "-o", str(target), str(evidence)]) == ExitCode.USAGE
        err = capsys.readouterr().err
        assert f"cannot write {target}: {reason}" in err, err
    assert main(["verify", "--format", fmt, "-o", str(tmp_path), str(evidence)]) == ExitCode.USAGE
    assert "is a directory" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "meta.json"]  # no temporary left


def test_file_system_errors_of_any_command_exit_2(tmp_path, capsys):
    """main() maps an OSError about a file to exit 2 and a one-line message, for every command."""
    log = log_with_replies(tmp_path / "audit.db", [(1_700_000_000, 1_700_000_001)])
    with AuditLog(log) as opened:
        opened.checkpoint(Ed25519PrivateKey.generate())
    target = tmp_path / "missing" / "record.tlog-proof"
    code = main(["log", "prove", VECTOR["payload_id"], "--log", str(log), "-o", str(target)])
    err = capsys.readouterr().err
    assert code == ExitCode.USAGE, err
    assert str(target) in err and "No such file or directory" in err and "Traceback" not in err


def test_since_after_until_exits_2(tmp_path, capsys):
    log = log_with_replies(tmp_path / "audit.db", [(1_700_000_000, 1_700_000_001)])
    code = main(["verify", "--log", str(log), "--since", "2026-11-02", "--until", "2026-11-01"])
    assert code == ExitCode.USAGE
    assert "--since 2026-11-02 is after --until 2026-11-01" in capsys.readouterr().err


def test_plain_http_without_the_flag_names_the_flag(capsys):
    assert main(["chat", "--base-url", "http://127.0.0.1:9", "hi"]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.startswith("error[insecure_transport]:") and "--allow-http" in err
    assert "allow_http=True" not in err


def test_an_unresolvable_host_exits_2(capsys):
    assert main(["chat", "--base-url", "https://router.nonexistent.invalid", "--timeout", "20", "hi"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error[name_resolution]:") and "router.nonexistent.invalid" in err


def test_tls_to_a_plain_http_server_exits_2_and_says_so(router, capsys):
    url = router.url.replace("http://", "https://")
    assert main(["chat", "--base-url", url, "--timeout", "20", "hi"]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.startswith("error[tls]:") and f"the server at {url}" in err and "does not speak HTTPS" in err


# -- verify --log: the record's own time, streaming, summaries ------------------------------


def test_verify_log_judges_freshness_at_each_records_own_time(tmp_path, capsys):
    year_ago = time.time() - YEAR
    log = log_with_replies(
        tmp_path / "audit.db",
        [
            (year_ago, year_ago + 2),  # fresh when the client received it, a year ago
            (year_ago, year_ago + 20 * 60),  # already 20 minutes old when received
        ],
    )
    policy = tmp_path / "fresh.yaml"
    policy.write_text(FRESH_POLICY)
    base = ["verify", "--log", str(log), "--policy", str(policy), "--format", "json"]
    assert main(base) == ExitCode.FINDING
    outcomes = [d["policy"]["outcome"] for d in json.loads(capsys.readouterr().out)]
    assert outcomes == ["pass", "deny"]  # the same outcome as when each reply came in
    # --at overrides, in the forms --since takes
    assert main([*base, "--at", "now"]) == ExitCode.FINDING
    assert [d["policy"]["outcome"] for d in json.loads(capsys.readouterr().out)] == ["deny", "deny"]
    at = _dt.datetime.fromtimestamp(year_ago + 60, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert main([*base, "--at", at]) == ExitCode.OK
    assert [d["policy"]["outcome"] for d in json.loads(capsys.readouterr().out)] == ["pass", "pass"]
    assert main([*base, "--at", "yesterday"]) == ExitCode.USAGE


def test_a_failing_verify_with_output_still_prints_its_summary(tmp_path, capsys):
    year_ago = time.time() - YEAR
    log = log_with_replies(tmp_path / "audit.db", [(year_ago, year_ago + 2)] * 3)
    policy = tmp_path / "fresh.yaml"
    policy.write_text(FRESH_POLICY)
    out = tmp_path / "report.xml"
    args = ["--log", str(log), "--policy", str(policy), "-o", str(out)]
    code = main(["verify", "--at", "now", "--format", "junit", *args])
    assert code == ExitCode.FINDING
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "3 verified: 0 allowed, 3 failed" in captured.err
    assert out.read_text().count("<failure") == 3


def test_verify_streams_json_and_junit_that_parse(tmp_path, capsys):
    import xml.etree.ElementTree as ET

    now = time.time()
    log = log_with_replies(tmp_path / "audit.db", [(now, now + 1)] * 4)
    assert main(["verify", "--log", str(log), "--format", "json"]) == ExitCode.OK
    docs = json.loads(capsys.readouterr().out)
    assert [d["source"] for d in docs] == [f"{log}#{n}" for n in range(4)]
    assert main(["verify", "--log", str(log), "--format", "junit"]) == ExitCode.OK
    suites = ET.fromstring(capsys.readouterr().out.split("\n", 1)[1])
    assert len(suites.findall("testsuite")) == 4
    assert main(["verify", "--log", str(log), "--format", "ear", "-o", str(tmp_path / "ear.json")]) == 0
    assert len(json.loads((tmp_path / "ear.json").read_text())) == 4
    # an empty selection is still valid output
    period = ["--since", "2000-01-01", "--until", "2000-01-02"]
    assert main(["verify", "--log", str(log), *period, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def _peak_rss_mb(argv: list[str]) -> float:
    proc = subprocess.Popen(
        [sys.executable, "-m", "nomyo_audit.cli._main", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    assert proc.stderr is not None
    assert os.waitstatus_to_exitcode(status) == 0, proc.stderr.read().decode()
    return usage.ru_maxrss / 1024


def test_verify_log_memory_does_not_grow_with_the_log(tmp_path):
    """Ten times the records, the same peak memory: nothing per record is kept (bench/ has 1M)."""
    now = time.time()
    small = log_with_replies(tmp_path / "small.db", [(now, now + 1)] * 300)
    large = log_with_replies(tmp_path / "large.db", [(now, now + 1)] * 3000)
    peaks = {}
    for name, log in (("small", small), ("large", large)):
        output = ["--format", "junit", "-o", str(tmp_path / "v.xml")]
        peaks[name] = _peak_rss_mb(["verify", "--log", str(log), *output])
    assert peaks["large"] - peaks["small"] < 15, peaks


def test_verify_log_never_creates_or_changes_the_file(tmp_path, capsys):
    missing, empty = tmp_path / "missing.db", tmp_path / "empty.db"
    empty.write_bytes(b"")
    assert main(["verify", "--log", str(missing)]) == ExitCode.USAGE
    assert main(["verify", "--log", str(empty)]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "missing.db" in err and "empty.db" in err and "Traceback" not in err
    assert not missing.exists() and empty.read_bytes() == b""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db"]


def test_a_bad_fingerprint_names_the_flag(capsys):
    code = main(["chat", "--base-url", "https://127.0.0.1:9", "--server-key-fingerprint", "abc", "hi"])
    assert code == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "--server-key-fingerprint" in err and "64 hex digits" in err


def test_non_utf8_or_too_deep_input_is_exit_2_not_a_crash(tmp_path, capsys):
    latin = tmp_path / "latin1.json"
    latin.write_bytes(b'{"payload_id": "caf\xe9"}')
    assert main(["verify", str(latin)]) == ExitCode.USAGE
    assert "latin1.json:1: not UTF-8 text" in capsys.readouterr().err
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    assert main(["verify", str(deep)]) == ExitCode.USAGE
    assert "nested too deeply" in capsys.readouterr().err
    prompt = subprocess.run(
        [
            sys.executable,
            "-m",
            "nomyo_audit.cli._main",
            "chat",
            "--base-url",
            "http://127.0.0.1:9",
            "--allow-http",
        ],
        input=b"caf\xe9",
        capture_output=True,
    )
    assert prompt.returncode == ExitCode.USAGE, prompt.stderr
    assert b"stdin: not UTF-8 text" in prompt.stderr


def test_the_config_schema_ships_in_the_wheel():
    text = (REPO / "pyproject.toml").read_text()
    package_data = text.split("[tool.setuptools.package-data]", 1)[1].split("\n[", 1)[0]
    assert '"cli/config.schema.json"' in package_data
