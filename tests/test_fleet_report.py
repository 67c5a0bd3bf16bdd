"""Reports for a fleet (issue 16, section 4): three clients with their own service and tenant labels,
two routers, one shared log; the report groups them, `--service`/`--router`/`--tenant` limit it,
and a scoped report is signed and verified like any other."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import html5lib
import pytest
import xmlschema
from conftest import FIXTURES, PRODUCTION_UNANCHORED
from test_fleet_report_labels import COMMON

from nomyo_audit import SecureChatCompletion
from nomyo_audit.attest._attester import TPMAttester
from nomyo_audit.attest._software import SoftwareTPM
from nomyo_audit.audit import AuditLog, build_report
from nomyo_audit.audit._keys import generate_audit_key, load_private_key
from nomyo_audit.audit._records import build_record
from nomyo_audit.audit._render import render_report
from nomyo_audit.audit._report_groups import MAX_GROUPS, Scope
from nomyo_audit.cli import main
from nomyo_audit.errors import APIError, ConfigurationError, ExitCode
from nomyo_audit.policy import PolicyViolationError
from nomyo_audit.tpm._measurements import measure_demo_boot

DEAD_ROUTER = "http://127.0.0.1:9"
JUNIT = xmlschema.XMLSchema(str(FIXTURES / "junit.xsd"))


async def _fleet(log_path, router_a, router_b, unattested):
    """billing/acme: 3 calls to router A; search/globex: 2 to router B; an unlabelled client: 1 to
    router A and 1 to a router without attestation (denied before sending); search without a
    tenant: 1 to a router nobody listens on (a failed record)."""

    async def calls(url, n, **labels):
        async with SecureChatCompletion(
            url,
            allow_http=True,
            audit_log=str(log_path),
            max_retries=0,
            policy=PRODUCTION_UNANCHORED,
            **labels,
        ) as client:
            for _ in range(n):
                await client.create("echo", [{"role": "user", "content": "SECRET-PROMPT"}])

    await asyncio.gather(
        calls(router_a.url, 3, service="billing", tenant="acme"),
        calls(router_b.url, 2, service="search", tenant="globex"),
        calls(router_a.url, 1),
    )
    with pytest.raises(APIError):
        await calls(DEAD_ROUTER, 1, service="search")
    with pytest.raises(PolicyViolationError):
        await calls(unattested.url, 1)


@pytest.fixture
def fleet_log(make_router, tmp_path):
    key_path, pub_path = generate_audit_key(tmp_path / "audit.key")
    router_a, router_b = (make_router(attester=_attester()) for _ in range(2))
    log_path = tmp_path / "audit.db"
    unattested = make_router()
    asyncio.run(_fleet(log_path, router_a, router_b, unattested))
    with AuditLog(log_path, key=load_private_key(key_path)) as log:
        log.checkpoint()
    return log_path, key_path, pub_path, router_a.url, router_b.url, unattested.url


def _attester():
    tpm = SoftwareTPM()
    measure_demo_boot(tpm)
    return TPMAttester(tpm)


def _group(document, name, value):
    return next(g for g in document["groups"][name] if g["value"] == value)


def _report(tmp_path, fleet_log, name, *extra):
    log_path, key_path = fleet_log[:2]
    out = tmp_path / name
    status = main(
        [
            "report",
            "--log",
            str(log_path),
            "--format",
            "json,html,md",
            "--sign",
            str(key_path),
            "-o",
            str(out),
            *extra,
        ]
    )
    assert status == ExitCode.OK
    return out, json.loads((out / "report.json").read_text())


def test_the_report_groups_a_shared_log_by_service_router_and_tenant(fleet_log, tmp_path):
    _, _, _, url_a, url_b, url_c = fleet_log
    out, document = _report(tmp_path, fleet_log, "all")
    assert document["scope"] is None
    assert document["summary"]["requests"] == document["covers"]["records"] == 8
    services = {g["value"]: g["records"] for g in document["groups"]["service"]}
    assert services == {"billing": 3, "search": 3, None: 2}
    assert [g["value"] for g in document["groups"]["service"]] == ["billing", "search", None]
    assert {g["value"]: g["records"] for g in document["groups"]["tenant"]} == {
        "acme": 3,
        "globex": 2,
        None: 3,
    }
    routers = {g["value"]: g["records"] for g in document["groups"]["router"]}
    assert routers == {url_a: 4, url_b: 2, DEAD_ROUTER: 1, url_c: 1}
    search = _group(document, "service", "search")
    assert search["outcomes"] == {"passed": 2, "warned": 0, "denied": 0, "failed": 1}
    assert search["verdict_failed"] == 0 and search["policy_failed"] == 0
    assert _group(document, "service", "billing")["outcomes"]["passed"] == 3
    unlabelled = _group(document, "service", None)
    assert unlabelled["outcomes"] == {"passed": 1, "warned": 0, "denied": 1, "failed": 0}
    assert unlabelled["denied_before_sending"] == 1 and unlabelled["policy_failed"] == 1
    assert document["groups_omitted"]["service"] == {
        "groups": 0,
        "records": 0,
        "records_of_untracked_values": 0,
    }
    markdown = (out / "report.md").read_text()
    assert "**Scope:**" not in markdown
    assert "## By service / router / tenant" in markdown
    assert (
        "| billing | 3 | 3 | 0 | 0 | 0 | 0 | 0 |" in markdown
        and "| *(none)* | 2 | 1 | 0 | 1 | 0 | 0 | 1 |" in markdown
    )
    html = (out / "report.html").read_text()
    html5lib.HTMLParser(strict=True).parse(html)
    assert "By service / router / tenant" in html and "<i>(none)</i>" in html
    assert "SECRET-PROMPT" not in markdown + html + json.dumps(document)


def test_report_service_limits_the_figures_not_what_the_report_covers(fleet_log, tmp_path, capsys):
    log_path, _, pub_path, url_a = fleet_log[:4]
    out, document = _report(
        tmp_path, fleet_log, "search", "--service", "search", "--format", "json,html,md,csv,junit"
    )
    assert document["scope"] == {"service": "search", "router": None, "tenant": None}
    assert document["summary"]["requests"] == 3 and document["summary"]["failed"] == 1
    assert document["covers"]["records"] == 8 and document["covers"]["span"] == {"from": 0, "to": 8}
    assert [g["value"] for g in document["groups"]["service"]] == ["search"]
    assert len(document["failures"]) == 1 and document["failures"][0]["outcome"].startswith("http_error")
    markdown, html = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert "This report counts only the records of service **search** (3 of the 8" in markdown
    assert "**Scope:** this report counts only the records of service **search**: 3 of the 8" in markdown
    assert "<b>Scope:</b> this report counts only the records of service <b>search</b>: 3 of the 8" in html
    assert "scope,service,search,3\n" in (out / "report.csv").read_text()
    junit = (out / "report.junit.xml").read_text()
    JUNIT.validate(junit)
    assert '<property name="scope" value="service=search: 3 of 8 records"/>' in junit
    envelope = json.loads((out / "report.dsse.json").read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert statement["predicate"]["scope"] == document["scope"]
    capsys.readouterr()
    assert main(["verify-report", str(out), "--key", str(pub_path), "--log", str(log_path)]) == ExitCode.OK
    assert (
        f"note: {out} counts only the records of service=search (its signed scope)" in capsys.readouterr().out
    )

    _, by_router = _report(tmp_path, fleet_log, "router-a", "--router", url_a + "/", "--tenant", "acme")
    assert by_router["scope"] == {"service": None, "router": url_a + "/", "tenant": "acme"}
    assert by_router["summary"]["requests"] == 3
    _, nobody = _report(tmp_path, fleet_log, "nobody", "--tenant", "initech")
    assert nobody["summary"]["requests"] == 0 and nobody["covers"]["records"] == 8


def test_altering_a_scoped_reports_scope_breaks_its_signature(fleet_log, tmp_path, capsys):
    log_path, _, pub_path = fleet_log[:3]
    out, document = _report(tmp_path, fleet_log, "billing", "--service", "billing")
    widened = {**document, "scope": None}
    (out / "report.json").write_text(json.dumps(widened, indent=2, sort_keys=True) + "\n")
    assert main(["verify-report", str(out), "--key", str(pub_path)]) == ExitCode.INTEGRITY
    assert "report.json: modified after it was signed" in capsys.readouterr().err

    out, _ = _report(tmp_path, fleet_log, "billing-2", "--service", "billing")
    envelope = json.loads((out / "report.dsse.json").read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["predicate"]["scope"]["service"] = "search"
    envelope["payload"] = base64.b64encode(json.dumps(statement, sort_keys=True).encode()).decode()
    (out / "report.dsse.json").write_text(json.dumps(envelope))
    assert (
        main(["verify-report", str(out), "--key", str(pub_path), "--log", str(log_path)])
        == ExitCode.INTEGRITY
    )


@pytest.mark.parametrize(
    "flag, value, problem",
    [("--service", "a\nb", "printable"), ("--tenant", "x" * 65, "1 to 64"), ("--router", "", "router URL")],
)
def test_a_bad_limit_is_exit_2_before_the_log_is_read(fleet_log, tmp_path, capsys, flag, value, problem):
    log_path = fleet_log[0]
    status = main(["report", "--log", str(log_path), flag, value, "-o", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert status == ExitCode.USAGE and err.startswith("error[invalid_label]") and problem in err, err
    assert not (tmp_path / "bad").exists()


def test_report_limits_come_from_the_config_file(fleet_log, tmp_path, monkeypatch):
    log_path = fleet_log[0]
    config = tmp_path / "nomyo-audit.yaml"
    config.write_text(f"report:\n  log: {log_path}\n  service: billing\n  format: json\n")
    monkeypatch.chdir(tmp_path)
    assert main(["report", "-o", str(tmp_path / "configured")]) == ExitCode.OK
    document = json.loads((tmp_path / "configured" / "report.json").read_text())
    assert document["scope"]["service"] == "billing" and document["summary"]["requests"] == 3


# -- bounded and escaped, on records made directly -------------------------------------------------


def _record(seq, **labels):
    """A record of ``seq`` with these labels (the labels test's record, otherwise)."""
    return build_record(**{**COMMON, "seq": seq, "payload_id": f"p{seq}", **labels})


def _state(size):
    return {"size": size, "root": "00" * 32, "checkpoint": None}


def test_groups_are_bounded_and_the_rest_summarised(monkeypatch):
    docs = [json.loads(_record(n, service=f"svc-{n:03d}")) for n in range(MAX_GROUPS + 10)]
    docs += [json.loads(_record(999, service="svc-000"))]
    document = build_report(docs, generated_at="2026-11-26T00:00:00Z", log_state=_state(61))
    services = document["groups"]["service"]
    assert len(services) == MAX_GROUPS and services[0] == {**services[0], "value": "svc-000", "records": 2}
    assert document["groups_omitted"]["service"] == {
        "groups": 10,
        "records": 10,
        "records_of_untracked_values": 0,
    }
    markdown = render_report(document, ["md"])["report.md"].decode()
    assert markdown.count("| svc-") == 20
    assert "40 more service groups with 40 records (report.json lists the 50 largest)" in markdown

    monkeypatch.setattr("nomyo_audit.audit._report_groups.MAX_TRACKED", 5)
    capped = build_report(docs, generated_at="2026-11-26T00:00:00Z", log_state=_state(61))
    assert len(capped["groups"]["service"]) == 5
    assert capped["groups_omitted"]["service"] == {
        "groups": 0,
        "records": 55,
        "records_of_untracked_values": 55,
    }
    assert sum(g["records"] for g in capped["groups"]["service"]) + 55 == len(docs)


def test_labels_and_router_urls_are_escaped_in_html_and_markdown():
    hostile = "<script>alert(1)</script>|*x*"
    docs = [
        json.loads(_record(0, service=hostile, tenant="a&b")),
        {**json.loads(_record(1)), "router": "https://evil.example/<img src=x>\n| injected |"},
        {**json.loads(_record(2)), "service": 7},  # a hand-made record: counted, never a crash
        None,  # a record that was not JSON
    ]
    document = build_report(docs, generated_at="2026-11-26T00:00:00Z", log_state=_state(4))
    files = render_report(document, ["html", "md"])
    html, markdown = files["report.html"].decode(), files["report.md"].decode()
    html5lib.HTMLParser(strict=True).parse(html)
    assert "<script>" not in html and "&lt;script&gt;" in html and "<img" not in html
    assert "<script>" not in markdown and "&lt;script&gt;alert(1)&lt;/script&gt;\\|\\*x\\*" in markdown
    assert "\n| injected |" not in markdown
    assert {g["value"] for g in document["groups"]["service"]} == {hostile, "7", None}


def test_scope_admits_exactly_the_records_with_every_given_label():
    doc = {"service": "billing", "tenant": "acme", "router": "https://r.example"}
    assert Scope(service="billing").admits(doc) and Scope(router="https://r.example/").admits(doc)
    assert Scope(service="billing", tenant="acme", router="https://r.example").admits(doc)
    assert not Scope(service="billing", tenant="globex").admits(doc)
    assert not Scope(service="billing").admits({"tenant": "acme"})
    assert not Scope(router="https://r.example").admits({"router": 7})
    assert not Scope() and Scope().to_dict() is None
    docs = [json.loads(_record(0, service="billing")), json.loads(_record(1, service="search"))]
    limited = build_report(
        docs, generated_at="2026-11-26T00:00:00Z", log_state=_state(2), scope={"service": "search"}
    )
    assert limited["scope"] == {"service": "search", "router": None, "tenant": None}
    assert limited["summary"]["requests"] == 1 and limited["covers"]["records"] == 2
    whole = build_report(
        docs, generated_at="2026-11-26T00:00:00Z", log_state=_state(2), scope={"tenant": None}
    )
    assert whole["scope"] is None and whole["summary"]["requests"] == 2
    with pytest.raises(ConfigurationError, match="not model"):
        build_report(docs, generated_at="2026-11-26T00:00:00Z", log_state=_state(2), scope={"model": "echo"})


def test_a_scoped_report_signs_ear_jwts_for_its_own_records_only(fleet_log, tmp_path):
    out, document = _report(tmp_path, fleet_log, "ear", "--service", "billing", "--ear-jwt")
    lines = [json.loads(line) for line in (out / "report.ear.jwt").read_text().splitlines()]
    assert len(lines) == document["summary"]["requests"] == 3
    assert all(line["jwt"] for line in lines)
    assert main(["verify-report", str(out), "--key", str(fleet_log[2])]) == ExitCode.OK


def test_a_chain_of_reports_keeps_one_scope(fleet_log, tmp_path, capsys):
    log_path, _, pub_path = fleet_log[:3]
    until = ["--until", str(int(time.time()) + 1)]
    first, _ = _report(tmp_path, fleet_log, "billing-1", "--service", "billing", *until)
    second, chained = _report(
        tmp_path, fleet_log, "billing-2", "--service", "billing", "--previous", str(first)
    )
    assert chained["scope"]["service"] == "billing" and chained["chain"]["previous"]["report_sha256"]
    assert (
        main(["verify-report", str(first), str(second), "--key", str(pub_path), "--log", str(log_path)]) == 0
    )
    capsys.readouterr()
    for other in (["--service", "search"], []):
        status = main(
            [
                "report",
                "--log",
                str(log_path),
                "--sign",
                str(fleet_log[1]),
                "--previous",
                str(first),
                "-o",
                str(tmp_path / "other"),
                *other,
            ]
        )
        err = capsys.readouterr().err
        assert status == ExitCode.USAGE and "a chain of reports keeps one scope" in err, err
        assert "counts --service billing and this one" in err
