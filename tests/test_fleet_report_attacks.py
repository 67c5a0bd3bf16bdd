"""Attacks on the fleet labels and scoped reports (issue 16, section 4; reviewer R4): labels that
bypass the client's checks, scopes given through the Python API, labels on the wire."""

from __future__ import annotations

import asyncio
import json
import xml.dom.minidom

import httpx
import pytest
from test_fleet_report_labels import COMMON

from nomyo_audit import SecureChatCompletion
from nomyo_audit.audit import AuditLog, build_report
from nomyo_audit.audit._records import build_record
from nomyo_audit.audit._render import render_report
from nomyo_audit.errors import ConfigurationError

HELLO = [{"role": "user", "content": "hello from nomyo"}]
STATE = {"size": 2, "root": "00" * 32, "checkpoint": None}


def _doc(seq, **fields):
    return {**json.loads(build_record(**{**COMMON, "seq": seq, "payload_id": f"p{seq}"})), **fields}


@pytest.mark.parametrize(
    "scope",
    [
        {"service": "billing\n| injected |"},
        {"tenant": "\x1b[2J"},
        {"service": "x" * 65},
        {"router": "https://r.example/\u202e"},
        {"service": 7},
    ],
)
def test_build_report_checks_a_scope_given_through_the_python_api(scope):
    """report --service checks its limit (exit 2), build_report(scope=) did not: a newline reached the
    Markdown scope line and an escape character the JUnit XML (not well-formed) and the signed scope."""
    with pytest.raises(ConfigurationError) as raised:
        build_report([_doc(0)], generated_at="2026-11-26T00:00:00Z", log_state=STATE, scope=scope)
    assert raised.value.code == "invalid_label"


def test_a_scope_given_through_the_python_api_renders_well_formed_junit():
    document = build_report(
        [_doc(0, service="billing")],
        generated_at="2026-11-26T00:00:00Z",
        log_state=STATE,
        scope={"service": "billing", "router": "https://r.example"},
    )
    xml.dom.minidom.parseString(render_report(document, ["junit"])["report.junit.xml"])


@pytest.mark.parametrize(
    "label",
    ["\u202egnillib", "bill\u200bing", "billing\n| x | 9 |", "billing\r=cmd|' /C calc'!A0", "a\x00b"],
)
def test_a_label_that_bypassed_the_checks_is_shown_visibly_in_every_format(label):
    """A writer that appends its own record bytes (AuditLog.append) is not held to check_label: a
    right-to-left override reverses the rest of a Markdown or CSV line as text (the counts read
    backwards), a zero-width space makes two groups look the same. Such a value is shown escaped."""
    routed = build_report(
        [_doc(0, router="https://r.example/" + label)], generated_at="2026-11-26T00:00:00Z", log_state=STATE
    )
    assert [g["value"] for g in routed["groups"]["router"]] == [repr("https://r.example/" + label)]
    docs = [_doc(0, service=label, tenant=label), _doc(1)]
    document = build_report(docs, generated_at="2026-11-26T00:00:00Z", log_state=STATE)
    for name in ("service", "tenant"):
        assert [g["value"] for g in document["groups"][name]] == [repr(label), None]
    files = render_report(document, ["html", "md", "csv", "junit"])
    for name, data in files.items():
        text = data.decode()
        for bad in ("\u202e", "\u200b", "\x00", "| x | 9 |\n"):
            assert bad not in text, (name, bad)
        if name == "report.csv":
            assert "\r=cmd" not in text and "\n=cmd" not in text


def test_labels_written_around_the_checks_count_as_the_report_shows_them(tmp_path):
    """Through AuditLog.append a writer can put anything in a record: the log still verifies (its
    bytes are what was appended), and the report counts such records under a visible value."""
    log_path = tmp_path / "audit.db"
    with AuditLog(log_path) as log:

        def build(seq, salt):  # any bytes: the writer's own encoder, no label checks
            return json.dumps(_doc(seq, service="\u202ex", tenant=["t"]), separators=(",", ":")).encode()

        log.append("p0", build)
        assert log.verify().ok
        docs = [json.loads(r.data) for r in log.store.records(None, None)]
    document = build_report(docs, generated_at="2026-11-26T00:00:00Z", log_state={**STATE, "size": 1})
    assert [g["value"] for g in document["groups"]["service"]] == ["'\\u202ex'"]
    assert [g["value"] for g in document["groups"]["tenant"]] == ["['t']"]


def test_a_client_s_labels_cannot_be_changed_after_the_checks(router, tmp_path):
    """The labels are checked when the client is made; a label changed on the instance afterwards was
    only refused when the record was built, after the request was sent: the reply was lost to the
    caller and the exchange left no audit record."""
    log_path = tmp_path / "audit.db"

    async def go():
        async with SecureChatCompletion(
            router.url, allow_http=True, audit_log=str(log_path), service="billing"
        ) as chat:
            with pytest.raises(TypeError):
                chat.client.labels["service"] = "a\nb"  # type: ignore[index]
            with pytest.raises(AttributeError):
                chat.client.labels = {"service": "a\nb"}  # type: ignore[misc]
            await chat.create("echo", HELLO)

    asyncio.run(go())
    with AuditLog.open(log_path) as log:
        docs = [json.loads(r.data) for r in log.store.records(None, None)]
    assert [d.get("service") for d in docs] == ["billing"]


class _Recording(httpx.AsyncHTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.sent.append(request)
        return await super().handle_async_request(request)


def test_labels_never_reach_the_router(router, tmp_path, nomyo_reference):
    """The labels are the audit record's only: the router gets the same requests from a labelled
    client as from an unlabelled one (same paths, header names and package fields, no label in any
    byte), and the payload it decrypts is the one the real nomyo 0.2.9 client sends."""
    service, tenant = "svc-LABEL-7f3a", "tenant-LABEL-9c1e"

    async def ours(**labels):
        transport = _Recording()
        async with SecureChatCompletion(
            router.url,
            allow_http=True,
            audit_log=str(tmp_path / "a.db"),
            protocol="1.0",
            transport=transport,
            **labels,
        ) as chat:
            await chat.create("echo", HELLO)
        return transport.sent, router.config.backend.payloads[-1]

    async def reference():
        client = nomyo_reference.SecureChatCompletion(router.url, allow_http=True, secure_memory=False)
        await client.create(model="echo", messages=HELLO)
        return router.config.backend.payloads[-1]

    labelled, labelled_payload = asyncio.run(ours(service=service, tenant=tenant))
    plain, plain_payload = asyncio.run(ours())
    with pytest.warns(UserWarning):
        reference_payload = asyncio.run(reference())
    assert labelled_payload == plain_payload == reference_payload
    assert [(r.method, r.url) for r in labelled] == [(r.method, r.url) for r in plain]
    for a, b in zip(labelled, plain, strict=True):
        assert sorted(a.headers.keys()) == sorted(b.headers.keys())
        raw = a.url.raw_path + b"".join(k + v for k, v in a.headers.raw) + a.content
        for label in (service, tenant):
            assert label.encode() not in raw and label.encode("utf-16-le") not in raw
        if a.content[:1] == b"{":
            assert sorted(json.loads(a.content)) == sorted(json.loads(b.content))
    with AuditLog.open(tmp_path / "a.db") as log:
        docs = [json.loads(r.data) for r in log.store.records(None, None)]
    assert [(d.get("service"), d.get("tenant")) for d in docs] == [(service, tenant), (None, None)]


def _scoped_files(service):
    docs = [_doc(0, service=service), _doc(1, outcome="http_error:500")]
    state = {**STATE, "verification": {"intact": True, "size": 2, "root": "00" * 32, "key": "given"}}
    document = build_report(
        docs, generated_at="2026-11-26T00:00:00Z", log_state=state, scope={"service": service}
    )
    return {name: data.decode() for name, data in render_report(document, ["html", "md", "csv"]).items()}


def test_a_scoped_reports_controls_say_they_judge_only_its_scope():
    """The controls are judged from the report's figures, which a scoped report counts for its scope
    only (a failure of another service is not among them): the section says so where it stands, not
    only in the banner at the top."""
    files = _scoped_files("billing")
    html = files["report.html"].split('<h2 id="controls">', 1)[1].split("<h2", 1)[0]
    markdown = files["report.md"].split("## Controls evidenced", 1)[1].split("\n## ", 1)[0]
    assert "judged on the 1 records of service <b>billing</b> only, not the 2 of the period" in html
    assert "judged on the 1 records of service **billing** only, not the 2 of the period" in markdown


def test_label_text_is_shown_as_it_is_and_no_label_is_told_apart():
    """A backtick in a label was shown as a quote (`a'b` for a`b: another label), and in CSV the
    records without a label and a service named "(none)" gave the same row."""
    markdown = _scoped_files("a`b")["report.md"]
    assert "a'b" not in markdown and "a&#96;b" in markdown
    docs = [_doc(0, service="(none)"), _doc(1)]
    document = build_report(docs, generated_at="2026-11-26T00:00:00Z", log_state=STATE)
    rows = render_report(document, ["csv"])["report.csv"].decode().splitlines()
    assert "group,service (none),,1" in rows and "group,service,,1" in rows
