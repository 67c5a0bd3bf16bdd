"""The progress line long CLI runs print: live on a terminal, a plain line about every 10 s in a log."""

from __future__ import annotations

import io

from nomyo_audit.cli._progress import Progress


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_one_whole_line_about_every_ten_seconds() -> None:
    clock, stream = FakeClock(), io.StringIO()
    with Progress("verifying", 1_000_000, stream=stream, clock=clock) as step:
        for done in range(0, 1_000_000, 10_000):
            clock.now += 1.0  # 100 steps over 100 s
            step(done)
    lines = stream.getvalue().splitlines()
    assert 9 <= len(lines) <= 10
    assert all(line.startswith("verifying ") and "records" in line and "%" in line for line in lines)
    assert "\r" not in stream.getvalue()


def test_a_short_run_prints_nothing() -> None:
    clock, stream = FakeClock(), io.StringIO()
    with Progress("reading", 10, stream=stream, clock=clock) as step:
        for done in range(10):
            clock.now += 0.5
            step(done)
    assert stream.getvalue() == ""


def test_a_terminal_line_is_redrawn_in_place_and_ended() -> None:
    clock, stream = FakeClock(), Terminal()
    with Progress("reading", None, stream=stream, clock=clock) as step:
        for done in range(20):
            clock.now += 0.5
            step(done * 100)
    text = stream.getvalue()
    assert text.count("\r") >= 10
    assert text.endswith("\n") and text.count("\n") == 1
    assert "reading 1,900 records" in text

