"""The demo's measured boot: fixed events extended into a fresh TPM's PCRs.

A fresh swtpm and the software TPM both start with zeroed PCRs 0-15, so these
events give the same, known PCR values on either, which is what
``policies/production.yaml`` holds as golden values. On a real machine the
firmware and the OS measure the boot instead; ``nomyo-audit policy
from-evidence`` turns what they measured into golden values.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

__all__ = ["DEMO_BOOT", "TAMPER_EVENT", "expected_pcr", "measure_demo_boot"]

#: (PCR index, event) in the order the demo extends them, into every bank
DEMO_BOOT = (
    (0, b"nomyo-audit demo: platform firmware"),
    (7, b"nomyo-audit demo: secure boot policy"),
    (10, b"nomyo-audit demo: IMA boot aggregate"),
)
#: What the demo extends into PCR 10 to show a policy denying a changed machine
TAMPER_EVENT = (10, b"nomyo-audit demo: an unexpected kernel module")


class Extendable(Protocol):
    def extend(self, bank: str, index: int, data: bytes) -> None: ...


def measure_demo_boot(tpm: Extendable, banks: tuple[str, ...] = ("sha256",)) -> None:
    for index, event in DEMO_BOOT:
        for bank in banks:
            tpm.extend(bank, index, event)


def expected_pcr(index: int, bank: str = "sha256", events: tuple[tuple[int, bytes], ...] = DEMO_BOOT) -> str:
    """The value PCR ``index`` holds after ``events`` on a fresh TPM (hex)."""
    value = bytes(hashlib.new(bank).digest_size)
    for pcr, event in events:
        if pcr == index:
            value = hashlib.new(bank, value + hashlib.new(bank, event).digest()).digest()
    return value.hex()
