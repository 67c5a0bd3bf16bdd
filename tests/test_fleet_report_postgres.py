"""Reports for a fleet on the PostgreSQL store: the same three labelled clients append to one
PostgreSQL log, and the report groups, limits, signs and verifies exactly as on SQLite."""

from __future__ import annotations

import asyncio
import json

from test_fleet_report import DEAD_ROUTER, _attester, _fleet

from nomyo_audit.audit import AuditLog
from nomyo_audit.audit._keys import generate_audit_key, load_private_key
from nomyo_audit.cli import main
from nomyo_audit.errors import ExitCode


def test_a_fleet_sharing_one_postgresql_log(make_router, postgres_url, tmp_path, capsys):
    key_path, pub_path = generate_audit_key(tmp_path / "audit.key")
    router_a, router_b = (make_router(attester=_attester()) for _ in range(2))
    unattested = make_router()
    asyncio.run(_fleet(postgres_url, router_a, router_b, unattested))
    with AuditLog(postgres_url, key=load_private_key(key_path)) as log:
        log.checkpoint()
    capsys.readouterr()

    assert main(["log", "show", "--log", postgres_url]) == ExitCode.OK
    shown = capsys.readouterr().out.splitlines()
    assert sum("service=billing tenant=acme" in line for line in shown) == 3
    assert sum("service=search" in line for line in shown) == 3 and len(shown) == 8

    out = tmp_path / "search"
    status = main(
        [
            "report",
            "--log",
            postgres_url,
            "--service",
            "search",
            "--format",
            "json,md",
            "--sign",
            str(key_path),
            "-o",
            str(out),
        ]
    )
    assert status == ExitCode.OK
    document = json.loads((out / "report.json").read_text())
    assert document["scope"] == {"service": "search", "router": None, "tenant": None}
    assert document["summary"]["requests"] == 3 and document["covers"]["records"] == 8
    routers = {g["value"]: g["records"] for g in document["groups"]["router"]}
    assert routers == {router_b.url: 2, DEAD_ROUTER: 1}
    assert {g["value"]: g["records"] for g in document["groups"]["tenant"]} == {"globex": 2, None: 1}
    assert main(["verify-report", str(out), "--key", str(pub_path), "--log", postgres_url]) == ExitCode.OK
