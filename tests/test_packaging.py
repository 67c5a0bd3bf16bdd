"""The wheel works anywhere: built from this tree, installed into a fresh venv with no repository
on the path and no TSS library, it runs the demo, verifies evidence and renders reports from the
templates, policies and schema it ships."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(root / "dist"), str(REPO)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    wheel = next((root / "dist").glob("nomyo_audit-*.whl"))
    env_dir = root / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    pip = [str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, f"{wheel}[router]"], check=True, capture_output=True, timeout=900)
    return env_dir / "bin"


def run(bin_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NOMYO_AUDIT_LOG", "NOMYO_POLICY")}
    return subprocess.run(
        [str(bin_dir / "nomyo-audit"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_the_wheel_has_no_tss_and_imports_from_site_packages(installed, tmp_path):
    python = str(installed / "python")
    where = subprocess.run(
        [python, "-c", "import nomyo_audit; print(nomyo_audit.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "site-packages" in where and str(REPO) not in where
    assert subprocess.run([python, "-c", "import tpm2_pytss"], capture_output=True).returncode != 0


def test_demo_verify_and_report_from_the_wheel(installed, tmp_path):
    demo = run(installed, tmp_path, "demo", "--attester", "software", "--dir", "demo")
    assert demo.returncode == 0, demo.stderr
    assert "DENIED by policy production" in demo.stdout
    log = tmp_path / "demo" / "audit.db"
    policy = str(log.parent / "policy.yaml")  # the demo's own policy (its chats' AIK is unanchored)
    verified = run(installed, tmp_path, "verify", "--log", str(log), "--policy", policy, "--format", "json")
    assert verified.returncode == 1  # the record after the PCR change is denied
    outcomes = [d["policy"]["outcome"] for d in json.loads(verified.stdout)]
    assert outcomes == ["pass", "pass", "pass", "deny"]
    report = run(
        installed,
        tmp_path,
        "report",
        "--log",
        str(log),
        "--policy",
        policy,
        "--format",
        "html,md,json,junit,csv",
        "--sign",
        str(tmp_path / "demo" / "audit.key"),
        "-o",
        "out",
    )
    assert report.returncode == 0, report.stderr
    assert {p.name for p in (tmp_path / "out").iterdir()} >= {
        "report.html",
        "report.md",
        "report.json",
        "report.csv",
        "report.junit.xml",
        "report.dsse.json",
    }
    checked = run(
        installed,
        tmp_path,
        "verify-report",
        "out",
        "--key",
        str(tmp_path / "demo" / "audit.key.pub"),
        "--log",
        str(log),
    )
    assert checked.returncode == 0, checked.stderr
    lint = run(installed, tmp_path, "policy", "lint", "production", "development", "maximum")
    assert lint.returncode == 0, lint.stderr


def test_no_extras_verifies_and_reports(installed, tmp_path):
    """``pip install nomyo-audit`` alone: no starlette, no uvicorn, no tpm2-pytss."""
    wheel = next((installed.parent.parent / "dist").glob("nomyo_audit-*.whl"))
    env_dir = tmp_path / "bare"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    subprocess.run(
        [str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
        check=True,
        capture_output=True,
        timeout=900,
    )
    bare = env_dir / "bin"
    for module in ("starlette", "uvicorn", "tpm2_pytss"):
        assert (
            subprocess.run([str(bare / "python"), "-c", f"import {module}"], capture_output=True).returncode
            != 0
        )
    vectors = REPO / "tests" / "fixtures" / "vectors" / "tpm-evidence.json"
    metadata = [
        {
            "payload_id": v["payload_id"],
            "tpm_attestation": v["tpm_attestation"],
            "verification": {"content_digest": v["content_digest"]},
        }
        for v in json.loads(vectors.read_text())["vectors"]
        if v["source"] == "swtpm" and v["expect"]["result"] == "pass"
    ]
    (tmp_path / "swtpm-evidence.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metadata))
    verified = run(bare, tmp_path, "verify", "swtpm-evidence.jsonl")
    assert verified.returncode == 0, verified.stdout + verified.stderr  # real TPM quotes, no TSS library
    demo = run(installed, tmp_path, "demo", "--attester", "software", "--dir", "demo")
    assert demo.returncode == 0, demo.stderr
    report = run(bare, tmp_path, "report", "--log", "demo/audit.db", "--format", "html,json", "-o", "out")
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "out" / "report.html").stat().st_size > 1000
    assert run(bare, tmp_path, "serve").returncode == 2  # a clear error, not a traceback


def test_the_wheel_ships_the_tpm_roots_with_their_provenance(installed, tmp_path):
    """Every manufacturer root in tpm-roots/ and each vendor's PROVENANCE.md reach the wheel, and
    TrustStore.bundled() reads them there (docs/tpm-roots.md)."""
    source = REPO / "tpm-roots"
    shipped = sorted(p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file())
    script = (
        "import json; from importlib import resources; from nomyo_audit.tpm import TrustStore\n"
        "root = resources.files('nomyo_audit') / 'data' / 'tpm-roots'\n"
        "print(json.dumps(sorted(f'{v.name}/{f.name}' for v in root.iterdir() for f in v.iterdir())))\n"
        "print(len(TrustStore.bundled()))\n"
    )
    python = str(installed / "python")
    result = subprocess.run([python, "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    files, count = result.stdout.splitlines()
    assert json.loads(files) == shipped
    assert int(count) == sum(1 for name in shipped if name.endswith(".pem")) >= 200
    vendors = {name.split("/")[0] for name in shipped}
    assert {f"{vendor}/PROVENANCE.md" for vendor in vendors} <= set(shipped)
