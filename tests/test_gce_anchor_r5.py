"""Review R5 of the GCE anchor: the identity a CAS subject states is held to the same rules as the GCE
extension's (printable, bounded), since both become facts a policy matches and a report shows."""

from __future__ import annotations

import pytest
from test_gce_anchor import OwnCa, _subject, code, own


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("project", "acme\nprod"),  # a line break: a new Markdown line in a report
        ("zone", "europe\u202ewest4-a"),  # a right-to-left override: reads as another zone
        ("project", "acme\x00prod"),
        ("instance", "\u0667"),  # an Arabic-Indic digit: isdigit, yet no instance id GCE gives
    ],
)
def test_a_cas_subject_with_unprintable_or_non_ascii_identity_is_gce_identity_malformed(field, value):
    ca = OwnCa()
    result = own(ca, ca.ak_cert(subject=_subject(**{field: value}), extension=None))
    assert code(result) == ("fail", "gce_identity_malformed")


def test_a_plain_cas_subject_still_passes():
    ca = OwnCa()
    result = own(ca, ca.ak_cert(subject=_subject(project="google.com:acme-prod"), extension=None))
    assert code(result) == ("pass", "aik_anchored_gce_ak_cert")
    assert result.facts["platform"]["project_id"] == "google.com:acme-prod"
