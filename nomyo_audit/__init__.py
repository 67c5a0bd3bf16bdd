"""nomyo-audit: end-to-end-encrypted LLM inference you can prove and audit.

The client API is the ``nomyo`` reference client's, so ``from nomyo_audit
import SecureChatCompletion`` is a drop-in replacement for ``from nomyo
import SecureChatCompletion``. The quote verifier is here too
(``from nomyo_audit import verify_attestation``), and in full in :mod:`nomyo_audit.tpm`.
"""

from ._memory import get_memory_protection_info
from ._version import __version__
from .client import SecureChatCompletion, SecureCompletionClient, SyncSecureChatCompletion
from .errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    ConfigurationError,
    EvidenceError,
    ForbiddenError,
    IntegrityError,
    InvalidRequestError,
    NomyoAuditError,
    ProtocolError,
    RateLimitError,
    SecurityError,
    ServerError,
    ServiceUnavailableError,
)
from .policy import Policy, PolicyViolationError, load_policy
from .tpm import Verdict, verify_attestation

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AuthenticationError",
    "ConfigurationError",
    "EvidenceError",
    "ForbiddenError",
    "IntegrityError",
    "InvalidRequestError",
    "NomyoAuditError",
    "Policy",
    "PolicyViolationError",
    "ProtocolError",
    "RateLimitError",
    "SecureChatCompletion",
    "SecureCompletionClient",
    "SecurityError",
    "ServerError",
    "ServiceUnavailableError",
    "SyncSecureChatCompletion",
    "Verdict",
    "__version__",
    "get_memory_protection_info",
    "load_policy",
    "verify_attestation",
]
