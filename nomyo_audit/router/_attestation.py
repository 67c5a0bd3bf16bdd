"""Choosing the router's attester from ``--tpm``."""

from __future__ import annotations

import logging
from pathlib import Path

from ..attest._attester import DEFAULT_PCR_BANKS, QuoteSource, TPMAttester
from ..errors import ConfigurationError
from ._app import Attester, NoAttester

__all__ = ["make_attester"]


def make_attester(
    spec: str,
    aik: str = "rsa2048-rsassa",
    pcr_banks: str = DEFAULT_PCR_BANKS,
    aik_parent: str = "primary",
    ek: str = "auto",
    platform_evidence: Path | None = None,
    aik_source: str = "ephemeral",
) -> Attester:
    """``none``, ``software``, ``swtpm:host=H,port=P`` or ``device:/dev/tpmrm0``; ``aik_parent`` (``primary``
    or ``ek``) says where a real TPM makes its AIK, ``ek`` which EK it uses (``auto``, ``rsa``, ``ecc``,
    ``p384``...: attest._endorsement.EK_CHOICES); a software attester has no EK (``primary`` and
    ``auto`` only). A real TPM's attester attaches the cloud's ``platform`` evidence, read once now from
    its NV and ``platform_evidence`` (attest._platform), and quotes with the AK ``aik_source`` names
    (attest._cloud_aik: ``auto``, the cloud's certified AK when NV holds an anchor, is serve's default)."""
    if platform_evidence is not None and not spec.startswith(("swtpm", "device")):
        raise ConfigurationError(f"--platform-evidence needs a real TPM (--tpm device:...), not --tpm {spec}")
    if aik_source != "ephemeral" and not spec.startswith(("swtpm", "device")):
        raise ConfigurationError(f"--aik-source {aik_source} needs a real TPM (--tpm device:...), not {spec}")
    if spec == "none":
        return NoAttester()
    if spec == "software":
        from ..attest._software import AIK_KINDS, SoftwareTPM

        if aik not in AIK_KINDS:
            raise ConfigurationError(f"unknown AIK kind {aik!r}: one of {', '.join(AIK_KINDS)}")
        if aik_parent != "primary":
            raise ConfigurationError(f"--aik-parent {aik_parent}: the software attester has no EK")
        if ek != "auto":
            raise ConfigurationError(f"--ek {ek}: the software attester has no EK")
        return TPMAttester(SoftwareTPM(aik), pcr_banks)
    if spec.startswith(("swtpm", "device")):
        from ..attest._platform import attach_platform
        from ..attest._tpm2 import Tpm2QuoteSource

        source = Tpm2QuoteSource(spec, aik, aik_parent, ek, aik_source=aik_source)
        logging.getLogger("nomyo_audit.router").info("AIK: %s", source.aik_origin)
        device = source.kind == "tpm-device"
        attester = device_attester(source, pcr_banks) if device else TPMAttester(source, pcr_banks)
        try:
            attach_platform(attester, source, platform_evidence)
        except BaseException:
            attester.close()
            raise
        return attester
    raise ConfigurationError(f"--tpm {spec!r}: use none, software, swtpm:host=H,port=P or device:/dev/tpmrm0")


def device_attester(
    source: QuoteSource,
    pcr_banks: str,
    firmware_log_path: Path | None = None,
    ima_list_path: Path | None = None,
) -> TPMAttester:
    """A device TPM's attester: its quotes carry the firmware's event log (read once, now, with the
    router's own events appended) and the kernel's IMA list (read after each quote), when present;
    the paths default to the kernel's (securityfs)."""
    from ..attest._measured import FIRMWARE_LOG_PATH, IMA_LIST_PATH, firmware_log

    firmware_log_path = firmware_log_path or FIRMWARE_LOG_PATH
    ima_list_path = ima_list_path or IMA_LIST_PATH
    return TPMAttester(
        source,
        pcr_banks,
        firmware_log=firmware_log(firmware_log_path),
        kernel_ima=ima_list_path if ima_list_path.exists() else None,
    )
