"""Policy-gated requests end to end: real routers on loopback, software and swtpm attesters."""

from __future__ import annotations

import asyncio
import json
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner
from conftest import PRODUCTION_UNANCHORED

from nomyo_audit import PolicyViolationError, SecureChatCompletion, SecurityError, load_policy
from nomyo_audit.attest._attester import TPMAttester
from nomyo_audit.attest._software import SoftwareTPM
from nomyo_audit.cli import cli, main
from nomyo_audit.errors import ExitCode
from nomyo_audit.policy import Policy
from nomyo_audit.router._app import NoAttester
from nomyo_audit.router._attestation import make_attester
from nomyo_audit.tpm._measurements import TAMPER_EVENT, measure_demo_boot

HELLO = [{"role": "user", "content": "gated hello"}]


def chat(router, keys_dir, policy=None, **kwargs):
    async def go():
        async with SecureChatCompletion(
            router.url, allow_http=True, key_dir=str(keys_dir), policy=policy
        ) as c:
            return await c.create("echo", HELLO, security_tier="high", **kwargs)

    return asyncio.run(go())


def measured_router(make_router):
    tpm = SoftwareTPM()
    measure_demo_boot(tpm)
    return make_router(attester=TPMAttester(tpm)), tpm


def test_production_checks_pass_on_the_demo_machine(make_router, client_keys_dir):
    # production's rules but aik_trust (a software TPM here; test_production_policy.py covers anchoring)
    router, _ = measured_router(make_router)
    reply = chat(router, client_keys_dir, policy=PRODUCTION_UNANCHORED)
    assert reply["choices"][0]["message"]["content"] == "echo: gated hello"
    assert reply["_metadata"]["policy"]["outcome"] == "pass"
    assert reply["_metadata"]["verification"]["policy"]["name"] == "production-unanchored"
    assert router.app.state.requests["/pki/v2/attestation"] == 1  # attest-before-send, protocol 2's key


def test_changed_pcr_is_denied_and_no_content_is_returned(make_router, client_keys_dir):
    router, tpm = measured_router(make_router)
    chat(router, client_keys_dir, policy=PRODUCTION_UNANCHORED)
    tpm.extend("sha256", *TAMPER_EVENT)
    policy = load_policy(PRODUCTION_UNANCHORED)
    # the key attestation is cached for its TTL, so the response check is what catches it
    with pytest.raises(PolicyViolationError) as denied:
        asyncio.run(_two_calls(router, client_keys_dir, policy))
    assert "sha256 PCR 0" in str(denied.value)
    assert denied.value.result.outcome == "deny"
    assert isinstance(denied.value, SecurityError)


async def _two_calls(router, keys_dir, policy):
    async with SecureChatCompletion(
        router.url, allow_http=True, key_dir=str(keys_dir), policy=policy
    ) as client:
        client.client._key_attested_until.clear()
        await client.create("echo", HELLO, security_tier="high")


def test_changed_pcr_fails_key_attestation_before_sending(make_router, client_keys_dir):
    router, tpm = measured_router(make_router)
    tpm.extend("sha256", *TAMPER_EVENT)
    with pytest.raises(PolicyViolationError, match="nothing was sent"):
        chat(router, client_keys_dir, policy=PRODUCTION_UNANCHORED)
    assert router.app.state.requests["/v1/chat/secure_completion"] == 0


def test_warn_policy_returns_the_response_with_the_result(make_router, client_keys_dir):
    router, tpm = measured_router(make_router)
    tpm.extend("sha256", *TAMPER_EVENT)
    warn = Policy.from_document(
        {
            **load_policy(PRODUCTION_UNANCHORED).document,
            "spec": {
                **load_policy(PRODUCTION_UNANCHORED).spec,
                "on_failure": "warn",
                "require_key_attestation": False,
            },
        }
    )
    reply = chat(router, client_keys_dir, policy=warn)
    assert reply["choices"][0]["message"]["content"] == "echo: gated hello"
    assert reply["_metadata"]["policy"]["outcome"] == "warn"
    failed = [r["rule"] for r in reply["_metadata"]["policy"]["rules"] if r["status"] == "fail"]
    assert failed == ["pcrs"]


def test_per_call_policy_overrides_the_clients(make_router, client_keys_dir):
    router, _ = measured_router(make_router)
    strict = Policy.from_document(
        {
            "apiVersion": "nomyo-audit/v1",
            "kind": "AttestationPolicy",
            "metadata": {"name": "tiers"},
            "spec": {"security_tiers": ["maximum"]},
        }
    )
    assert chat(router, client_keys_dir, policy="development")["_metadata"]["policy"]["outcome"] == "pass"

    async def go():
        async with SecureChatCompletion(
            router.url, allow_http=True, key_dir=str(client_keys_dir), policy="development"
        ) as client:
            return await client.create("echo", HELLO, security_tier="high", policy=strict)

    with pytest.raises(PolicyViolationError, match="security_tiers"):
        asyncio.run(go())


def test_key_attestation_fails_closed_without_a_tpm(make_router, client_keys_dir):
    router = make_router(attester=NoAttester())
    with pytest.raises(PolicyViolationError, match="no_attestation"):
        chat(router, client_keys_dir, policy=PRODUCTION_UNANCHORED)
    assert router.app.state.requests["/v1/chat/secure_completion"] == 0


def test_key_attestation_fails_closed_against_a_router_without_the_endpoint(router_keys, client_keys_dir):
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    from nomyo_audit.router import ServerThread
    from nomyo_audit.wire import public_key_pem

    completions = []

    async def completion(request):
        completions.append(1)
        return Response(b"")

    pem = public_key_pem(router_keys.private_key.public_key())
    app = Starlette(
        routes=[
            Route("/pki/public_key", lambda r: PlainTextResponse(pem)),
            Route("/v1/chat/secure_completion", completion, methods=["POST"]),
        ]
    )
    with ServerThread(app) as server:
        with pytest.raises(SecurityError) as err:
            chat(server, client_keys_dir, policy=PRODUCTION_UNANCHORED)
    assert err.value.code == "key_attestation_unavailable"
    assert completions == []  # asserted on the router's side: no prompt reached it


def test_key_attestation_is_cached_per_key(make_router, client_keys_dir):
    router, _ = measured_router(make_router)

    async def go():
        async with SecureChatCompletion(
            router.url, allow_http=True, key_dir=str(client_keys_dir), policy=PRODUCTION_UNANCHORED
        ) as client:
            for _ in range(3):
                await client.create("echo", HELLO, security_tier="high")

    asyncio.run(go())
    assert router.app.state.requests["/pki/v2/attestation"] == 1  # protocol 2's key configuration
    assert router.app.state.requests["/v2/chat/secure_completion"] == 3


def test_attestation_endpoint_rejects_bad_nonces(make_router):
    import httpx

    router, _ = measured_router(make_router)
    for nonce in ("", "zz", "ab" * 8 + "a", "ab" * 65):
        assert httpx.get(router.url + "/pki/attestation", params={"nonce": nonce}).status_code == 400
    assert httpx.get(router.url + "/pki/attestation", params={"nonce": "ab" * 32}).status_code == 200


# -- the same loop with swtpm: from-evidence, extend, deny ------------------------------------------


def test_swtpm_policy_from_evidence_then_extend_denies(swtpm, make_router, client_keys_dir, tmp_path):
    router = make_router(attester=make_attester(swtpm.spec))
    source = router.config.attester.source
    for pcr in (0, 7, 10):  # a measured boot: from-evidence refuses all-zero PCRs
        source.extend("sha256", pcr, b"measured boot")
    reply = chat(router, client_keys_dir)
    (tmp_path / "reply.json").write_text(json.dumps(reply))
    golden = tmp_path / "golden.yaml"
    made = CliRunner().invoke(
        cli, ["policy", "from-evidence", str(tmp_path / "reply.json"), "-o", str(golden)]
    )
    assert made.exit_code == 0, made.output
    (tmp_path / "gate.yaml").write_text(
        "apiVersion: nomyo-audit/v1\nkind: AttestationPolicy\nextends: golden.yaml\n"
        "metadata: {name: gate}\nspec: {require_key_attestation: true, on_failure: deny}\n"
    )
    gate = load_policy(tmp_path / "gate.yaml")
    assert chat(router, client_keys_dir, policy=gate)["_metadata"]["policy"]["outcome"] == "pass"
    source.extend("sha256", 7, b"a new secure boot database")
    before = router.app.state.requests["/v1/chat/secure_completion"]
    with pytest.raises(PolicyViolationError) as denied:
        chat(router, client_keys_dir, policy=load_policy(tmp_path / "gate.yaml"))
    assert "sha256 PCR 7" in str(denied.value)
    assert router.app.state.requests["/v1/chat/secure_completion"] == before  # denied before sending


# -- the CLI ------------------------------------------------------------------------------------


@pytest.fixture
def saved_replies(make_router, client_keys_dir, tmp_path):
    router, tpm = measured_router(make_router)
    good = chat(router, client_keys_dir)
    tpm.extend("sha256", *TAMPER_EVENT)
    bad = chat(router, client_keys_dir)
    path = tmp_path / "replies.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    return path


def test_verify_with_policy_and_junit(saved_replies, tmp_path):
    report = tmp_path / "report.xml"
    result = CliRunner().invoke(
        cli,
        [
            "verify",
            "--policy",
            PRODUCTION_UNANCHORED,
            "--format",
            "junit",
            "-o",
            str(report),
            str(saved_replies),
        ],
    )
    assert result.exit_code == ExitCode.FINDING
    suites = ET.parse(report).getroot()
    assert suites.tag == "testsuites" and len(suites) == 2
    first, second = suites
    rules = [case.get("name") for case in first]
    assert "pcrs" in rules and "require_attestation" in rules
    assert first.get("failures") == "0" and second.get("failures") == "1"
    failure = next(case for case in second if case.find("failure") is not None)
    assert failure.get("name") == "pcrs" and "sha256 PCR 0" in failure.find("failure").get("message")


def test_verify_with_a_warn_policy_exits_0(saved_replies):
    result = CliRunner().invoke(cli, ["verify", "--policy", "development", str(saved_replies)])
    assert result.exit_code == ExitCode.OK, result.output


def test_policy_lint_show_and_errors(tmp_path):
    runner = CliRunner()
    ok = runner.invoke(cli, ["policy", "lint", "production", "development", "maximum"])
    assert ok.exit_code == 0 and ok.output.count("ok ") == 3
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: nomyo-audit/v1\nkind: AttestationPolicy\nmetadata: {name: b}\nspec: {colour: 1}\n"
    )
    failed = runner.invoke(cli, ["policy", "lint", str(bad)])
    assert failed.exit_code == ExitCode.USAGE and f"{bad}:4 spec: unknown key(s) 'colour'" in failed.output
    shown = runner.invoke(cli, ["policy", "show", "maximum"])
    assert shown.exit_code == 0 and "sha256:" in shown.output and "mode: ek" in shown.output
    assert "pinned:" in shown.output  # maximum: anchored (ek) AND pinned


def test_from_evidence_skips_unverified_records(saved_replies, tmp_path):
    lines = saved_replies.read_text().splitlines()
    tampered = json.loads(lines[0])
    tampered["_metadata"]["tpm_attestation"]["signature_b64"] = "AAAA"
    source = tmp_path / "mixed.jsonl"
    source.write_text(lines[0] + "\n" + json.dumps(tampered) + "\n")
    output = str(tmp_path / "g.yaml")
    command = ["policy", "from-evidence", "--allow-software-attester", str(source), "-o", output]
    result = CliRunner().invoke(cli, command)
    assert result.exit_code == 0 and "skipped" in result.output
    golden = load_policy(tmp_path / "g.yaml")
    assert golden.spec["aik_trust"]["mode"] == "pinned" and len(golden.spec["aik_trust"]["pinned"]) == 1
    # never overwrites without --force (main() is the CLI's one exit path)
    assert main(command) == ExitCode.USAGE


def test_chat_with_policy_denied_prints_no_reply(make_router, tmp_path):
    router, tpm = measured_router(make_router)
    tpm.extend("sha256", *TAMPER_EVENT)
    result = CliRunner().invoke(
        cli,
        [
            "chat",
            "--base-url",
            router.url,
            "--allow-http",
            "--policy",
            PRODUCTION_UNANCHORED,
            "secret question",
        ],
    )
    assert result.exit_code != 0
    assert "echo: secret question" not in result.output
