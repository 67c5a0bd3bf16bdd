"""The whole path on a real router (issue 17): a router on a real swtpm that holds Google's real AK
certificate in NV 0x01c10000 attaches it as `platform`; a client whose policy requires
`aik_trust: {mode: gce-ak-cert}` anchors each reply from it before any content is used. swtpm's AIK
is not the key Google certified, so the client denies with `gce_ak_mismatch`, and the audit log
keeps the refusal with the evidence a re-check needs."""

from __future__ import annotations

import hashlib
import json
import sqlite3

import pytest
from test_anchor_e2e import chat, policy, records
from test_tdx_router import GCE_CERT, cloud_tpm  # noqa: F401  (the fixture: a swtpm with cloud NV indices)

from nomyo_audit import SecurityError
from nomyo_audit.attest._platform import NV_GCE_AK_CERT_RSA
from nomyo_audit.router._attestation import make_attester

pytestmark = pytest.mark.swtpm


def test_a_gce_ak_certificate_for_another_key_is_denied_by_the_client(
    cloud_tpm,  # noqa: F811
    make_router,
    client_keys_dir,
    tmp_path,
):
    cloud_tpm.define(NV_GCE_AK_CERT_RSA, GCE_CERT.read_bytes())
    router = make_router(attester=make_attester(cloud_tpm.spec))
    log = tmp_path / "gce.db"
    with pytest.raises(SecurityError) as denied:
        chat(router, client_keys_dir, policy("gce-ak-cert", []), audit_log=log)
    assert "aik_trust" in str(denied.value) and "another key" in str(denied.value)
    (record,) = records(log)
    assert record["outcome"] == "policy_denied"
    # kept once, by digest (audit/_blobs.py), its bytes the platform object the router attached
    digest = record["metadata"]["tpm_attestation"]["platform_sha256"]
    with sqlite3.connect(log) as db:
        (blob,) = db.execute("SELECT data FROM blobs WHERE sha256 = ?", (digest,)).fetchone()
    assert json.loads(blob)["kind"] == "gce" and hashlib.sha256(blob).hexdigest() == digest
    assert record["verdict"]["findings"]["aik_anchor"] == ["fail", "gce_ak_mismatch"]
