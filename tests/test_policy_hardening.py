"""Policies under attack: hostile policy files, hostile ``extends``, hostile metadata.

A policy file is input: it may come from a pull request. Reading one is bounded in size, nesting
and YAML alias expansion, opens only regular files, and ``extends`` stays inside the extending
policy's own directory (or names a shipped policy). Every refusal is a ``PolicyError`` with a
stable code and exit status 2. ``evaluate()`` turns any metadata into rule outcomes, never an
exception, and never judges freshness by a clock it was not given.
"""

from __future__ import annotations

import json
import math
import os
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nomyo_audit.attest._attester import TPMAttester
from nomyo_audit.attest._software import SoftwareTPM
from nomyo_audit.cli import main
from nomyo_audit.errors import ExitCode
from nomyo_audit.policy import Policy, PolicyError, evaluate, load_policy
from nomyo_audit.policy._loader import MAX_ALIASES, MAX_DEPTH, MAX_EXTENDS, MAX_NODES, MAX_POLICY_BYTES
from nomyo_audit.tpm._binding import response_binding, response_content_digest
from nomyo_audit.tpm._measurements import measure_demo_boot

HEADER = "apiVersion: nomyo-audit/v1\nkind: AttestationPolicy\nmetadata:\n  name: hostile\n"
VALID = HEADER + "spec:\n  on_failure: deny\n"
NOW = 1_800_000_000


def write(directory: Path, text: str | bytes, name: str = "p.yaml") -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def refusal(path: Path | str) -> PolicyError:
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    return err.value


def lint_exit(path: Path | str) -> int:
    """The CLI's exit status for ``policy lint PATH`` (main() is the CLI's single exit path)."""
    return main(["policy", "lint", str(path)])


# -- YAML alias bombs, size, nesting, bytes -------------------------------------------------------

BILLION_LAUGHS = HEADER + textwrap.dedent(
    """\
    spec:
      on_failure: deny
    lol: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
    l1: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
    l2: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
    l3: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
    l4: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
    l5: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
    l6: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
    l7: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
    l8: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
    """
)


def test_billion_laughs_is_refused_before_it_is_expanded(tmp_path):
    path = write(tmp_path, BILLION_LAUGHS)
    assert len(BILLION_LAUGHS) < 800  # the 600-byte file that ran past 20 s
    error = refusal(path)
    assert error.code == "policy_yaml_aliases"
    assert "alias" in str(error) and str(path) in str(error)
    assert lint_exit(path) == ExitCode.USAGE


def test_few_aliases_that_expand_past_the_node_bound_are_refused(tmp_path):
    # 40 aliases, 4**20 nodes once expanded: the count of aliases alone cannot bound the work
    levels = ["x0: &x0 [a, b, c, d]"]
    levels += [f"x{i}: &x{i} [*x{i - 1}, *x{i - 1}]" for i in range(1, 21)]
    text = HEADER + "spec: {on_failure: deny}\n" + "\n".join(levels) + "\n"
    assert text.count("*") <= MAX_ALIASES
    assert refusal(write(tmp_path, text)).code == "policy_yaml_aliases"
    assert MAX_NODES < 4**20


def test_too_many_aliases_are_refused(tmp_path):
    aliases = ", ".join(["*v"] * (MAX_ALIASES + 1))
    text = HEADER + f"spec: {{on_failure: deny}}\nv: &v x\nmany: [{aliases}]\n"
    assert refusal(write(tmp_path, text)).code == "policy_yaml_aliases"


def test_a_recursive_alias_is_refused(tmp_path):
    text = HEADER + "spec: {on_failure: deny}\nloop: &loop [*loop]\n"
    assert refusal(write(tmp_path, text)).code == "policy_yaml_aliases"


def test_ordinary_anchors_still_work(tmp_path):
    digest = "ab" * 32
    path = write(
        tmp_path,
        HEADER + f"spec:\n  pcrs:\n    sha256:\n      0: &golden [{digest}]\n      7: *golden\n",
    )
    assert load_policy(path).spec["pcrs"]["sha256"]["7"] == [digest]


def test_a_file_over_the_size_cap_is_refused(tmp_path):
    padding = "# " + "x" * 100 + "\n"
    text = VALID + padding * (MAX_POLICY_BYTES // len(padding) + 1)
    path = write(tmp_path, text)
    error = refusal(path)
    assert error.code == "policy_too_large" and f"{MAX_POLICY_BYTES}" in str(error)
    assert lint_exit(path) == ExitCode.USAGE


@pytest.mark.parametrize(
    "nested",
    [
        "[" * 5000 + "]" * 5000,
        "{a: " * 5000 + "1" + "}" * 5000,
        "\n" + "\n".join("  " * (i + 1) + "-" for i in range(MAX_DEPTH + 5)) + " x",
    ],
    ids=["flow-sequences", "flow-mappings", "block"],
)
def test_deep_nesting_is_exit_2_not_4(tmp_path, nested):
    path = write(tmp_path, VALID + "deep: " + nested + "\n")
    error = refusal(path)
    assert error.code == "policy_too_deep" and f"{MAX_DEPTH}" in str(error)
    assert lint_exit(path) == ExitCode.USAGE


@pytest.mark.parametrize(
    "content",
    [
        VALID.encode().replace(b"deny", b"de\x00ny"),
        b"\x00" * 64,
        b"apiVersion: \xff\xfe nomyo\n",
    ],
    ids=["nul-in-a-value", "nul-bytes", "not-utf8"],
)
def test_binary_files_are_exit_2_not_4(tmp_path, content):
    path = write(tmp_path, content)
    error = refusal(path)
    assert error.code == "policy_not_text"
    assert lint_exit(path) == ExitCode.USAGE


@pytest.mark.parametrize(
    "text",
    [
        HEADER + "spec: {on_failure: deny}\n? [a, b]\n: complex key\n",  # a key that is a list
        HEADER.replace("hostile", "x\n  description: 2001-02-30") + "spec: {}\n",  # no such day
        HEADER + "spec:\n  max_age: " + "1" * 5000 + "\n",  # more digits than int() converts
        HEADER + "spec: {on_failure: deny}\nbin: !!binary '@@@'\n",
        HEADER + "spec: !!python/object:os.system {}\n",
        VALID + "control: \x07\n",
    ],
    ids=["complex-key", "bad-date", "huge-int", "bad-binary", "python-tag", "control-char"],
)
def test_yaml_that_cannot_be_read_as_data_is_exit_2(tmp_path, text):
    path = write(tmp_path, text)
    assert refusal(path).code in ("policy_invalid", "policy_not_text")
    assert lint_exit(path) == ExitCode.USAGE


def test_special_files_are_not_read_as_policies(tmp_path):
    assert refusal("/dev/zero").code == "policy_not_a_file"
    assert refusal(tmp_path).code == "policy_not_a_file"
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    assert refusal(fifo).code == "policy_not_a_file"  # refused without waiting for a writer
    assert lint_exit("/dev/zero") == ExitCode.USAGE


def test_a_missing_file_has_its_own_code():
    assert refusal("/nonexistent/policy.yaml").code == "policy_not_found"


# -- extends: a shipped policy or a file inside the extending policy's own directory ------------------


def extending(directory: Path, reference: str, name: str = "child.yaml") -> Path:
    text = HEADER.replace("metadata:", f"extends: {json.dumps(reference)}\nmetadata:") + "spec: {}\n"
    return write(directory, text, name)


@pytest.mark.parametrize("reference", ["/etc/shadow", "/etc/passwd", "/dev/zero", "/dev/stdin"])
def test_extends_refuses_absolute_paths(tmp_path, reference):
    error = refusal(extending(tmp_path, reference))
    assert error.code == "policy_extends_refused"
    assert "absolute" in str(error) and "root:" not in str(error)  # nothing of the file is read
    assert lint_exit(tmp_path / "child.yaml") == ExitCode.USAGE


def test_extends_refuses_parent_directories(tmp_path):
    write(tmp_path, VALID, "parent.yaml")
    for reference in ("../parent.yaml", "sub/../../parent.yaml", "./../parent.yaml"):
        error = refusal(extending(tmp_path / "team", reference))
        assert error.code == "policy_extends_refused" and ".." in str(error)


def test_extends_refuses_a_symlink_that_leads_out(tmp_path):
    outside = write(tmp_path, VALID, "outside.yaml")
    team = tmp_path / "team"
    team.mkdir()
    (team / "base.yaml").symlink_to(outside)
    (team / "etc").symlink_to("/etc")
    assert refusal(extending(team, "base.yaml")).code == "policy_extends_refused"
    assert refusal(extending(team, "etc/passwd")).code == "policy_extends_refused"


def test_extends_refuses_special_files_inside_the_directory(tmp_path):
    os.mkfifo(tmp_path / "fifo.yaml")
    (tmp_path / "dir.yaml").mkdir()
    assert refusal(extending(tmp_path, "fifo.yaml")).code == "policy_not_a_file"
    assert refusal(extending(tmp_path, "dir.yaml")).code == "policy_not_a_file"


@pytest.mark.parametrize("reference", ["bad\x00name.yaml", "x" * 5000 + ".yaml"])
def test_extends_references_no_path_can_hold_are_refused(tmp_path, reference):
    assert refusal(extending(tmp_path, reference)).code in ("policy_extends_refused", "policy_not_found")


def test_extends_inside_the_directory_and_shipped_names_still_work(tmp_path):
    write(tmp_path / "layers", HEADER + "spec: {max_age: 7m}\n", "base.yaml")
    assert load_policy(extending(tmp_path, "layers/base.yaml")).spec["max_age"] == "7m"
    (tmp_path / "alias.yaml").symlink_to("layers/base.yaml")  # a symlink that stays inside
    assert load_policy(extending(tmp_path, "alias.yaml", "second.yaml")).spec["max_age"] == "7m"
    assert load_policy(extending(tmp_path, "production", "third.yaml")).spec["require_attestation"] is True


def test_extends_fan_out_is_bounded(tmp_path):
    # each layer names the next one twice: 2**n parents to read without a bound
    for i in range(30):
        text = HEADER.replace("metadata:", f"extends: [l{i + 1}.yaml, l{i + 1}.yaml]\nmetadata:")
        write(tmp_path, text + "spec: {}\n", f"l{i}.yaml")
    write(tmp_path, VALID, "l30.yaml")
    error = refusal(tmp_path / "l0.yaml")
    assert error.code == "policy_extends_refused" and f"{MAX_EXTENDS}" in str(error)


# -- policy lint and show ------------------------------------------------------------------------------


def test_lint_exits_2_for_an_invalid_policy_and_0_for_valid_ones(tmp_path, capsys):
    bad = write(tmp_path, HEADER + "spec: {colour: blue}\n", "bad.yaml")
    good = write(tmp_path, VALID, "good.yaml")
    assert main(["policy", "lint", str(good), str(bad)]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert f"{bad}:5 spec: unknown key(s) 'colour'" in err
    assert main(["policy", "lint", str(good), "production"]) == ExitCode.OK
    assert main(["policy", "show", str(bad)]) == ExitCode.USAGE


# -- from-evidence: no golden values from software attesters or unmeasured PCRs ------------------


def reply_from(tpm: SoftwareTPM, attester: str | None) -> dict:
    response = {"id": "c1", "object": "chat.completion", "model": "echo", "choices": [{"message": {}}]}
    block = TPMAttester(tpm).evidence(response_binding("pid-1", response_content_digest(response)))
    if attester is None:
        block.pop("attester")
        block.pop("hardware_rooted")
    else:
        block["attester"] = attester  # the router's own label: not covered by the quote
    response["_metadata"] = {"payload_id": "pid-1", "processed_at": NOW, "tpm_attestation": block}
    return response


def from_evidence(tmp_path: Path, reply: dict, *flags: str) -> tuple[int, Path]:
    source = write(tmp_path, json.dumps(reply), "reply.json")
    output = tmp_path / "golden.yaml"
    return main(["policy", "from-evidence", str(source), "-o", str(output), *flags]), output


def measured() -> SoftwareTPM:
    tpm = SoftwareTPM()
    measure_demo_boot(tpm)
    return tpm


def test_from_evidence_refuses_software_attester_evidence(tmp_path, capsys):
    status, output = from_evidence(tmp_path, reply_from(measured(), "software"))
    err = capsys.readouterr().err
    assert status == ExitCode.USAGE and not output.exists()
    assert "error[software_attester]" in err and "--allow-software-attester" in err
    assert "no hardware" in err


def test_from_evidence_allows_software_evidence_when_told(tmp_path):
    status, output = from_evidence(tmp_path, reply_from(measured(), "software"), "--allow-software-attester")
    assert status == ExitCode.OK and load_policy(output).spec["pcrs"]["sha256"]["7"]


def test_from_evidence_refuses_all_zero_pcrs(tmp_path, capsys):
    unmeasured = SoftwareTPM()  # nothing extended: every PCR is zero
    status, output = from_evidence(tmp_path, reply_from(unmeasured, "tpm-device"))
    err = capsys.readouterr().err
    assert status == ExitCode.USAGE and not output.exists()
    assert "error[unmeasured_pcrs]" in err and "sha256 PCR 0" in err and "--allow-zero-pcrs" in err
    status, output = from_evidence(tmp_path, reply_from(unmeasured, "tpm-device"), "--allow-zero-pcrs")
    assert status == ExitCode.OK and load_policy(output).spec["pcrs"]["sha256"]["0"] == ["00" * 32]


def test_from_evidence_accepts_measured_hardware_labelled_evidence(tmp_path):
    status, output = from_evidence(tmp_path, reply_from(measured(), "swtpm"))
    assert status == ExitCode.OK and load_policy(output).spec["aik_trust"]["mode"] == "pinned"


# -- max_age and the evaluation time ----------------------------------------------------------------


def policy(spec: dict) -> Policy:
    return Policy.from_document(
        {"apiVersion": "nomyo-audit/v1", "kind": "AttestationPolicy", "metadata": {"name": "t"}, "spec": spec}
    )


MAX_AGE = policy({"max_age": "5m", "clock_skew": "60s"})


def max_age(processed_at: object, now: float | None = NOW + 10) -> tuple[str, str]:
    result = evaluate(MAX_AGE, {"processed_at": processed_at}, now=now)
    (rule,) = result.rules
    return rule.status, rule.detail


@pytest.mark.parametrize(
    ("processed_at", "words"),
    [
        (math.nan, "not a finite number"),
        (math.inf, "not a finite number"),
        (-math.inf, "not a finite number"),
        (True, "not a number"),
        (False, "not a number"),
        ("1800000000", "not a number"),
        ([NOW], "not a number"),
        ({"t": NOW}, "not a number"),
        (10**400, "not a finite number"),
        (None, "missing"),
    ],
)
def test_max_age_fails_on_a_processed_at_that_is_not_a_finite_number(processed_at, words):
    status, detail = max_age(processed_at)
    assert status == "fail" and words in detail and "processed_at" in detail


def test_max_age_judges_at_the_time_it_is_given():
    assert max_age(NOW)[0] == "pass"
    assert max_age(NOW, now=NOW + 365 * 86400)[0] == "fail"  # a year later, judged then
    assert max_age(NOW - 365 * 86400, now=NOW - 365 * 86400 + 5)[0] == "pass"  # at the record's time


@pytest.mark.parametrize("now", [None, math.nan, math.inf, True, "now"])
def test_max_age_never_falls_back_to_the_wall_clock(now):
    status, detail = max_age(NOW, now=now)  # type: ignore[arg-type]
    assert status == "fail" and "evaluation time" in detail


# -- evaluate() never raises on malformed metadata ---------------------------------------------------

EVERY_RULE = policy(
    {
        "require_attestation": True,
        "security_tiers": ["high"],
        "models": ["echo*"],
        "pcrs": {"sha256": {"0": "any", "7": ["ab" * 32]}},
        "pcr_selection": {"sha256": [0, 7]},
        "nonce_binding": ["nomyo-audit-v1"],
        "aik_trust": {"mode": "pinned", "pinned": ["ab" * 32]},
        "memory_protection": ["memory_locking"],
        "cuda_device": {"available": False, "device_hashes": ["ab" * 32]},
        "max_age": "5m",
    }
)
RULES = ("require_attestation", "security_tiers", "models", "pcrs", "pcr_selection", "nonce_binding")

anything = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.integers(min_value=10**300, max_value=10**400)
    | st.text(max_size=20)
    | st.binary(max_size=8),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8) | st.integers(), children, max_size=4),
    max_leaves=12,
)
METADATA_KEYS = [
    "payload_id",
    "processed_at",
    "security_tier",
    "memory_protection",
    "cuda_device",
    "tpm_attestation",
    "verification",
    "policy",
]


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(METADATA_KEYS) | st.text(max_size=8), anything, max_size=8))
def test_fuzz_malformed_metadata_never_raises(metadata):
    result = evaluate(EVERY_RULE, metadata, now=NOW)
    assert {r.rule for r in result.rules} >= set(RULES)
    assert result.outcome == "deny"  # nothing here is verified evidence
    assert all(r.status in ("pass", "fail", "skip") for r in result.rules)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["model", "choices", "id", 1, "_metadata"]), anything, max_size=5),
    st.dictionaries(st.sampled_from(METADATA_KEYS), anything, max_size=6),
)
def test_fuzz_malformed_responses_never_raise(response, metadata):
    response["_metadata"] = metadata
    assert evaluate(EVERY_RULE, response, now=NOW).outcome == "deny"


@pytest.mark.parametrize(
    "target",
    [
        [],
        "metadata",
        None,
        {"_metadata": "not a mapping"},
        {"_metadata": {"processed_at": NOW}, "choices": [{"content": "\ud800"}]},  # a lone surrogate
        {"_metadata": {}, "model": ["echo"], 3: {"b": b"x"}},
        {"cuda_device": {"available": False, "device_hash": ["unhashable"]}},
        {"security_tier": ["high"], "memory_protection": ["memory_locking"]},
        {"payload_id": "\udc80", "tpm_attestation": {"is_available": True}},  # text no encoding holds
    ],
)
def test_malformed_targets_are_findings(target):
    result = evaluate(EVERY_RULE, target, now=NOW)  # type: ignore[arg-type]
    assert result.outcome == "deny" and result.failures


def test_a_payload_id_no_encoding_holds_is_a_finding():
    reply = reply_from(measured(), "swtpm")
    reply["_metadata"]["payload_id"] = "\udc80"  # JSON may carry a lone surrogate; UTF-8 cannot
    result = evaluate(EVERY_RULE, reply, now=NOW)
    assert {r.rule: r.status for r in result.rules}["nonce_binding"] == "fail"


def test_times_no_float_holds_never_pass_even_when_they_are_close():
    assert max_age(10**400, now=10**400 + 5)[0] == "fail"
    assert max_age(NOW, now=10**400)[0] == "fail"
