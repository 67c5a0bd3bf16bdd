"""The service and tenant labels (issue 16, reports for a fleet): set on the client, by the
environment, the config file or `chat`, checked, and written into the record bytes only when set."""

from __future__ import annotations

import asyncio
import json

import pytest
from click.testing import CliRunner

from nomyo_audit import SecureChatCompletion
from nomyo_audit.audit import AuditLog
from nomyo_audit.audit._labels import MAX_LABEL_LENGTH, check_label, labels_from
from nomyo_audit.audit._records import build_record
from nomyo_audit.cli import main
from nomyo_audit.cli._main import load_config
from nomyo_audit.errors import ConfigurationError, ExitCode

COMMON = dict(
    seq=4,
    timestamp=1767225600.5,
    salt=b"s" * 32,
    payload_id="p",
    router="https://r.example",
    server_key=None,
    model="echo",
    security_tier=None,
    outcome="ok",
    request={"messages": []},
    response=None,
)


def test_a_record_without_labels_keeps_its_bytes_and_labels_are_top_level_only_when_set():
    plain = build_record(**COMMON)
    assert b"service" not in plain and b"tenant" not in plain
    assert build_record(**COMMON, service=None, tenant=None) == plain
    labelled = json.loads(build_record(**COMMON, service="billing", tenant="acme"))
    assert labelled["service"] == "billing" and labelled["tenant"] == "acme"
    assert {k: v for k, v in labelled.items() if k not in ("service", "tenant")} == json.loads(plain)
    only_service = json.loads(build_record(**COMMON, service="billing"))
    assert "tenant" not in only_service


@pytest.mark.parametrize(
    "value, problem",
    [
        ("", "1 to 64 characters"),
        ("x" * (MAX_LABEL_LENGTH + 1), "1 to 64 characters"),
        ("bill\ning", "printable"),
        ("bill\x1bing", "printable"),
        ("a\u2028b", "printable"),
        (" billing", "start or end with a space"),
        (7, "must be a string"),
    ],
)
def test_bad_labels_are_refused_with_a_stable_code(value, problem):
    with pytest.raises(ConfigurationError, match=problem) as raised:
        check_label("service", value)
    assert raised.value.code == "invalid_label"
    with pytest.raises(ConfigurationError, match=problem):
        build_record(**COMMON, tenant=value)


def test_labels_come_from_arguments_then_the_environment():
    env = {"NOMYO_AUDIT_SERVICE": "from-env", "NOMYO_AUDIT_TENANT": ""}
    assert labels_from({"service": None, "tenant": None}, env) == {"service": "from-env"}
    assert labels_from({"service": "given", "tenant": "t"}, env) == {"service": "given", "tenant": "t"}
    with pytest.raises(ConfigurationError, match="NOMYO_AUDIT_TENANT must be printable"):
        labels_from({}, {"NOMYO_AUDIT_TENANT": "a\tb"})
    assert check_label("service", "billing-eu 2") == "billing-eu 2"
    assert check_label("tenant", "Zürich") == "Zürich"


def test_clients_write_their_labels_into_every_record(router, tmp_path, monkeypatch):
    log_path = tmp_path / "audit.db"
    monkeypatch.setenv("NOMYO_AUDIT_TENANT", "tenant-from-env")

    async def chat(**labels):
        async with SecureChatCompletion(router.url, allow_http=True, audit_log=str(log_path), **labels) as c:
            await c.create("echo", [{"role": "user", "content": "hi"}])

    asyncio.run(chat(service="billing", tenant="acme"))
    asyncio.run(chat(service="search"))
    monkeypatch.delenv("NOMYO_AUDIT_TENANT")
    asyncio.run(chat())
    with AuditLog.open(log_path) as log:
        docs = [json.loads(r.data) for r in log.store.records(None, None)]
    assert [(d.get("service"), d.get("tenant")) for d in docs] == [
        ("billing", "acme"),
        ("search", "tenant-from-env"),
        (None, None),
    ]
    assert "service" not in docs[2] and "tenant" not in docs[2]


def test_a_bad_label_fails_before_anything_is_sent_or_opened(router, tmp_path):
    with pytest.raises(ConfigurationError) as raised:
        SecureChatCompletion(router.url, allow_http=True, audit_log=str(tmp_path / "a.db"), service="a\nb")
    assert raised.value.code == "invalid_label"
    assert not (tmp_path / "a.db").exists()
    assert router.config.backend.payloads == []


def test_chat_service_and_tenant_flags_and_environment(router, tmp_path, monkeypatch):
    log_path = tmp_path / "audit.db"
    monkeypatch.setenv("NOMYO_AUDIT_LOG", str(log_path))
    monkeypatch.setenv("NOMYO_AUDIT_SERVICE", "svc-env")
    base = ["chat", "--base-url", router.url, "--allow-http", "hello"]
    assert main([*base[:-1], "--tenant", "acme", "hello"]) == ExitCode.OK
    assert main([*base[:-1], "--service", "svc-flag", "hello"]) == ExitCode.OK
    with AuditLog.open(log_path) as log:
        docs = [json.loads(r.data) for r in log.store.records(None, None)]
    assert [(d.get("service"), d.get("tenant")) for d in docs] == [("svc-env", "acme"), ("svc-flag", None)]
    shown = CliRunner().invoke(main_cli(), ["log", "show", "--log", str(log_path)])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert "service=svc-env" in lines[0] and "tenant=acme" in lines[0]
    assert "service=svc-flag" in lines[1] and "tenant=" not in lines[1]


def test_chat_refuses_a_bad_label_with_exit_2_and_no_traceback(router, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NOMYO_AUDIT_LOG", str(tmp_path / "a.db"))
    status = main(["chat", "--base-url", router.url, "--allow-http", "--service", "x" * 65, "hello"])
    err = capsys.readouterr().err
    assert status == ExitCode.USAGE, err
    assert err.startswith("error[invalid_label]: service must be 1 to 64 characters"), err
    assert "Traceback" not in err and not (tmp_path / "a.db").exists()


def test_the_config_file_sets_the_labels(tmp_path):
    config = tmp_path / "nomyo-audit.yaml"
    config.write_text("chat:\n  service: billing\n  tenant: acme\nreport:\n  service: billing\n")
    assert load_config(config) == {
        "chat": {"service": "billing", "tenant": "acme"},
        "report": {"service": "billing"},
    }
    config.write_text("chat:\n  service: ''\n")
    with pytest.raises(ConfigurationError, match="service"):
        load_config(config)


def main_cli():
    from nomyo_audit.cli import cli

    return cli
