"""Retry decisions follow the OpenAI SDK conventions."""

from __future__ import annotations

import random

import pytest

from nomyo_audit.client._retry import MAX_DELAY, backoff_delay, is_retryable_status, retry_after_seconds


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504])
def test_retryable(status):
    assert is_retryable_status(status)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422, 501])
def test_not_retryable(status):
    assert not is_retryable_status(status)


def test_exponential_with_jitter_and_cap():
    rng = random.Random(1)
    for attempt, base in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (10, MAX_DELAY)]:
        delay = backoff_delay(attempt, rng=rng)
        assert 0.75 * base <= delay <= base


def test_retry_after_seconds_and_ms():
    assert retry_after_seconds({"Retry-After": "3"}) == 3
    assert retry_after_seconds({"retry-after-ms": "250"}) == 0.25
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert backoff_delay(0, {"Retry-After": "2"}) == 2


def test_retry_after_http_date():
    assert retry_after_seconds(
        {"Retry-After": "Wed, 21 Oct 2015 07:28:30 GMT"}, now=1445412500.0
    ) == pytest.approx(10.0)


@pytest.mark.parametrize("value", ["0", "-1", "61", "3600", "soon"])
def test_unusable_retry_after_ignored(value):
    assert retry_after_seconds({"Retry-After": value}) is None
