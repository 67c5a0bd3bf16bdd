"""Policies: the file format (every error class, with file:line), composition, and each rule
passing and failing on real evidence from the software TPM."""

from __future__ import annotations

import copy
import dataclasses
import gc
import json
import textwrap
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import REPO

from nomyo_audit.attest._attester import TPMAttester
from nomyo_audit.attest._software import SoftwareTPM
from nomyo_audit.errors import EvidenceError
from nomyo_audit.policy import (
    Appraisal,
    Policy,
    PolicyError,
    appraise,
    appraise_all,
    evaluate,
    junit_xml,
    load_policy,
    parse_records,
    read_records,
    shipped_policies,
    stored_records,
    verify_record,
)
from nomyo_audit.policy import _evaluate as evaluate_module
from nomyo_audit.tpm._binding import response_binding, response_content_digest
from nomyo_audit.tpm._measurements import expected_pcr, measure_demo_boot


def header(name: str = "test") -> str:
    return f"apiVersion: nomyo-audit/v1\nkind: AttestationPolicy\nmetadata:\n  name: {name}\n"


HEADER = header()
NOW = 1_800_000_000


def write(tmp_path: Path, body: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def policy(spec: dict, name: str = "test") -> Policy:
    return Policy.from_document(
        {
            "apiVersion": "nomyo-audit/v1",
            "kind": "AttestationPolicy",
            "metadata": {"name": name},
            "spec": spec,
        }
    )


# -- the shipped policies -----------------------------------------------------------------------


def test_shipped_policies_lint_and_are_documented():
    docs = (REPO / "docs" / "policies.md").read_text()
    assert set(shipped_policies()) == {"development", "production", "maximum"}
    for name, path in shipped_policies().items():
        loaded = load_policy(path)
        assert loaded.name == name and len(loaded.digest) == 64
        assert f"`{name}.yaml`" in docs, f"{name} is not documented in docs/policies.md"


def test_production_golden_values_are_the_demo_machines():
    pcrs = load_policy("production").spec["pcrs"]["sha256"]
    assert pcrs["0"] == [expected_pcr(0)] and pcrs["7"] == [expected_pcr(7)]


def test_maximum_extends_production():
    maximum = load_policy(REPO / "policies" / "maximum.yaml")
    assert maximum.spec["security_tiers"] == ["maximum"]  # overridden
    assert maximum.spec["pcrs"] == load_policy("production").spec["pcrs"]  # inherited
    # anchored AND pinned
    assert maximum.spec["aik_trust"]["mode"] == "ek" and maximum.spec["aik_trust"]["pinned"]
    assert maximum.on_failure == "deny"


# -- every schema error class, with file, line and field path ---------------------------------------


@pytest.mark.parametrize(
    ("spec", "line", "message"),
    [
        (
            "spec:\n  require_attestation: maybe\n",
            6,
            "spec.require_attestation: 'maybe' is not of type 'boolean'",
        ),
        ("spec:\n  colour: blue\n", 6, "spec: unknown key(s) 'colour'"),
        ("spec:\n  security_tiers: []\n", 6, "spec.security_tiers: must not be empty"),
        ("spec:\n  security_tiers: [ultra]\n", 6, "'ultra' is not one of"),
        (
            "spec:\n  pcrs:\n    sha256:\n      7: [abc]\n",
            8,
            "spec.pcrs.sha256.7: 'abc' is not a 64-hex-digit SHA-256 digest",
        ),
        (
            "spec:\n  pcrs:\n    sha256:\n      7: [" + "ab" * 20 + "]\n",
            8,
            "is not a 64-hex-digit SHA-256 digest",
        ),
        (
            "spec:\n  pcrs:\n    sha1:\n      0: [" + "ab" * 32 + "]\n",
            8,
            "is not a 40-hex-digit SHA-1 digest",
        ),
        ("spec:\n  pcrs:\n    sha256:\n      24: any\n", 8, "spec.pcrs.sha256: unknown key(s) '24'"),
        ("spec:\n  pcrs:\n    md5:\n      0: any\n", 7, "spec.pcrs: unknown key(s) 'md5'"),
        ("spec:\n  max_age: soon\n", 6, "spec.max_age: 'soon' is not a duration"),
        ("spec:\n  aik_trust: {mode: pinned, pinned: [xyz]}\n", 6, "spec.aik_trust.pinned.0"),
        ("spec:\n  on_failure: explode\n", 6, "spec.on_failure"),
        ("spec:\n  memory_protection: [telepathy]\n", 6, "spec.memory_protection.0"),
    ],
)
def test_schema_errors_name_file_line_and_field(tmp_path, spec, line, message):
    path = write(tmp_path, HEADER + spec)
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    assert f"{path}:{line} " in str(err.value)
    assert message in str(err.value)
    assert err.value.code == "policy_invalid"


def test_every_error_in_a_file_is_reported_at_once(tmp_path):
    path = write(tmp_path, HEADER + "spec:\n  colour: blue\n  on_failure: explode\n  max_age: soon\n")
    assert len(str(load_policy_error(path)).splitlines()) == 3


def load_policy_error(path):
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    return err.value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "apiVersion: nomyo-audit/v2\nkind: AttestationPolicy\nmetadata: {name: x}\nspec: {}\n",
            "apiVersion",
        ),
        ("kind: AttestationPolicy\nmetadata: {name: x}\nspec: {}\n", "'apiVersion' is a required property"),
        (HEADER + "spec:\n  on_failure: deny\n  on_failure: warn\n", ":7: duplicate key 'on_failure'"),
        (HEADER + "spec: [unclosed\n", "not valid YAML"),
        ("- a list\n", "a policy is a mapping"),
        ("", "empty policy file"),
    ],
)
def test_malformed_files(tmp_path, text, message):
    assert message in str(load_policy_error(write(tmp_path, text)))


def test_missing_file():
    assert "no such policy file" in str(load_policy_error("/nonexistent/policy.yaml"))


# -- composition ------------------------------------------------------------------------------------


def test_extends_overrides_keys_and_merges_golden_values(tmp_path):
    write(
        tmp_path,
        header("base")
        + f"""spec:
  on_failure: deny
  security_tiers: [standard, high]
  pcrs:
    sha256:
      0: ["{"aa" * 32}"]
""",
        "base.yaml",
    )
    child = write(
        tmp_path,
        "extends: base.yaml\n"
        + header("child")
        + f"""spec:
  on_failure: warn
  security_tiers: [maximum]
  pcrs:
    sha256:
      0: ["{"bb" * 32}"]
      7: any
""",
        "child.yaml",
    )
    resolved = load_policy(child)
    assert resolved.name == "child" and resolved.on_failure == "warn"
    assert resolved.spec["security_tiers"] == ["maximum"]
    assert resolved.spec["pcrs"]["sha256"] == {"0": ["aa" * 32, "bb" * 32], "7": "any"}


def test_extends_a_shipped_policy_by_name(tmp_path):
    path = write(tmp_path, "extends: production\n" + HEADER + "spec:\n  on_failure: warn\n")
    assert load_policy(path).spec["pcrs"] == load_policy("production").spec["pcrs"]


def test_extends_cycle_is_an_error(tmp_path):
    write(tmp_path, "extends: b.yaml\n" + HEADER + "spec: {}\n", "a.yaml")
    write(tmp_path, "extends: a.yaml\n" + HEADER + "spec: {}\n", "b.yaml")
    error = load_policy_error(tmp_path / "a.yaml")
    assert error.code == "policy_cycle" and "a.yaml -> b.yaml -> a.yaml" in str(error)


def test_digest_ignores_formatting_but_not_meaning(tmp_path):
    a = write(tmp_path, HEADER + "spec: {on_failure: deny, max_age: 5m}\n", "a.yaml")
    b = write(tmp_path, HEADER + "spec:\n  max_age: 5m      # same meaning\n  on_failure: deny\n", "b.yaml")
    c = write(tmp_path, HEADER + "spec: {on_failure: deny, max_age: 6m}\n", "c.yaml")
    assert load_policy(a).digest == load_policy(b).digest != load_policy(c).digest


# -- evaluation: each rule passing and failing ----------------------------------------------------


@pytest.fixture(scope="module")
def machine():
    tpm = SoftwareTPM()
    measure_demo_boot(tpm)
    return tpm


def response_from(tpm, payload_id="pid-1", tier="high", model="echo", processed_at=NOW, mutate=None):
    response = {
        "id": "c1",
        "object": "chat.completion",
        "model": model,
        "choices": [{"message": {"content": "hi"}}],
    }
    block = TPMAttester(tpm).evidence(response_binding(payload_id, response_content_digest(response)))
    response["_metadata"] = {
        "payload_id": payload_id,
        "processed_at": processed_at,
        "security_tier": tier,
        "memory_protection": {"memory_locking": True, "secure_zeroing": True, "core_dump_prevention": False},
        "cuda_device": {"available": False, "device_hash": None},
        "tpm_attestation": block,
    }
    if mutate:
        mutate(response)
    return response


def outcome(spec, response, **kwargs):
    result = evaluate(policy(spec), response, now=kwargs.pop("now", NOW + 10), **kwargs)
    return {r.rule: r.status for r in result.rules}, result


GOLDEN = {"sha256": {"0": [expected_pcr(0)], "7": [expected_pcr(7)]}}


@pytest.mark.parametrize(
    ("spec", "mutate", "expected"),
    [
        ({"require_attestation": True}, None, "pass"),
        (
            {"require_attestation": True},
            lambda r: r["_metadata"]["tpm_attestation"].update(is_available=False),
            "fail",
        ),
        ({"security_tiers": ["high"]}, None, "pass"),
        ({"security_tiers": ["maximum"]}, None, "fail"),
        ({"models": ["ec*"]}, None, "pass"),
        ({"models": ["gpt-*"]}, None, "fail"),
        ({"models": ["*"]}, lambda r: r.pop("model"), "fail"),
        ({"pcrs": GOLDEN}, None, "pass"),
        ({"pcrs": {"sha256": {"0": "any", "10": "any"}}}, None, "pass"),
        ({"pcrs": {"sha256": {"7": ["00" * 32]}}}, None, "fail"),
        ({"pcrs": {"sha256": {"16": "any"}}}, None, "fail"),
        ({"pcr_selection": {"sha256": [0, 7]}}, None, "pass"),
        ({"pcr_selection": {"sha256": [0, 1]}}, None, "fail"),
        ({"pcr_selection": {"sha1": [0]}}, None, "fail"),
        ({"nonce_binding": ["nomyo-audit-v1"]}, None, "pass"),
        ({"nonce_binding": ["sha256-payload-id"]}, None, "fail"),
        ({"aik_trust": {"mode": "any"}}, None, "pass"),
        ({"aik_trust": {"mode": "pinned", "pinned": ["00" * 32]}}, None, "fail"),
        ({"aik_trust": {"mode": "ca", "ca_certificates": ["ca.pem"]}}, None, "fail"),
        ({"memory_protection": ["memory_locking", "secure_zeroing"]}, None, "pass"),
        ({"memory_protection": ["core_dump_prevention"]}, None, "fail"),
        ({"cuda_device": {"available": False}}, None, "pass"),
        ({"cuda_device": {"available": True}}, None, "fail"),
        ({"cuda_device": {"device_hashes": ["ab" * 32]}}, None, "fail"),
        ({"max_age": "5m"}, None, "pass"),
        ({"max_age": "5m"}, lambda r: r["_metadata"].update(processed_at=NOW - 3600), "fail"),
        (
            {"max_age": "5m", "clock_skew": "30s"},
            lambda r: r["_metadata"].update(processed_at=NOW + 600),
            "fail",
        ),
        ({"max_age": "5m"}, lambda r: r["_metadata"].pop("processed_at"), "fail"),
    ],
)
def test_each_rule(machine, spec, mutate, expected):
    statuses, result = outcome(spec, response_from(machine, mutate=mutate))
    rule = next(iter(spec)) if next(iter(spec)) != "clock_skew" else "max_age"
    assert statuses[rule] == expected, result.to_dict()


def test_golden_value_rule_uses_only_proved_values(machine):
    response = response_from(machine)
    response["_metadata"]["tpm_attestation"]["pcr_values"]["sha256"]["7"] = "00" * 32  # a lie about PCR 7
    statuses, result = outcome({"pcrs": {"sha256": {"7": ["00" * 32]}}}, response)
    assert statuses["pcrs"] == "fail"  # the lie does not verify, so it cannot match a golden value
    assert "no PCR values were proved" in result.rules[0].detail


def test_pinned_aik_by_fingerprint_or_name(machine):
    response = response_from(machine)
    _, first = outcome({"aik_trust": {"mode": "any"}}, response)
    for pin in (first.verdict.facts["aik_fingerprint"], first.verdict.facts["aik_name"]):
        statuses, _ = outcome({"aik_trust": {"mode": "pinned", "pinned": [pin]}}, response)
        assert statuses["aik_trust"] == "pass"


def test_failing_rule_lists_the_pcr(machine):
    other = SoftwareTPM()
    measure_demo_boot(other)
    other.extend("sha256", 7, b"a different secure boot db")
    _, result = outcome({"pcrs": GOLDEN}, response_from(other))
    assert result.outcome == "deny"
    assert "sha256 PCR 7" in result.summary() and "sha256 PCR 0" not in result.summary()


def test_on_failure_warn_and_deny(machine):
    response = response_from(machine, tier="standard")
    assert outcome({"security_tiers": ["high"], "on_failure": "warn"}, response)[1].outcome == "warn"
    assert outcome({"security_tiers": ["high"]}, response)[1].outcome == "deny"  # deny is the default
    assert outcome({"security_tiers": ["standard"]}, response)[1].outcome == "pass"


def test_result_names_the_policy_and_is_deterministic(machine):
    response = response_from(machine)
    a, b = (evaluate(policy({"pcrs": GOLDEN}), copy.deepcopy(response), now=NOW) for _ in range(2))
    assert a.to_dict() == b.to_dict()
    assert a.policy_name == "test" and a.policy_digest == policy({"pcrs": GOLDEN}).digest
    assert a.rules[0].findings == ("pcr_digest_matches",)


def test_metadata_only_uses_the_recorded_content_digest(machine):
    response = response_from(machine)
    metadata = dict(response["_metadata"])
    statuses, _ = outcome({"nonce_binding": ["nomyo-audit-v1"]}, metadata)
    assert statuses["nonce_binding"] == "fail"  # no content, no response binding
    metadata["verification"] = {"content_digest": response_content_digest(response).hex()}
    statuses, _ = outcome({"nonce_binding": ["nomyo-audit-v1"]}, metadata)
    assert statuses["nonce_binding"] == "pass"


def test_unknown_payload_id_cannot_bind(machine):
    response = response_from(machine, payload_id="pid-1")
    response["_metadata"]["payload_id"] = "pid-2"
    statuses, _ = outcome({"require_attestation": True}, response)
    assert statuses["require_attestation"] == "fail"


# -- state that cannot surprise: a policy is a value, its compiled rules live beside it ------------


def test_a_policy_is_a_value_that_evaluation_does_not_change(machine):
    fields = [f.name for f in dataclasses.fields(Policy)]
    assert fields == ["name", "description", "spec", "source", "document"]  # no cache in the value
    applied = policy({"pcrs": GOLDEN, "pcr_selection": {"sha256": [0, 7]}, "max_age": "5m"})
    before = copy.deepcopy(vars(applied) | {"digest": applied.digest})
    evaluate(applied, response_from(machine), now=NOW)
    assert vars(applied) == before


def test_compiled_rules_go_with_their_policy():
    applied = policy({"security_tiers": ["high"]})
    evaluate(applied, {"security_tier": "high"}, now=NOW)
    key = id(applied)
    assert key in evaluate_module._COMPILED
    del applied
    gc.collect()
    assert key not in evaluate_module._COMPILED  # dropped with the policy: an id is never reused stale


def test_one_policy_evaluated_from_many_threads_gives_each_its_own_result(machine):
    """Threads compiling and evaluating one policy at once: each gets exactly the serial result."""
    other = SoftwareTPM()
    measure_demo_boot(other)
    other.extend("sha256", 7, b"a different secure boot db")
    spec = {"pcrs": GOLDEN, "pcr_selection": {"sha256": [0, 7]}, "security_tiers": ["high"], "max_age": "5m"}
    cases = [
        response_from(machine, payload_id="good"),
        response_from(other, payload_id="changed"),
        response_from(machine, payload_id="standard", tier="standard"),
        response_from(machine, payload_id="stale", processed_at=NOW - 3600),
    ]
    expected = [evaluate(policy(spec), r, now=NOW).to_dict() for r in cases]
    assert [e["outcome"] for e in expected] == ["pass", "deny", "deny", "deny"]
    shared = policy(spec)  # fresh: the threads race to compile it too
    start = threading.Barrier(8)
    got: dict[int, list[dict]] = {}

    def work(n: int) -> None:
        start.wait()
        order = [(n + i) % len(cases) for i in range(len(cases) * 25)]
        got[n] = [{"case": i, **evaluate(shared, cases[i], now=NOW).to_dict()} for i in order]

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 8
    for results in got.values():
        for result in results:
            assert {k: v for k, v in result.items() if k != "case"} == expected[result["case"]]


# -- appraising saved evidence: read at the edge, then pure -----------------------------------------


def test_parse_records_reads_a_value_an_array_and_json_lines(machine):
    response = response_from(machine)
    one = list(parse_records(json.dumps(response).encode(), "r.json"))
    assert [r.source for r in one] == ["r.json"] and one[0].digest_origin == "content"
    many = list(parse_records(json.dumps([response, response["_metadata"]]).encode(), "a.json"))
    assert [r.source for r in many] == ["a.json[0]", "a.json[1]"]
    assert [r.digest_origin for r in many] == ["content", "none"]
    lines = list(parse_records(f"{json.dumps(response)}\n\n{json.dumps(response)}\n".encode(), "l.jsonl"))
    assert [r.source for r in lines] == ["l.jsonl:1", "l.jsonl:3"]
    for data, code in ((b"", "invalid_input"), (b"{}\n{", "invalid_json"), (b"\xff", "unreadable")):
        with pytest.raises(EvidenceError) as caught:
            list(parse_records(data, "x"))
        assert caught.value.code == code


def test_read_records_reads_when_iterated(tmp_path):
    records = read_records(tmp_path / "missing.json")  # nothing happens yet
    with pytest.raises(EvidenceError, match=r"missing\.json: cannot read"):
        next(records)


def test_appraise_states_the_time_it_judged_at(machine):
    (record,) = parse_records(json.dumps(response_from(machine)).encode(), "r.json")
    production = policy({"require_attestation": True, "max_age": "5m"})
    fresh, stale = appraise(record, production, at=NOW + 10), appraise(record, production, at=NOW + 3600)
    assert isinstance(fresh, Appraisal) and fresh.evaluated_at == NOW + 10 and not fresh.failed
    assert stale.failed and stale.result is not None and stale.result.failures[0].rule == "max_age"
    bare = appraise(record)
    assert bare.result is None and bare.evaluated_at is None and bare.verdict.passed and not bare.failed
    assert bare.verdict.to_dict() == verify_record(record).to_dict()


def test_stored_records_judge_each_record_at_its_own_time(machine):
    response = response_from(machine, payload_id="stored")
    stored = {
        "seq": 7,
        "time": "2027-01-15T08:00:00.000Z",  # NOW is 2027-01-15T08:00:00Z
        "payload_id": "stored",
        "security_tier": "high",
        "metadata": {**response["_metadata"], "payload_id": "someone-else"},  # the router's word
        "verdict": {"content_digest": response_content_digest(response).hex()},
    }
    (record,) = stored_records([json.dumps(stored).encode()], "audit.db")
    assert record.source == "audit.db#7" and record.received_at == NOW
    assert record.metadata["payload_id"] == "stored" and record.digest_origin == "recorded"
    production = policy({"require_attestation": True, "max_age": "5m"})
    (own,) = appraise_all([record], production, now=NOW + 86400 * 365)
    assert own.evaluated_at == NOW and not own.failed  # a year later, judged as of then
    (fixed,) = appraise_all([record], production, at=NOW + 3600, now=NOW)
    assert fixed.evaluated_at == NOW + 3600 and fixed.failed
    (loose,) = appraise_all(parse_records(json.dumps(response).encode(), "r"), production, now=NOW + 1)
    assert loose.evaluated_at == NOW + 1  # a file carries no time: judged now


def test_junit_xml_has_a_suite_per_record_and_a_case_per_rule(machine):
    replies = [response_from(machine), response_from(machine, tier="x")]
    records = list(parse_records(json.dumps(replies).encode(), "r"))
    tiers = policy({"security_tiers": ["high"], "require_attestation": True}, name="tiers")
    suites = ET.fromstring(junit_xml(appraise_all(records, tiers, now=NOW))).findall("testsuite")
    assert [s.get("failures") for s in suites] == ["0", "1"]
    assert {c.get("classname") for s in suites for c in s} == {"tiers"}
    verifier = ET.fromstring(junit_xml(appraise_all(records, now=NOW))).findall("testsuite")
    assert {c.get("classname") for c in verifier[0]} == {"verifier"}
