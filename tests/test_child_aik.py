"""Child AIKs (issue 12, section 1): an AK made under the EK, as tpm2_createak, Keylime and go-attestation
make it, is verified through its parent's qualified name, computed by tpm2-tools (code we did not write)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from nomyo_audit import SecureChatCompletion
from nomyo_audit.attest import TPMAttester
from nomyo_audit.attest._tpm2 import Tpm2QuoteSource
from nomyo_audit.tpm import parse_public, verify_attestation
from nomyo_audit.tpm._structures import HIERARCHIES

NONCE = hashlib.sha256(b"child-aik").digest()
PID = "child-aik-request"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Tools:
    """tpm2-tools against the shared swtpm; every transient object they leave is flushed after."""

    def __init__(self, spec: str, workdir: Path) -> None:
        self.workdir = workdir
        self.env = {**os.environ, "TPM2TOOLS_TCTI": spec}

    def run(self, *argv: str) -> str:
        result = subprocess.run(argv, cwd=self.workdir, env=self.env, capture_output=True, text=True)
        assert result.returncode == 0, f"{' '.join(argv)}: {result.stderr.strip()[-400:]}"
        return result.stdout

    def check(self, *argv: str) -> str:
        """Run a tool, then flush what it left loaded (swtpm has three object slots, no resource
        manager): the tools reload their objects from the context files."""
        before = self.transient()
        try:
            return self.run(*argv)
        finally:
            for handle in sorted(self.transient() - before):
                subprocess.run(["tpm2_flushcontext", handle], env=self.env, capture_output=True)

    def transient(self) -> set[str]:
        return set(re.findall(r"0x[0-9a-fA-F]{8}", self.run("tpm2_getcap", "handles-transient")))

    def child_quote(self, key: str) -> tuple[dict[str, Any], bytes]:
        """tpm2_createek + tpm2_createak (a child of the EK) + tpm2_quote over sha256:0,7 with NONCE:
        the tpm_attestation block, and the EK's qualified name as tpm2_readpublic computes it."""
        self.check("tpm2_createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub")
        self.check("tpm2_readpublic", "-c", "ek.ctx", "-q", "ek.qname")
        self.check(
            "tpm2_createak", "-C", "ek.ctx", "-c", "ak.ctx", "-G", key, "-g", "sha256", "-s",
            "rsassa" if key == "rsa" else "ecdsa", "-u", "ak.pub", "-n", "ak.name",
        )  # fmt: skip
        self.check(
            "tpm2_quote", "-c", "ak.ctx", "-l", "sha256:0,7", "-q", NONCE.hex(),
            "-m", "quote.msg", "-s", "quote.sig", "-g", "sha256",
        )  # fmt: skip
        self.check("tpm2_pcrread", "sha256:0,7", "-o", "values.bin")
        raw = (self.workdir / "values.bin").read_bytes()
        block = {
            "is_available": True,
            "pcr_banks": "sha256:0,7",
            "pcr_values": {"sha256": {"0": raw[:32].hex(), "7": raw[32:64].hex()}},
            "quote_b64": b64((self.workdir / "quote.msg").read_bytes()),
            "signature_b64": b64((self.workdir / "quote.sig").read_bytes()),
            "aik_pubkey_b64": b64((self.workdir / "ak.pub").read_bytes()),
            "attester": "swtpm",
        }
        return block, (self.workdir / "ek.qname").read_bytes()


@pytest.fixture(scope="module", params=["rsa", "ecc"])
def tools_quote(request, swtpm, tmp_path_factory):
    return Tools(swtpm.spec, tmp_path_factory.mktemp("createak")).child_quote(request.param)


def verdict(block: dict[str, Any]):
    return verify_attestation(block, None, expected_nonce=NONCE)


def test_tpm2_createak_quote_passes_with_its_parents_qualified_name(tools_quote):
    block, ek_qualified_name = tools_quote
    result = verdict({**block, "aik_parent_qualified_name_b64": b64(ek_qualified_name)})
    failures = {f.check: f.code for f in result.failures}
    assert set(failures) <= {"aik_anchor"}, failures  # not anchored is a skip, never a failure here
    assert result.finding("signer_name").code == "signer_matches"
    assert result.finding("aik_attributes").status == "pass"
    assert result.facts["aik_parent_qualified_name"] == ek_qualified_name.hex()


def test_tpm2_createak_quote_without_the_parent_is_signer_parent_unknown(tools_quote):
    block, _ = tools_quote
    result = verdict(block)
    assert {f.check: f.code for f in result.failures} == {"signer_name": "signer_parent_unknown"}
    assert "attributes are unproven" in result.finding("signer_name").detail
    assert "aik_parent_qualified_name" not in result.facts


@pytest.mark.parametrize(
    "wrong",
    [HIERARCHIES["endorsement"], HIERARCHIES["owner"], b"\x00\x0b" + bytes(32)],
    ids=["endorsement-handle", "owner-handle", "another-key"],
)
def test_tpm2_createak_quote_with_a_wrong_parent_is_signer_mismatch(tools_quote, wrong):
    block, _ = tools_quote
    result = verdict({**block, "aik_parent_qualified_name_b64": b64(wrong)})
    assert {f.check: f.code for f in result.failures} == {"signer_name": "signer_mismatch"}
    assert "aik_parent_qualified_name" not in result.facts


@pytest.mark.parametrize("bad", ["not base64!", b64(b"\x00\x0b" + bytes(5)), b64(b"\x41\x00")])
def test_a_malformed_parent_name_is_an_evidence_format_failure(tools_quote, bad):
    block, _ = tools_quote
    result = verdict({**block, "aik_parent_qualified_name_b64": bad})
    assert result.finding("evidence_format").status == "fail"
    assert result.finding("evidence_format").code in ("bad_base64", "bad_parent_name")


def test_our_child_aik_matches_what_tpm2_tools_compute(swtpm, tmp_path):
    """Our --aik-parent ek names the same parent QN tpm2_readpublic computes for tpm2_createek's EK."""
    _, ek_qualified_name = Tools(swtpm.spec, tmp_path).child_quote("rsa")
    source = Tpm2QuoteSource(swtpm.spec, aik_parent="ek")
    try:
        assert source.aik_parent_qualified_name == ek_qualified_name
        ek = parse_public(base64.b64decode(TPMAttester(source).endorsement()["ek_public_b64"]))
        assert ek.qualified_name(HIERARCHIES["endorsement"]) == ek_qualified_name
    finally:
        source.close()


def test_router_with_aik_parent_ek_end_to_end(swtpm, make_router, client_keys_dir):
    """serve --aik-parent ek: the client verifies every reply's quote from the child AIK, which passes
    only through the parent's qualified name the evidence carries."""
    from nomyo_audit.router._attestation import make_attester

    router = make_router(attester=make_attester(swtpm.spec, "ecc256-ecdsa", "sha256:0,7,10", "ek"))

    async def go():
        async with SecureChatCompletion(router.url, allow_http=True, key_dir=str(client_keys_dir)) as c:
            return await c.create("echo", [{"role": "user", "content": "hi"}], security_tier="high")

    reply = asyncio.run(go())
    verification = reply["_metadata"]["verification"]
    signer = next(f for f in verification["findings"] if f["check"] == "signer_name")
    assert (signer["status"], signer["code"]) == ("pass", "signer_matches"), verification
    assert verification["facts"]["aik_parent_qualified_name"]
    block = reply["_metadata"]["tpm_attestation"]
    stripped = {k: v for k, v in block.items() if k != "aik_parent_qualified_name_b64"}
    assert verify_attestation(stripped, None, expected_nonce=b"x").finding("signer_name").code == (
        "signer_parent_unknown"
    )
