"""The HTML and Markdown reports say what they cover (the period as selected, the records, the checkpoint)
and, when chained, the previous report they name (its report.json SHA-256 and checkpoint): what
verify-report checks is visible to a reader of the report too. Two real reports over one real log."""

from __future__ import annotations

import hashlib
import json

import pytest
from test_report_chain import Series

from nomyo_audit.errors import ExitCode

FORMATS = ("--format", "json,md,html")


@pytest.fixture
def two(tmp_path, router) -> Series:
    made = Series(tmp_path, router)
    made.batch(2)
    assert made.report("r1", *FORMATS) == ExitCode.OK
    made.batch(1)
    assert made.report("r2", *FORMATS, previous="r1") == ExitCode.OK
    return made


def texts(series: Series, name: str) -> tuple[str, str]:
    return tuple((series.dir / name / f"report.{ext}").read_text() for ext in ("md", "html"))  # type: ignore[return-value]


def test_a_report_shows_its_period_records_and_checkpoint(two):
    covers = json.loads((two.dir / "r1" / "report.json").read_text())["covers"]
    root = covers["checkpoint"]["root"]
    for text in texts(two, "r1"):
        assert f"{two.bounds[0]} up to (not including) {two.bounds[1]}" in text
        assert "records 0 to 1 (2 records)" in text
        assert f"size 2, root {root[:16]}..." in text.replace("`", "").replace(
            '<span class="mono">', ""
        ).replace("</span>", "")
        assert "not chained" in text


def test_a_chained_report_shows_the_previous_reports_digest_and_checkpoint(two):
    previous = hashlib.sha256((two.dir / "r1" / "report.json").read_bytes()).hexdigest()
    r2 = json.loads((two.dir / "r2" / "report.json").read_text())
    cited = r2["chain"]["previous"]["checkpoint"]
    proof = len(r2["chain"]["consistency_proof"])
    for text in texts(two, "r2"):
        flat = text.replace("`", "").replace('<span class="mono">', "").replace("</span>", "")
        assert f"report.json SHA-256 {previous}" in flat
        assert f"its checkpoint size {cited['size']}, root {cited['root'][:16]}..." in flat
        assert f"consistency proof of {proof} hashes" in flat
        assert "not chained" not in text
    assert two.verify("r1", "r2") == ExitCode.OK  # the rendered files are signed with the rest
