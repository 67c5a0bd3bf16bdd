"""One exception hierarchy for everything nomyo-audit raises.

Every error derives from :class:`NomyoAuditError`, which carries a stable
machine-readable ``code`` and the CLI exit status it maps to, so the CLI has a
single exit path and callers can branch on ``code`` instead of parsing text.

The names and the API-error subtree match the ``nomyo`` reference client, so
code written against ``nomyo`` keeps working:

* :class:`APIError` and its subclasses: the router answered with an error, or
  could not be reached (:class:`APIConnectionError` *is* an :class:`APIError`
  here, unlike in ``nomyo``, so ``except APIError`` catches every API failure).
* :class:`SecurityError`: something that must not be trusted: a response that
  fails decryption or binding, a pinned key that does not match.
* :class:`EvidenceError`: attestation evidence that cannot be parsed.

Messages never contain prompts, completions or key material.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AuthenticationError",
    "CertificateError",
    "ConfigurationError",
    "CredentialError",
    "EnrollmentError",
    "EventLogError",
    "EvidenceError",
    "ExitCode",
    "ForbiddenError",
    "IntegrityError",
    "InvalidRequestError",
    "NomyoAuditError",
    "ProtocolError",
    "RateLimitError",
    "SecurityError",
    "ServerError",
    "ServiceUnavailableError",
]


class ExitCode:
    """CLI exit statuses, fixed and documented in docs/ci.md."""

    OK = 0
    FINDING = 1
    USAGE = 2
    INTEGRITY = 3
    INTERNAL = 4


class NomyoAuditError(Exception):
    """Base of every error nomyo-audit raises on purpose."""

    code: str = "error"
    exit_code: int = ExitCode.INTERNAL

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class ConfigurationError(NomyoAuditError, ValueError):
    """A caller passed an unusable setting (bad URL, unreadable key file...)."""

    code = "configuration"
    exit_code = ExitCode.USAGE


class APIError(NomyoAuditError):
    """The router answered with an error, or could not be reached."""

    code = "api_error"
    exit_code = ExitCode.FINDING
    default_status: int | None = None

    def __init__(
        self,
        message: str,
        status_code: int | None = None,
        error_details: dict[str, Any] | None = None,
        *,
        code: str | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.status_code = status_code if status_code is not None else self.default_status
        self.error_details = error_details


class InvalidRequestError(APIError, ValueError):
    """The request is invalid: rejected by the router (400) or before sending.

    It is also a :class:`ValueError`, since ``nomyo`` raises ``ValueError`` for
    the locally detected cases (bad security tier, empty payload).
    """

    code = "invalid_request"
    default_status = 400


class AuthenticationError(APIError):
    """Authentication failed (401): missing or wrong API key."""

    code = "authentication"
    default_status = 401


class ForbiddenError(APIError):
    """Access forbidden (403), e.g. a model not allowed at the requested tier."""

    code = "forbidden"
    default_status = 403


class RateLimitError(APIError):
    """Rate limit exceeded (429)."""

    code = "rate_limit"
    default_status = 429


class ServerError(APIError):
    """The router failed (500, and other 5xx without a class of their own)."""

    code = "server_error"
    default_status = 500


class ServiceUnavailableError(ServerError):
    """The inference backend is unavailable (503)."""

    code = "service_unavailable"
    default_status = 503


class APIConnectionError(APIError):
    """The router could not be reached, or the connection broke."""

    code = "connection"


class APITimeoutError(APIConnectionError):
    """The request (or the whole call, with ``timeout=``) ran out of time."""

    code = "timeout"


class SecurityError(NomyoAuditError):
    """A security property does not hold; the response must not be trusted."""

    code = "security"
    exit_code = ExitCode.FINDING


class ProtocolError(SecurityError, ValueError):
    """An encrypted package is malformed, or uses another version or algorithm.

    Also a :class:`ValueError`, which is what ``nomyo`` raises for these.
    """

    code = "protocol"


class IntegrityError(NomyoAuditError):
    """Something that must not change has: an audit log, a checkpoint, a proof, a signed report."""

    code = "integrity"
    exit_code = ExitCode.INTEGRITY


class EvidenceError(NomyoAuditError, ValueError):
    """Attestation evidence is malformed; ``code`` names exactly what is wrong."""

    code = "evidence"
    exit_code = ExitCode.USAGE


class CertificateError(EvidenceError):
    """An X.509 certificate or chain (TPM EK or AK) is malformed, or does not validate.

    ``code`` is one of ``cert_malformed``, ``cert_expired``, ``cert_not_yet_valid``,
    ``cert_wrong_eku``, ``cert_self_signed``, ``cert_unchained``, ``cert_unknown_root``,
    ``cert_bad_signature``, ``cert_key_mismatch``, ``cert_not_ek_profile``, ``cert_not_ca``,
    ``cert_path_length``, ``cert_key_usage``, ``cert_trust_store``.
    """

    code = "cert_malformed"


class CredentialError(EvidenceError):
    """A TPM credential (TPM2_MakeCredential / ActivateCredential) cannot be made, read or activated.

    ``code`` is one of ``credential_malformed``, ``credential_unsupported_ek``,
    ``credential_bad_name``, ``credential_bad_secret``, ``credential_bad_input``, ``activation_failed``.
    """

    code = "credential_malformed"


class EventLogError(EvidenceError):
    """A TCG event log or a Linux IMA measurement list cannot be read (``nomyo_audit.eventlog``).

    ``code`` is one of ``eventlog_truncated``, ``eventlog_too_large``, ``eventlog_too_many_events``,
    ``eventlog_bad_header``, ``eventlog_bad_digest``, ``eventlog_unknown_algorithm``,
    ``eventlog_malformed``, ``ima_truncated``, ``ima_too_large``, ``ima_malformed``,
    ``ima_unknown_template``, ``ima_policy_invalid``. A log that parses but does not replay to
    the quoted PCRs is not an error: it is a failing ``event_log``/``ima_log`` finding.
    """

    code = "eventlog_malformed"


class EnrollmentError(SecurityError):
    """An enrollment CA refused to certify an AIK (``nomyo_audit.ca``); no certificate was issued.

    ``code`` is one of ``no_ek_certificate``, ``ek_mismatch`` (the EK certificate is for another EK),
    ``aik_attributes``, ``activation_wrong_secret``, ``activation_replayed``, ``unknown_enrollment``,
    ``enrollment_expired``, or the router's refusal code (``aik_mismatch``, ``activation_failed``...).
    Certificate failures are :class:`CertificateError` with their own codes.
    """

    code = "enrollment_refused"
