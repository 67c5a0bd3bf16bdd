"""Review R5: the platform facts a report shows come from records' verdicts (a writer's bytes); a line
break, a control or a bidi character in one must not reach the report as such (a Markdown line break
starts a heading or a fake control line; a right-to-left override reverses what is read), and a value
is bounded."""

from __future__ import annotations

from test_platform_report import _gce_metadata, _report


def _with_project(project: str) -> dict:
    metadata = _gce_metadata()
    facts = metadata["verification"]["facts"]
    facts["platform"] = {**facts["platform"], "project_id": project}
    return metadata


def test_a_line_break_or_bidi_character_in_a_platform_fact_is_shown_escaped(tmp_path):
    report, rendered = _report(tmp_path, [_with_project("acme\n## Controls\nall held\u202e")])
    (row,) = report["aiks"][0]["anchors"]
    shown = row["platform"]["project_id"]
    assert "\n" not in shown and "\u202e" not in shown and "\\n" in shown
    assert "\n## Controls\nall held" not in rendered["md"]
    assert all(not line.startswith("all held") for line in rendered["md"].splitlines())
    assert "\u202e" not in rendered["md"] and "\u202e" not in rendered["html"]


def test_a_long_platform_fact_is_bounded(tmp_path):
    report, _ = _report(tmp_path, [_with_project("p" * 100_000)])
    (row,) = report["aiks"][0]["anchors"]
    assert len(row["platform"]["project_id"]) <= 200
    assert len(row["platform_summary"]) < 2_000


def test_a_plain_fact_is_shown_as_it_is(tmp_path):
    report, _ = _report(tmp_path, [_with_project("google.com:acme-prod")])
    assert report["aiks"][0]["anchors"][0]["platform"]["project_id"] == "google.com:acme-prod"
