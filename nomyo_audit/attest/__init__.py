"""TPM attesters (I/O): where evidence is made.

A :class:`QuoteSource` is the one small interface behind which a TPM sits: a real
one through tpm2-pytss (:class:`Tpm2QuoteSource`, the ``tpm`` extra), swtpm run by
:class:`SwtpmProcess`, or the in-process :class:`SoftwareTPM`. :class:`TPMAttester`
turns a source's quotes into the ``tpm_attestation`` block a response carries,
bound to that response (docs/protocol.md).

Importing this package does not import tpm2-pytss: only opening a
:class:`Tpm2QuoteSource` does. The verifier (:mod:`nomyo_audit.tpm`) never imports
this package, so an auditor who only verifies never reaches attester code.
"""

from ._attester import Quote, QuoteSource, TPMAttester
from ._software import SoftwareTPM
from ._swtpm import SwtpmProcess, swtpm_available
from ._tpm2 import Tpm2QuoteSource

__all__ = [
    "Quote",
    "QuoteSource",
    "SoftwareTPM",
    "SwtpmProcess",
    "TPMAttester",
    "Tpm2QuoteSource",
    "swtpm_available",
]
