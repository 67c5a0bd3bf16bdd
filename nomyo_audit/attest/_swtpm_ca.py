"""An swtpm with EK certificates from a local CA, which then plays the TPM manufacturer (I/O).

``swtpm_setup --create-ek-cert --create-platform-cert`` manufactures the TPM state: it creates the
EKs and has ``swtpm_localca`` sign their certificates with a CA made on first use (a root and an
intermediate "local CA"), stored in NV where a real TPM keeps them (RSA 2048 at 0x01c00002, ECC
P-384 at 0x01c00016). The intermediate is also written to the first EK certificate chain index
(0x01c00100, TCG EK Credential Profile 2.2.1.5), so the router can serve the whole chain and a
verifier needs only the root, as with a real manufacturer.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .._files import write_file
from ..errors import ConfigurationError
from ._endorsement import CHAIN_INDICES

__all__ = ["LocalCa", "manufacture", "store_chain", "tools_available"]


class LocalCa(NamedTuple):
    """Where the local CA that signed the EK certificates keeps its certificates (PEM)."""

    root: Path
    intermediate: Path


def tools_available() -> bool:
    """Whether swtpm_setup and swtpm_localca (Debian: swtpm-tools) are on PATH."""
    return shutil.which("swtpm_setup") is not None and shutil.which("swtpm_localca") is not None


def manufacture(state: Path, ca_dir: Path) -> LocalCa:
    """Create the TPM state in ``state`` with EK and platform certificates signed by a local CA in
    ``ca_dir``. Raises :class:`nomyo_audit.errors.ConfigurationError` when swtpm_setup fails."""
    setup, localca = shutil.which("swtpm_setup"), shutil.which("swtpm_localca")
    if setup is None or localca is None:
        raise ConfigurationError("EK certificates need swtpm_setup and swtpm_localca (Debian: swtpm-tools)")
    ca_dir.mkdir(mode=0o700, exist_ok=True)
    config = ca_dir / "swtpm-localca.conf"
    write_file(
        config,
        f"statedir = {ca_dir}\nsigningkey = {ca_dir}/signkey.pem\n"
        f"issuercert = {ca_dir}/issuercert.pem\ncertserial = {ca_dir}/certserial\n".encode(),
        mode=0o600,
    )
    options = ca_dir / "swtpm-localca.options"
    platform = b"--platform-manufacturer nomyo-audit\n--platform-version 1\n--platform-model swtpm\n"
    write_file(options, platform, mode=0o600)
    setup_config = ca_dir / "swtpm_setup.conf"
    write_file(
        setup_config,
        f"create_certs_tool = {localca}\ncreate_certs_tool_config = {config}\n"
        f"create_certs_tool_options = {options}\n".encode(),
        mode=0o600,
    )
    command = [setup, "--tpm2", "--tpmstate", str(state), "--config", str(setup_config)]
    command += ["--create-ek-cert", "--create-platform-cert", "--pcr-banks", "-", "--overwrite"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    ca = LocalCa(ca_dir / "swtpm-localca-rootca-cert.pem", ca_dir / "issuercert.pem")
    if result.returncode != 0 or not ca.root.exists() or not ca.intermediate.exists():
        tail = (result.stderr or result.stdout).strip()[-300:]
        raise ConfigurationError(f"swtpm_setup could not create EK certificates: {tail}")
    return ca


def store_chain(spec: str, intermediate: Path) -> None:
    """Write the local CA's intermediate (DER) to the EK certificate chain index, with platform
    authorization, as a manufacturer provisions it. Needs tpm2-pytss (the ``tpm`` extra)."""
    from tpm2_pytss import ESAPI, TCTILdr
    from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPMA_NV
    from tpm2_pytss.types import TPM2B_NV_PUBLIC, TPMS_NV_PUBLIC

    from ._tpm2 import parse_tpm_spec

    der = x509.load_pem_x509_certificate(intermediate.read_bytes()).public_bytes(serialization.Encoding.DER)
    attributes = (
        TPMA_NV.PPWRITE
        | TPMA_NV.PPREAD
        | TPMA_NV.OWNERREAD
        | TPMA_NV.AUTHREAD
        | TPMA_NV.NO_DA
        | TPMA_NV.PLATFORMCREATE
    )
    public = TPM2B_NV_PUBLIC(
        nvPublic=TPMS_NV_PUBLIC(
            nvIndex=CHAIN_INDICES.start, nameAlg=TPM2_ALG.SHA256, attributes=attributes, dataSize=len(der)
        )
    )
    esys = ESAPI(TCTILdr(*parse_tpm_spec(spec)))
    try:
        index = esys.nv_define_space(None, public, auth_handle=ESYS_TR.PLATFORM)
        for offset in range(0, len(der), 512):
            esys.nv_write(index, der[offset : offset + 512], offset, auth_handle=ESYS_TR.PLATFORM)
    finally:
        esys.close()
