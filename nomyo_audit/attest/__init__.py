"""TPM attesters (I/O): where evidence is made.

The verifier (:mod:`nomyo_audit.tpm`) never imports this package, so an auditor who only
verifies never reaches attester code.
"""
