"""Pin the public API: a change here is a change for users (and CHANGELOG.md)."""

import ast
import enum
import importlib
import importlib.util
import inspect
from pathlib import Path

import pytest

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


def test_certificate_api_of_nomyo_audit_tpm():
    """The EK/AK certificate layer (issue 12) other packages build on: its names stay exported."""
    import nomyo_audit.errors
    import nomyo_audit.tpm

    names = {
        "AkChainValidation", "ChainValidation", "EkCertificate", "TrustStore", "build_ak_certificate",
        "ek_matches_public", "parse_ek_certificate", "validate_ak_chain", "validate_ek_chain",
    }  # fmt: skip
    assert names <= set(nomyo_audit.tpm.__all__)
    assert "CertificateError" in nomyo_audit.errors.__all__
    assert issubclass(nomyo_audit.errors.CertificateError, nomyo_audit.EvidenceError)


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


# Both directions, as httpx's tests/test_exported_members.py does: everything a public module
# names in ``__all__`` is importable and documented, and every public name it defines is named
# in ``__all__``. A public module is one of these; every other module file is underscored.
PUBLIC_MODULES = [
    "nomyo_audit",
    "nomyo_audit.client",
    "nomyo_audit.wire",
    "nomyo_audit.errors",
    "nomyo_audit.tpm",
    "nomyo_audit.eventlog",
    "nomyo_audit.attest",
    "nomyo_audit.policy",
    "nomyo_audit.audit",
    "nomyo_audit.router",
    "nomyo_audit.ca",
    "nomyo_audit.witness",
    "nomyo_audit.cli",
]  # in the order the reference lists them (scripts/api.sh)
PACKAGE_DIR = Path(nomyo_audit.__file__).parent


def _own_docstring(obj: object) -> str:
    """The docstring ``obj`` itself carries: not one inherited from a base class, not one that
    dataclasses, NamedTuple, TypedDict or Enum write for an undocumented class."""
    if inspect.isclass(obj):
        doc = obj.__dict__.get("__doc__") or ""
        generated = (
            doc.startswith(f"{obj.__name__}(")  # dataclass and NamedTuple: the signature
            or doc in (dict.__doc__, enum.Enum.__doc__, enum.IntEnum.__doc__)
            or doc == "An enumeration."
        )
        return "" if generated else doc.strip()
    return (getattr(obj, "__doc__", None) or "").strip()


def _source_of(module_name: str) -> str:
    spec = importlib.util.find_spec(module_name)
    assert spec is not None and spec.origin is not None, module_name
    return Path(spec.origin).read_text(encoding="utf-8")


def _doc_comment(lines: list[str], statement: ast.stmt) -> str:
    """The ``#:`` comment lines right above ``statement``, or ending its line (Sphinx's doc
    comments: the convention of this code base for constants; pdoc does not read them)."""
    comment = []
    number = statement.lineno - 2
    while number >= 0 and lines[number].strip().startswith("#:"):
        comment.insert(0, lines[number].strip().removeprefix("#:").strip())
        number -= 1
    trailing = lines[statement.lineno - 1].partition("#:")[2]
    return " ".join([*comment, trailing.strip()]).strip()


def _binding_docstring(module_name: str, name: str) -> str:
    """The documentation of the statement that binds ``name`` in ``module_name``, following
    ``from .x import name`` into the module that assigns it. For an assignment: the string literal
    right after it (the attribute docstring that pdoc, Sphinx and mkdocstrings read) or a ``#:``
    doc comment; for a ``def`` (a click command, say), the function's docstring."""
    source = _source_of(module_name)
    lines, body = source.splitlines(), ast.parse(source).body
    package = importlib.import_module(module_name).__package__
    for statement, following in zip(body, [*body[1:], None], strict=True):
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)) and statement.name == name:
            return ast.get_docstring(statement) or ""
        targets = (
            statement.targets if isinstance(statement, ast.Assign)
            else [statement.target] if isinstance(statement, ast.AnnAssign) else []
        )  # fmt: skip
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            if (
                isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                return following.value.value.strip()
            return _doc_comment(lines, statement)
        if isinstance(statement, ast.ImportFrom) and statement.level > 0:
            for alias in statement.names:
                if (alias.asname or alias.name) == name:
                    relative = "." * statement.level + (statement.module or "")
                    return _binding_docstring(importlib.util.resolve_name(relative, package), alias.name)
    return ""


def _module_files() -> set[str]:
    root = PACKAGE_DIR.parent
    return {path.relative_to(root).as_posix() for path in PACKAGE_DIR.rglob("*.py")}


def _externally_imported(module_name: str) -> set[str]:
    """Names the module binds by importing from outside nomyo_audit (the standard library, third
    parties): they are the module's tools, not its API."""
    names = set()
    for statement in ast.parse(_source_of(module_name)).body:
        if isinstance(statement, ast.Import):
            names |= {alias.asname or alias.name.partition(".")[0] for alias in statement.names}
        elif isinstance(statement, ast.ImportFrom) and statement.level == 0:
            if (statement.module or "").startswith("nomyo_audit"):
                continue
            names |= {alias.asname or alias.name for alias in statement.names}
    return names


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_public_module_declares_and_documents_its_api(module_name):
    module = importlib.import_module(module_name)
    assert (module.__doc__ or "").strip(), f"{module_name} has no module docstring"
    assert isinstance(getattr(module, "__all__", None), list), f"{module_name} has no __all__ list"
    assert len(set(module.__all__)) == len(module.__all__), f"{module_name}.__all__ repeats a name"


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_everything_in_all_is_importable_and_documented(module_name):
    """Classes and functions carry their own docstring. A constant (or any other instance, such
    as a click command) is documented where it is bound: an attribute docstring right after its
    assignment or a ``#:`` comment above it, or the docstring of the ``def`` that made it. Dunder
    metadata (``__version__``) is exempt, as httpx exempts it."""
    module = importlib.import_module(module_name)
    missing, undocumented = [], []
    for name in getattr(module, "__all__", []):
        try:
            obj = getattr(module, name)
        except AttributeError:
            missing.append(name)
            continue
        if name.startswith("__") or inspect.ismodule(obj):
            continue
        if inspect.isclass(obj) or inspect.isroutine(obj):
            documented = _own_docstring(obj)
        else:
            documented = _binding_docstring(module_name, name)
        if not documented:
            undocumented.append(name)
    assert not missing, f"{module_name}.__all__ names what it does not define: {missing}"
    assert not undocumented, f"{module_name}: no docstring for {undocumented}"


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_public_name_is_in_all(module_name):
    """Every non-underscore name a public module binds is in its ``__all__``, except modules
    (subpackages, ``from __future__ import annotations``), what it imports from the standard
    library or third parties, and what it imports from another public module that exports it
    (``wire`` using ``errors.ProtocolError``: that name is documented where it lives)."""
    module = importlib.import_module(module_name)
    external = _externally_imported(module_name)
    exported_elsewhere = {
        id(getattr(other, name))
        for other in map(importlib.import_module, PUBLIC_MODULES)
        if other is not module
        for name in getattr(other, "__all__", [])
        if inspect.isclass(getattr(other, name, None)) or inspect.isroutine(getattr(other, name, None))
    }  # classes and functions only: equal small ints and strings share an id
    unlisted = []
    for name, obj in vars(module).items():
        if name.startswith("_") or name in external or inspect.ismodule(obj):
            continue
        if name not in getattr(module, "__all__", []) and id(obj) in exported_elsewhere:
            continue
        if (inspect.isclass(obj) or inspect.isroutine(obj)) and not (
            getattr(obj, "__module__", None) or ""
        ).startswith("nomyo_audit"):
            continue
        if name not in getattr(module, "__all__", []):
            unlisted.append(name)
    assert not unlisted, f"{module_name} binds public names missing from __all__: {sorted(unlisted)}"


def test_every_module_file_is_public_or_underscored():
    """The file tree shows the public API: a module path with no underscored part is one of
    PUBLIC_MODULES (a package counts through its ``__init__.py``)."""
    stray = []
    for path in sorted(_module_files()):
        parts = path.removesuffix(".py").split("/")
        if parts[-1] == "__init__":
            parts.pop()
        if any(part.startswith("_") for part in parts):
            continue
        if ".".join(parts) not in PUBLIC_MODULES:
            stray.append(path)
    assert not stray, f"public-looking modules outside PUBLIC_MODULES (underscore them or list them): {stray}"


def test_the_api_reference_documents_the_public_modules():
    """scripts/api.sh builds the reference from exactly PUBLIC_MODULES: pdoc follows a package's
    ``__all__``, so a public module left off its command line is left out of the reference."""
    script = (PACKAGE_DIR.parent / "scripts" / "api.sh").read_text().replace("\\\n", " ")
    commands = [line for line in script.splitlines() if "-m pdoc" in line]
    assert len(commands) == 1
    assert [word for word in commands[0].split() if word.startswith("nomyo_audit")] == PUBLIC_MODULES
