"""A log location that is a URL of a scheme no store takes (a typo such as ``postgress://``) is refused
wherever a log is opened (the Python API, ``audit_log=``, ``NOMYO_AUDIT_LOG``), never taken for a file
path: no local file appears, and the message names the scheme, never the password."""

from __future__ import annotations

import pytest

from nomyo_audit.audit import AuditLog, LogError


@pytest.mark.parametrize("location", ["postgress://alice:s3cret@db.example/audit", "mysql://u:s3cret@h/db"])
def test_a_url_of_another_scheme_is_refused_and_creates_nothing(tmp_path, monkeypatch, location):
    monkeypatch.chdir(tmp_path)
    for open_log in (AuditLog, AuditLog.open):
        with pytest.raises(LogError) as caught:
            open_log(location)
        assert "s3cret" not in str(caught.value) and location.split("://")[0] in str(caught.value)
    assert list(tmp_path.rglob("*")) == []
