"""The report's pass keeps bounded memory for any number of distinct service and tenant labels
(reviewer of issue 16: 200,000 distinct pairs cost 111 MB), and its figures stay exact."""

from __future__ import annotations

import json
import tracemalloc

import pytest
from test_fleet_report_labels import COMMON

from nomyo_audit.audit import _report_groups, build_report
from nomyo_audit.audit._records import build_record

STATE = {"size": 0, "root": "00" * 32, "checkpoint": None}
BASE = json.loads(build_record(**{**COMMON, "seq": 0, "payload_id": "p"}))


def _docs(n, labels):
    for seq in range(n):
        service, tenant = labels(seq)
        yield {**BASE, "seq": seq, "service": service, "tenant": tenant}


def _peak(n, labels):
    tracemalloc.start()
    try:
        document = build_report(_docs(n, labels), generated_at="2026-11-26T00:00:00Z", log_state=STATE)
        return tracemalloc.get_traced_memory()[1], document
    finally:
        tracemalloc.stop()


def test_many_distinct_labels_cost_bounded_memory_and_exact_totals(monkeypatch):
    monkeypatch.setattr(_report_groups, "MAX_TRACKED", 200)
    n = 20_000
    peak, document = _peak(n, lambda seq: (f"service-{seq}", f"tenant-{seq}"))
    # every pair distinct: a counter per pair held ~0.55 KB each (11 MB here) until the pass ended
    assert peak < 3_000_000, peak
    assert document["summary"]["requests"] == n
    for name in ("service", "tenant"):
        listed = sum(group["records"] for group in document["groups"][name])
        omitted = document["groups_omitted"][name]
        assert listed + omitted["records"] == n
        assert omitted["records_of_untracked_values"] > 0
    assert document["groups"]["router"][0]["records"] == n


def test_a_small_fleet_counts_every_group_apart():
    labels = [("billing", "acme"), ("billing", "globex"), ("search", "acme"), (None, None)]
    _, document = _peak(400, lambda seq: labels[seq % 4])
    services = {group["value"]: group["records"] for group in document["groups"]["service"]}
    tenants = {group["value"]: group["records"] for group in document["groups"]["tenant"]}
    assert services == {"billing": 200, "search": 100, None: 100}
    assert tenants == {"acme": 200, "globex": 100, None: 100}
    assert document["groups_omitted"]["service"] == {
        "groups": 0,
        "records": 0,
        "records_of_untracked_values": 0,
    }
    assert [group["value"] for group in document["groups"]["service"]] == ["billing", "search", None]


@pytest.mark.parametrize("limit", [1, 3])
def test_past_the_tracked_limit_the_totals_stay_exact(monkeypatch, limit):
    monkeypatch.setattr(_report_groups, "MAX_TRACKED", limit)
    labels = [("a", "x"), ("b", "y"), ("c", "z"), ("a", "y")]
    _, document = _peak(40, lambda seq: labels[seq % 4])
    assert document["summary"]["requests"] == 40
    for name in ("service", "tenant"):
        listed = sum(group["records"] for group in document["groups"][name])
        assert listed + document["groups_omitted"][name]["records"] == 40
        for group in document["groups"][name]:
            assert sum(group["outcomes"].values()) == group["records"]
    # the values counted apart are the first seen, in record order
    first = {1: {"a": 20}, 3: {"a": 20, "b": 10, "c": 10}}[limit]
    assert {group["value"]: group["records"] for group in document["groups"]["service"]} == first
