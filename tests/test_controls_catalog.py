"""The shipped control mapping (nomyo_audit/data/controls/): a valid OSCAL 1.1.3 catalog by NIST's own
JSON Schema, mapping every control issue 15 names, in the project's own words, read by load_mapping."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import zipfile
from importlib import resources
from typing import Any

import pytest
from conftest import FIXTURES, REPO
from oscal_schema import schema_errors

from nomyo_audit.audit._controls import CHECKS, MAPPING_CATALOG_UUID, load_mapping

SCHEMA = FIXTURES / "oscal" / "oscal_catalog_schema.json"
#: SHA-256 of NIST's OSCAL v1.1.3 release asset (tests/fixtures/oscal/PROVENANCE-catalog.md)
SCHEMA_SHA256 = "5e120afbd14c480a9498ab6388857ef32b3b880e458525e966ff7c7f59333d90"

#: The controls issue 15 names, by framework.
REQUIRED = {
    ("SOC 2", "CC6.1"),
    ("SOC 2", "CC6.7"),
    ("SOC 2", "CC7.2"),
    ("SOC 2", "CC8.1"),
    ("EU AI Act", "Art. 12"),
    ("EU AI Act", "Art. 19"),
    ("EU AI Act", "Art. 26(6)"),
    ("ISO/IEC 42001", "A.6.2.8"),
    ("NIST SP 800-53", "AU-9"),
    ("NIST SP 800-53", "AU-10"),
    ("NIST SP 800-53", "SC-8"),
    ("NIST SP 800-53", "SC-13"),
    ("NIST SP 800-53", "SI-7"),
}


def shipped_catalog() -> dict[str, Any]:
    data = resources.files("nomyo_audit") / "data" / "controls" / "nomyo-audit-controls.json"
    return json.loads(data.read_text(encoding="utf-8"))


def catalog_errors(catalog: Any) -> list[str]:
    return schema_errors(catalog, "oscal_catalog_schema.json")


def test_the_vendored_schema_is_nists_release_asset():
    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() == SCHEMA_SHA256
    assert (
        json.loads(SCHEMA.read_text())["$id"]
        == "http://csrc.nist.gov/ns/oscal/1.1.3/oscal-catalog-schema.json"
    )


def test_the_catalog_validates_against_nists_oscal_catalog_schema():
    catalog = shipped_catalog()
    assert catalog_errors(catalog) == []
    assert catalog["catalog"]["metadata"]["oscal-version"] == "1.1.3"
    assert catalog["catalog"]["uuid"] == MAPPING_CATALOG_UUID


def test_the_validator_is_not_vacuous():
    """The same validator rejects what NIST's schema forbids: a control id that is no token, a
    property with spaces around its value, a catalog without metadata."""
    for breakage in (
        lambda c: c["catalog"]["groups"][0]["controls"][0].__setitem__("id", "1 not a token"),
        lambda c: c["catalog"]["groups"][0]["controls"][0]["props"][0].__setitem__("value", " CC6.1 "),
        lambda c: c["catalog"].pop("metadata"),
        lambda c: c["catalog"].__setitem__("uuid", "not-a-uuid"),
    ):
        catalog = shipped_catalog()
        breakage(catalog)
        assert catalog_errors(catalog), breakage


def test_every_control_of_the_issue_is_mapped_to_known_checks():
    mapping = load_mapping()
    assert {(c.framework, c.control_id) for c in mapping} == REQUIRED
    assert len({c.oscal_id for c in mapping}) == len(mapping)
    for control in mapping:
        assert control.checks, control
        assert set(control.checks) <= set(CHECKS), control
        assert len(control.rationale) > 200 and control.title


def test_the_mapping_says_it_is_the_projects_not_an_auditors():
    remarks = shipped_catalog()["catalog"]["metadata"]["remarks"]
    assert "the nomyo-audit project's own mapping, not an auditor's opinion" in remarks


def test_no_framework_text_is_reproduced_only_ids_titles_and_our_words():
    """SOC 2 and ISO/IEC 42001 are copyrighted: the catalog holds their identifiers and short titles,
    and prose the project wrote. No control has a `statement` part (the place for a framework's text)."""
    text = json.dumps(shipped_catalog())
    assert '"statement"' not in text
    for phrase in (  # phrases of the AICPA criteria and ISO/IEC 42001 Annex A wording
        "The entity implements logical access security software, infrastructure, and architectures",
        "The entity restricts the transmission, movement, and removal of information",
        "The entity authorizes, designs, develops or acquires",
        "The organization shall determine at which phases of the AI system life cycle",
    ):
        assert phrase.lower() not in text.lower()


def test_the_package_data_is_the_top_level_controls_directory():
    """Like policies/ and reports/templates/: the file lives at controls/ and reaches the package
    through the symlink nomyo_audit/data/controls, listed in pyproject's package-data."""
    link = REPO / "nomyo_audit" / "data" / "controls"
    assert link.is_symlink() and link.resolve() == (REPO / "controls").resolve()
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(r'"data/controls/\*\.json"', pyproject)


def test_the_catalog_loads_in_compliance_trestle():
    """An OSCAL implementation we did not write reads it: its 1.1.3 Catalog model, every control kept."""
    from trestle.oscal.catalog import Catalog

    catalog = Catalog.parse_obj(shipped_catalog()["catalog"])
    ids = [control.id for group in catalog.groups or [] for control in group.controls or []]
    assert ids == [control.oscal_id for control in load_mapping()]


@pytest.mark.slow
def test_the_wheel_ships_the_catalog_byte_for_byte(tmp_path):
    """Built from this tree, the wheel holds the catalog where load_mapping reads it."""
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    wheel = next(tmp_path.glob("nomyo_audit-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        shipped = archive.read("nomyo_audit/data/controls/nomyo-audit-controls.json")
    assert shipped == (REPO / "controls" / "nomyo-audit-controls.json").read_bytes()
