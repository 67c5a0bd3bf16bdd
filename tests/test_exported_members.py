"""Pin the public API: a change here is a change for users (and CHANGELOG.md)."""

import nomyo_audit


def test_exported_members():
    assert sorted(nomyo_audit.__all__) == sorted(
        [
            "APIConnectionError", "APIError", "APITimeoutError", "AuthenticationError", "ConfigurationError",
            "EvidenceError", "ForbiddenError", "IntegrityError", "InvalidRequestError", "NomyoAuditError",
            "Policy",
            "PolicyViolationError", "ProtocolError", "RateLimitError", "SecureChatCompletion",
            "SecureCompletionClient", "SecurityError", "ServerError", "ServiceUnavailableError",
            "SyncSecureChatCompletion", "Verdict", "__version__", "get_memory_protection_info", "load_policy",
            "verify_attestation",
        ]
    )  # fmt: skip
    for name in nomyo_audit.__all__:
        assert hasattr(nomyo_audit, name), name


def test_one_exception_tree():
    errors = [getattr(nomyo_audit, n) for n in nomyo_audit.__all__ if n.endswith("Error")]
    assert issubclass(nomyo_audit.PolicyViolationError, nomyo_audit.SecurityError)
    assert all(issubclass(e, nomyo_audit.NomyoAuditError) for e in errors)
    api = [
        "APIConnectionError",
        "APITimeoutError",
        "AuthenticationError",
        "ForbiddenError",
        "InvalidRequestError",
        "RateLimitError",
        "ServerError",
        "ServiceUnavailableError",
    ]
    assert all(issubclass(getattr(nomyo_audit, n), nomyo_audit.APIError) for n in api)
    assert issubclass(nomyo_audit.APITimeoutError, nomyo_audit.APIConnectionError)
    assert issubclass(nomyo_audit.InvalidRequestError, ValueError)
    assert issubclass(nomyo_audit.ProtocolError, nomyo_audit.SecurityError)
    assert not issubclass(nomyo_audit.SecurityError, nomyo_audit.APIError)


def test_status_codes_of_api_errors():
    assert nomyo_audit.AuthenticationError("x").status_code == 401
    assert nomyo_audit.InvalidRequestError("x").status_code == 400
    assert nomyo_audit.ForbiddenError("x").status_code == 403
    assert nomyo_audit.RateLimitError("x").status_code == 429
    assert nomyo_audit.ServerError("x").status_code == 500
    assert nomyo_audit.ServiceUnavailableError("x").status_code == 503
    err = nomyo_audit.APIError("x", 418, {"detail": "teapot"})
    assert (err.status_code, err.error_details) == (418, {"detail": "teapot"})
