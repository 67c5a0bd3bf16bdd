"""Bad input and scale: every malformed log is an EventLogError with a stable code, fast; the CLI
streams big files and exits 2 with error[<code>] on bad ones. A seeded fuzz loop over the real logs."""

import io
import random
import struct
import time
from pathlib import Path

import pytest

from nomyo_audit.cli._main import main
from nomyo_audit.errors import EventLogError
from nomyo_audit.eventlog import (
    EV_EVENT_TAG,
    MAX_EVENT_DATA,
    MAX_EVENT_LOG_BYTES,
    EventLogWriter,
    decode_event,
    iter_event_log,
    match_event_log,
    parse_event_log,
    replay_event_log,
    summarize_boot,
)

FIXTURES = Path(__file__).parent / "fixtures" / "eventlogs"
LOGS = sorted(path.name for path in FIXTURES.glob("*eventlog"))


def code_of(data):
    with pytest.raises(EventLogError) as caught:
        parse_event_log(data)
    return caught.value.code


def spec_id(algorithms, vendor=b""):
    body = b"Spec ID Event03\x00" + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, len(algorithms))
    body += (
        b"".join(struct.pack("<HH", alg, size) for alg, size in algorithms) + bytes([len(vendor)]) + vendor
    )
    return struct.pack("<II20sI", 0, 3, bytes(20), len(body)) + body


def test_empty_and_truncated_logs():
    assert code_of(b"") == "eventlog_truncated"
    data = (FIXTURES / "sb_cert_eventlog").read_bytes()
    for cut in (1, 31, 40, 100, len(data) - 1):
        assert code_of(data[:cut]) == "eventlog_truncated", cut


def test_impossible_sizes_and_counts():
    header = spec_id([(0x000B, 32)])
    huge = (
        header
        + struct.pack("<III", 0, EV_EVENT_TAG, 1)
        + b"\x0b\x00"
        + bytes(32)
        + struct.pack("<I", 0xFFFFFFFF)
    )
    assert code_of(huge) == "eventlog_too_large"
    many_digests = header + struct.pack("<III", 0, EV_EVENT_TAG, 0xFFFFFFFF)
    assert code_of(many_digests) == "eventlog_bad_digest"
    assert code_of(spec_id([(0x000B, 32)] * 0)) == "eventlog_bad_header"
    too_many_algs = spec_id([(0x000B, 32)] * 17)
    assert code_of(too_many_algs) == "eventlog_bad_header"
    sha1_huge = struct.pack("<II20sI", 0, 8, bytes(20), MAX_EVENT_DATA + 1)
    assert code_of(sha1_huge) == "eventlog_too_large"


def test_digests_of_the_wrong_length_and_unknown_algorithms():
    assert code_of(spec_id([(0x000B, 20)])) == "eventlog_bad_digest"
    assert code_of(spec_id([(0x0099, 32)])) == "eventlog_unknown_algorithm"
    undeclared = spec_id([(0x000B, 32)]) + struct.pack("<IIIH", 0, EV_EVENT_TAG, 1, 0x0004) + bytes(20)
    assert code_of(undeclared + struct.pack("<I", 0)) == "eventlog_unknown_algorithm"
    twice = spec_id([(0x000B, 32), (0x0004, 20)]) + struct.pack("<III", 0, EV_EVENT_TAG, 2)
    twice += (b"\x0b\x00" + bytes(32)) * 2 + struct.pack("<I", 0)
    assert code_of(twice) == "eventlog_bad_digest"
    body = b"Spec ID Event03\x00" + struct.pack("<IBBBBIHH", 0, 0, 2, 0, 2, 1, 0x000B, 32) + b"\x05x"
    wrong_vendor_size = struct.pack("<II20sI", 0, 3, bytes(20), len(body)) + body
    assert code_of(wrong_vendor_size) == "eventlog_bad_header"


def test_a_log_over_the_cap_is_refused_before_parsing():
    assert code_of(bytes(MAX_EVENT_LOG_BYTES + 1)) == "eventlog_too_large"


def test_too_many_events():
    writer = EventLogWriter(("sha1",))
    for _ in range(5):
        writer.add(23, EV_EVENT_TAG, b"")
    with pytest.raises(EventLogError) as caught:
        list(iter_event_log(io.BytesIO(writer.to_bytes()), max_events=3))
    assert caught.value.code == "eventlog_too_many_events"


@pytest.mark.parametrize("name", LOGS)
def test_fuzz_mutations_and_truncations(name):
    """Random byte flips, splices and cuts of each real log: only EventLogError or a log, fast;
    and whatever parses also decodes, replays, matches and summarizes without raising."""
    data = (FIXTURES / name).read_bytes()
    rng = random.Random(14)
    started = time.monotonic()
    for _ in range(150):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            at = rng.randrange(len(mutated))
            choice = rng.random()
            if choice < 0.6:
                mutated[at] = rng.randrange(256)
            elif choice < 0.8:
                mutated[at : at + 4] = struct.pack("<I", rng.choice([0, 1, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF]))
            else:
                del mutated[at:]
                break
        try:
            log = parse_event_log(bytes(mutated))
        except EventLogError as exc:
            assert exc.code.startswith("eventlog_")
            continue
        quoted = {bank: replay_event_log(log, bank) for bank in log.banks}
        match = match_event_log(log, quoted)
        for event in log.events:
            decode_event(event)
        summarize_boot(log, match)
    assert time.monotonic() - started < 30


def test_cli_streams_a_big_log_in_bounded_memory(tmp_path):
    """A log far larger than MAX_EVENT_LOG_BYTES: the CLI replays it event by event."""
    import tracemalloc

    writer = EventLogWriter(("sha256",))
    header = writer.to_bytes()
    event = EventLogWriter(("sha256",))
    event.add(23, EV_EVENT_TAG, bytes(60_000))
    body = event.to_bytes()[len(header) :]
    path = tmp_path / "big.bin"
    with path.open("wb") as file:
        file.write(header)
        for _ in range(60):  # 3.6 MB, over the 2 MiB verifier cap
            file.write(body)
    tracemalloc.start()
    assert main(["eventlog", "replay", str(path), "--format", "json"]) == 0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert path.stat().st_size > MAX_EVENT_LOG_BYTES and peak < 1_000_000


def test_cli_replay_json_matches_the_library(capsys):
    path = FIXTURES / "gce_cos_85_no_nonce_eventlog"
    assert main(["eventlog", "replay", str(path), "--format", "json"]) == 0
    import json

    shown = json.loads(capsys.readouterr().out)
    log = parse_event_log(path.read_bytes())
    assert shown == {b: {str(p): v.hex() for p, v in replay_event_log(log, b).items()} for b in log.banks}


def test_cli_show_json_and_text(capsys):
    import json

    path = FIXTURES / "ubuntu_2104_shielded_vm_no_secure_boot_eventlog"
    assert main(["eventlog", "show", str(path), "--format", "json"]) == 0
    events = json.loads(capsys.readouterr().out)["events"]
    assert len(events) == 106 and events[3]["summary"] == "variable SecureBoot = disabled"
    assert main(["eventlog", "show", str(path)]) == 0
    assert "kernel_cmdline: /boot/vmlinuz-5.11.0-1006-gcp" in capsys.readouterr().out


def test_cli_bad_log_is_exit_2_with_the_code(tmp_path, capsys):
    path = tmp_path / "cut.bin"
    path.write_bytes((FIXTURES / "sb_cert_eventlog").read_bytes()[:3000])
    for command in ("show", "replay"):
        assert main(["eventlog", command, str(path)]) == 2
        assert "error[eventlog_truncated]" in capsys.readouterr().err


def test_the_cli_example_of_docs_event_logs_md_is_true(capsys):
    """Every output line shown in docs/event-logs.md's CLI example is a line the command prints."""
    doc = (Path(__file__).parent.parent / "docs" / "event-logs.md").read_text()
    example = doc.split("## CLI", 1)[1].split("```", 2)[1]
    commands = [line[2:] for line in example.splitlines() if line.startswith("$ ")]
    lines = example.splitlines()[1:]
    shown = [line for line in lines if line and not line.startswith("$ ") and line != "..."]
    printed = []
    for command in commands:
        assert main(command.split()[1:]) == 0
        printed += capsys.readouterr().out.splitlines()
    assert len(commands) == 2 and shown and all(line in printed for line in shown), shown
