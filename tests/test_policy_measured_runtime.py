"""``ima.runtime_policy``: a Keylime runtime policy beside the policy file, read bounded at load time,
and part of the policy's digest (its SHA-256 is resolved into the document)."""

from __future__ import annotations

import json
import os

import pytest

from nomyo_audit.policy import PolicyError, load_policy
from nomyo_audit.policy import _runtime_policy as runtime_module

HEADER = "apiVersion: nomyo-audit/v1\nkind: AttestationPolicy\nmetadata:\n  name: ima\n"
PYTHON = "ab" * 32


def keylime(digests: dict[str, list[str]], excludes: list[str] = ()) -> bytes:
    """A Keylime runtime policy (keylime/ima/ima.py EMPTY_RUNTIME_POLICY, meta version 1)."""
    document = {
        "meta": {"version": 1, "generator": 0},
        "release": 0,
        "digests": digests,
        "excludes": list(excludes),
        "keyrings": {},
        "ima": {"ignored_keyrings": [], "log_hash_alg": "sha1", "dm_policy": None},
        "ima-buf": {},
        "verification-keys": "",
    }
    return json.dumps(document).encode()


def policy_file(tmp_path, ima: str, name: str = "p.yaml"):
    path = tmp_path / name
    path.write_text(HEADER + f"spec:\n  ima: {ima}\n")
    return path


def test_the_runtime_policy_is_merged_into_the_spec_and_pinned_in_the_document(tmp_path):
    (tmp_path / "runtime.json").write_bytes(keylime({"/usr/bin/python3": [PYTHON]}, ["^/tmp/"]))
    inline = "cd" * 32
    path = policy_file(
        tmp_path, f"{{runtime_policy: runtime.json, digests: {{/usr/bin/python3: [{inline}]}}}}"
    )
    policy = load_policy(path)
    assert policy.spec["ima"]["digests"] == {"/usr/bin/python3": sorted([PYTHON, inline])}
    assert policy.spec["ima"]["excludes"] == ["^/tmp/"]
    assert "runtime_policy" not in policy.spec["ima"]
    stated = policy.document["spec"]["ima"]
    assert stated["runtime_policy"] == "runtime.json"
    assert len(stated["runtime_policy_sha256"]) == 64


def test_the_policy_digest_changes_with_the_runtime_policy_content(tmp_path):
    runtime = tmp_path / "runtime.json"
    path = policy_file(tmp_path, "{runtime_policy: runtime.json}")
    runtime.write_bytes(keylime({"/usr/bin/python3": [PYTHON]}))
    before = load_policy(path).digest
    runtime.write_bytes(keylime({"/usr/bin/python3": [PYTHON, "ef" * 32]}))
    assert load_policy(path).digest != before


def test_a_stated_sha256_pins_the_content(tmp_path):
    data = keylime({"/usr/bin/python3": [PYTHON]})
    (tmp_path / "runtime.json").write_bytes(data)
    import hashlib

    good = hashlib.sha256(data).hexdigest()
    assert load_policy(
        policy_file(tmp_path, f"{{runtime_policy: runtime.json, runtime_policy_sha256: {good}}}")
    )
    with pytest.raises(PolicyError) as raised:
        load_policy(
            policy_file(tmp_path, f"{{runtime_policy: runtime.json, runtime_policy_sha256: '{'00' * 32}'}}")
        )
    assert raised.value.code == "runtime_policy_mismatch"
    assert "spec.ima.runtime_policy 'runtime.json'" in str(raised.value)


def test_a_parent_layers_runtime_policy_is_relative_to_the_parent(tmp_path):
    (tmp_path / "layers").mkdir()
    (tmp_path / "layers" / "runtime.json").write_bytes(keylime({"/usr/bin/python3": [PYTHON]}))
    policy_file(tmp_path / "layers", "{runtime_policy: runtime.json}", "base.yaml")
    child = tmp_path / "child.yaml"
    child.write_text(HEADER + "extends: layers/base.yaml\nspec:\n  ima: {excludes: ['^/tmp/']}\n")
    policy = load_policy(child)
    assert policy.spec["ima"]["digests"] == {"/usr/bin/python3": [PYTHON]}
    assert policy.spec["ima"]["excludes"] == ["^/tmp/"]


@pytest.mark.parametrize(
    ("reference", "prepare", "code", "message"),
    [
        ("missing.json", None, "policy_not_found", "no such file"),
        ("/etc/passwd", None, "runtime_policy_refused", "an absolute path"),
        ("../runtime.json", None, "runtime_policy_refused", "'..' leaves"),
        (
            "link.json",
            lambda d: os.symlink("/etc/hostname", d / "link.json"),
            "runtime_policy_refused",
            "outside",
        ),
        ("fifo.json", lambda d: os.mkfifo(d / "fifo.json"), "policy_not_a_file", "not a regular file"),
        (
            "bad.json",
            lambda d: (d / "bad.json").write_text("{not json"),
            "runtime_policy_invalid",
            "not a Keylime",
        ),
        (
            "big.json",
            lambda d: (d / "big.json").write_bytes(b" " * 2048),
            "policy_too_large",
            "larger than 1024",
        ),
    ],
)
def test_a_bad_runtime_policy_is_a_clear_error_with_file_and_field(
    tmp_path, monkeypatch, reference, prepare, code, message
):
    monkeypatch.setattr(runtime_module, "MAX_RUNTIME_POLICY_BYTES", 1024)
    if prepare is not None:
        prepare(tmp_path)
    path = policy_file(tmp_path, f"{{runtime_policy: '{reference}'}}")
    with pytest.raises(PolicyError) as raised:
        load_policy(path)
    assert raised.value.code == code, raised.value
    assert str(raised.value).startswith(f"{path}: spec.ima.runtime_policy {reference!r}: ")
    assert message in str(raised.value)
