"""--since and --until, shared by every command that reads a period of the log."""

from __future__ import annotations

import click
import pytest

from nomyo_audit.cli._log import parse_period


def test_a_period_that_ends_before_it_starts_is_a_usage_error() -> None:
    assert parse_period("2026-11-01", "2026-11-02") == (1793491200.0, 1793577600.0)
    assert parse_period(None, "2026-11-02") == (None, 1793577600.0)
    with pytest.raises(click.BadParameter, match="after --until"):
        parse_period("2026-11-02", "2026-11-01")
