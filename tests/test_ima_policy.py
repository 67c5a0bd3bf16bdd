"""Keylime runtime policies give Keylime's verdicts (keylime test/test_ima_verification.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nomyo_audit.errors import EventLogError
from nomyo_audit.eventlog import ImaPolicy, ImaViolation, check_ima, parse_ima_log

FIXTURES = Path(__file__).parent / "fixtures" / "ima"


def policy(name: str) -> ImaPolicy:
    return ImaPolicy.from_keylime((FIXTURES / f"keylime_{name}.json").read_bytes())


def entries(name: str):
    return parse_ima_log((FIXTURES / name).read_bytes()).entries


MEASUREMENTS, SIGNATURES = "keylime_measurements.txt", "keylime_signatures.txt"


def test_keylime_policy_allows_its_measurements_and_signatures() -> None:
    # keylime: process_measurement_list(measurements / combined, RUNTIME_POLICY_TEST) -> no failure
    assert check_ima(entries(MEASUREMENTS), policy("runtime_policy_test")) == ()
    assert check_ima(entries(SIGNATURES), policy("runtime_policy_test")) == ()
    # keylime test_ima_buf_verification: the .ima keyring entry against the policy's "keyrings"
    assert check_ima(entries("keylime_keyrings.txt"), policy("runtime_policy_test")) == ()


def test_empty_policy_fails_every_file() -> None:
    # keylime: EMPTY_RUNTIME_POLICY -> failure ("not_in_allowlist")
    found = check_ima(entries(MEASUREMENTS), ImaPolicy.from_mapping({}))
    assert [v.reason for v in found] == ["not_allowed"] * 3
    assert found[0] == ImaViolation(
        0, "boot_aggregate", "e4cb9f5709c88376b5fc3743cd88e76b9aae8f3d992d845678de5215edb31216", "not_allowed"
    )


def test_wrong_digests_fail_unless_excluded() -> None:
    # keylime: signatures + RUNTIME_POLICY_WRONG without keys -> failure ("runtime_policy_hash")
    found = check_ima(entries(SIGNATURES), policy("runtime_policy_wrong"))
    assert [(v.path, v.reason) for v in found] == [
        ("/usr/bin/dd", "digest_mismatch"),
        ("/usr/bin/zmore", "digest_mismatch"),
    ]
    # keylime: "All files are in the exclude list but hashes are invalid -> this should pass"
    assert check_ima(entries(MEASUREMENTS), policy("runtime_policy_wrong_with_excludes")) == ()
    assert check_ima(entries(SIGNATURES), policy("runtime_policy_with_excludes")) == ()


def test_keylime_test_data_policy_and_allowlist_load() -> None:
    loaded = ImaPolicy.from_keylime((FIXTURES / "keylime_runtime_policy_data.json").read_bytes())
    # keylime test_read_allowlist: 21 digests and 1 keyring (merged here by name)
    assert len(loaded.digests) == 22 and ".ima" in loaded.digests
    assert loaded.digests["boot_aggregate"] == {
        "4309217e9709def327c3409407f4d52907aeba46ef1b4f46529fd095f2ef9fb2"
    }
    allowlist = ImaPolicy.from_keylime((FIXTURES / "keylime_allowlist_short.txt").read_bytes())
    assert allowlist.digests["boot_aggregate"] == loaded.digests["boot_aggregate"]
    assert allowlist.digests == loaded.digests


def test_violations_and_unknown_templates() -> None:
    line = b"10 " + b"0" * 40 + b" ima-ng sha256:" + b"0" * 64 + b" /var/log/messages\n"
    unknown = b"10 " + b"1" * 40 + b" evm-sig whatever\n"
    log = parse_ima_log(line + unknown).entries
    found = check_ima(log, ImaPolicy.from_mapping({"/var/log/messages": ["00" * 32]}))
    assert [(v.number, v.path, v.reason) for v in found] == [
        (0, "/var/log/messages", "violation"),
        (1, "<evm-sig>", "not_allowed"),
    ]
    assert check_ima(log[:1], ImaPolicy.from_mapping({}, [r"/var/log/"])) == ()


def test_limit() -> None:
    assert (
        len(check_ima(entries("rust_keylime_ascii_runtime_measurements"), ImaPolicy.from_mapping({}))) == 20
    )
    assert (
        len(
            check_ima(entries("rust_keylime_ascii_runtime_measurements"), ImaPolicy.from_mapping({}), limit=3)
        )
        == 3
    )


@pytest.mark.parametrize(
    "data",
    [
        b"{not json",
        b"[]",
        b'{"meta": {"version": 2}, "digests": {}}',
        b'{"payload": "x", "payloadType": "y", "signatures": []}',
        b'{"meta": {"version": 1}, "digests": {"/a": "abcd"}}',
        b'{"meta": {"version": 1}, "digests": {"/a": ["xyz"]}}',
        b'{"meta": {"version": 1}, "digests": {}, "excludes": ["(unclosed"]}',
        b'{"meta": {"version": 1}, "digests": {}, "excludes": "/tmp"}',
        b"deadbeef\n",
    ],
)
def test_invalid_policies_are_ima_policy_invalid(data: bytes) -> None:
    with pytest.raises(EventLogError) as caught:
        ImaPolicy.from_keylime(data)
    assert caught.value.code == "ima_policy_invalid"


@pytest.mark.parametrize(
    "data",
    [
        b'{"meta": {"version": 1}, "digests": {"/bin/a": ["' + b"aa" * 32 + b'"]}, "digests": {}}',
        b'{"meta": {"version": 1}, "excludes": [], "excludes": ["/.*"]}',
        b'{"meta": {"version": 1}, "digests": {"/bin/a": ["' + b"aa" * 32 + b'"], "/bin/a": []}}',
    ],
)
def test_duplicate_keys_are_refused_not_resolved_by_the_last(data: bytes) -> None:
    """A second "digests" or "excludes" would silently replace the first (json keeps the last): what a
    reviewer read in the file is not what is enforced. Another reader may keep the first."""
    with pytest.raises(EventLogError) as caught:
        ImaPolicy.from_keylime(data)
    assert caught.value.code == "ima_policy_invalid" and "duplicate" in caught.value.message
