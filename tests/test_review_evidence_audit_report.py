"""Review R3: a report's measured section stays bounded however many distinct states a router shows."""

from __future__ import annotations

import tracemalloc

from nomyo_audit.audit._report_measured import MeasuredTally


def boot(n: int, width: int = 200) -> dict:
    """A proven boot summary as a router may make one: a new log and CRTM version per reply."""
    return {
        "log_sha256": f"{n:064x}",
        "bank": "sha256",
        "pcrs": [0, 7],
        "secure_boot": "enabled",
        "crtm_version": f"v{n}",
        "firmware": [{"type": "EV_POST_CODE", "digest": "ab" * 32, "description": f"{j}{n}" * width}
                     for j in range(8)],
    }


def when(n: int) -> str:
    return f"2026-11-01T{n // 3_600_000:02d}:{n // 60_000 % 60:02d}:{n // 1000 % 60:02d}.{n % 1000:03d}Z"


def test_many_distinct_states_keep_memory_bounded_and_count_what_is_omitted():
    tally = MeasuredTally()
    tracemalloc.start()
    try:
        for n in range(20_000):
            tally.add("https://r", when(n), {"measured_boot": boot(n)})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # before: every distinct state was kept whole until the report was built (~12 KB each here)
    assert peak < 40_000_000, peak
    (router,) = tally.section()
    assert router["records"] == 20_000 and router["states_omitted"] == 20_000 - 50
    assert [s["crtm_version"] for s in router["states"]] == [f"v{n}" for n in range(19_950, 20_000)]
    assert router["states"][0]["changed"] == ["crtm_version", "firmware"]  # against the one omitted before it


def test_a_state_seen_again_after_many_others_keeps_its_first_sighting():
    tally = MeasuredTally()
    for n in range(500):
        tally.add("https://r", when(n), {"measured_boot": boot(n % 400, width=1)})
    (router,) = tally.section()
    # v0..v99 came back after 300 others had pushed them out: they are the same (early) states,
    # not new ones first seen late, so the last 50 shown are still v350..v399
    assert [s["crtm_version"] for s in router["states"]] == [f"v{n}" for n in range(350, 400)]
    assert router["records"] == 500 and router["states_omitted"] == 400 - 50


def test_router_chosen_strings_cannot_forge_lines_or_markup_in_a_report():
    # a router chooses what its TPM measures: the version, upstream and model names are its word
    from test_report_measured import FIRMWARE_OLD, STATE, boot, doc, stack

    from nomyo_audit.audit import build_report, render_report

    evil = "0.4.0\n\n## Verdict: every reply verified\x1b[2J<script>alert(1)</script>"
    served = {**stack(evil, "01" * 32), "upstream": "http://x/<img src=x onerror=alert(1)>"}
    model = {"source": "local", "weights_sha256": "aa" * 32, "upstream_identity": None}
    served["models"] = {"m<b>\n# x": model}
    facts = {"measured_boot": {**boot(FIRMWARE_OLD, "01" * 32), "kernel_cmdlines": ["ro `x` \x1b]0;t\x07"]},
             "serving_stack": served}
    report = build_report([doc(0, "2026-11-01T10:00:00.000Z", "https://a", facts)], **STATE)
    files = {name: data.decode() for name, data in render_report(report, ["html", "md", "csv"]).items()}
    for name, text in files.items():
        assert "\x1b" not in text and "\x07" not in text, name
        assert not any(line.startswith(("## Verdict", "# x")) for line in text.splitlines()), name
    assert "<script>" not in files["report.md"] and "<img" not in files["report.md"]
    assert "<b>" not in files["report.md"] and "<script>" not in files["report.html"]
    assert "`x`" not in files["report.md"]  # a backtick cannot close the command line's code span
