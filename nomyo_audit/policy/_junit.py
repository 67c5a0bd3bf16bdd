"""JUnit XML from appraisals, for CI test views: pure, streamed a record at a time.

One ``<testsuite>`` per record, one ``<testcase>`` per policy rule (classname:
the policy's name) or, without a policy, per verifier check (classname
``verifier``). A failing rule or check is a ``<failure>``, a skipped one
``<skipped>``. The document is produced in pieces so that appraising a log of
millions of records keeps nothing per record.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator

from ._appraise import Appraisal

__all__ = ["junit_chunks", "junit_xml"]


def junit_xml(appraisals: Iterable[Appraisal]) -> str:
    """The whole JUnit document for ``appraisals``, as one string (see :func:`junit_chunks`)."""
    return "".join(junit_chunks(appraisals))


def junit_chunks(appraisals: Iterable[Appraisal]) -> Iterator[str]:
    """The JUnit document in pieces, a ``<testsuite>`` at a time: nothing per record is kept.

    Raises what iterating ``appraisals`` raises, nothing of its own.
    """
    yield '<?xml version="1.0" encoding="UTF-8"?>\n<testsuites name="nomyo-audit verify">\n'
    for appraisal in appraisals:
        suite = _suite(appraisal)
        ET.indent(suite, level=1)
        yield "  " + ET.tostring(suite, encoding="unicode") + "\n"
    yield "</testsuites>\n"


def _suite(appraisal: Appraisal) -> ET.Element:
    record, verdict, result = appraisal.record, appraisal.verdict, appraisal.result
    cases: list[tuple[str, str, str, str]] = (
        [(r.rule, r.status, r.detail, result.policy_name) for r in result.rules]
        if result is not None
        else [(f.check, f.status, f"{f.code}: {f.detail}", "verifier") for f in verdict.findings]
    )
    suite = ET.Element(
        "testsuite",
        name=f"{record.source} ({verdict.payload_id})",
        tests=str(len(cases)),
        failures=str(sum(1 for c in cases if c[1] == "fail")),
        errors="0",
        skipped=str(sum(1 for c in cases if c[1] == "skip")),
    )
    for name, status, detail, classname in cases:
        case = ET.SubElement(suite, "testcase", name=name, classname=classname)
        if status == "fail":
            ET.SubElement(case, "failure", message=detail[:500]).text = detail
        elif status == "skip":
            ET.SubElement(case, "skipped", message=detail[:500])
    return suite
