"""Every code example in README.md and docs/ runs, against a real router on loopback.

Python blocks run as written (top-level ``await`` allowed), with the example router URL
pointed at the test's router. Bash blocks run line by line in a prepared workspace (an audit
log with records, keys, saved replies); a line must exit 0, or 1 where the example shows a
finding. YAML blocks must parse (policy examples must lint, config examples must load).
Skipped, with the reason: the README's two set-up commands (CI runs the second itself), the
benchmark commands (minutes each; their figures are in docs/benchmarks.md), and JSON blocks,
which show shapes with "..." placeholders.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import PRODUCTION_UNANCHORED, REPO

from nomyo_audit.attest._attester import TPMAttester
from nomyo_audit.attest._software import SoftwareTPM
from nomyo_audit.audit._keys import ed25519_private, generate_audit_key
from nomyo_audit.audit._log import AuditLog
from nomyo_audit.policy import load_policy
from nomyo_audit.tpm._measurements import measure_demo_boot

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
EXAMPLE_URL = "https://router.example"
SKIP_LINES = ("bash scripts/", ".venv/bin/python bench/", "pip install", "NOMYO_REFERENCE_PATH=")
FRESH = {"quickstart.md"}  # walks through creating the key and the first checkpoint itself
PG_EXAMPLE = "postgresql://audit@db.example:5432/audit"  # the docs' PostgreSQL log: a fresh real database


def with_database(code: str, request: pytest.FixtureRequest) -> str:
    """The example's PostgreSQL URL pointed at a fresh database on the tests' server."""
    return code.replace(PG_EXAMPLE, request.getfixturevalue("postgres_url")) if PG_EXAMPLE in code else code


def blocks(path: Path) -> list[tuple[str, int, str]]:
    """(language, line, code) of each fenced block; ``bash ci-gate`` is tests/test_ci_docs.py's."""
    found, language, start, lines = [], None, 0, []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("```") and language is None:
            info = line[3:].split() or [""]
            language, start, lines = ("ci-gate" if "ci-gate" in info else info[0]), number, []
        elif line.startswith("```"):
            found.append((language, start, "\n".join(lines)))
            language = None
        elif language is not None:
            lines.append(line)
    return found


def cases(language: str) -> list[tuple[Path, int, str]]:
    return [(path, line, code) for path in DOCS for lang, line, code in blocks(path) if lang == language]


def ids(items: list[tuple[Path, int, str]]) -> list[str]:
    return [f"{path.name}:{line}" for path, line, _ in items]


@pytest.fixture(scope="module")
def router(router_keys):
    from nomyo_audit.router import RouterConfig, RouterThread

    tpm = SoftwareTPM()
    measure_demo_boot(tpm)
    with RouterThread(RouterConfig(private_key=router_keys.private_key, attester=TPMAttester(tpm))) as server:
        yield server


@pytest.fixture
def workspace(tmp_path, router, request):
    """Files the examples refer to: a log with records (checkpointed, with its key, unless fresh)."""
    from nomyo_audit import SecureChatCompletion

    fresh = getattr(request, "param", False)
    key = None if fresh else ed25519_private(generate_audit_key(tmp_path / "audit.key")[0])

    async def chats():
        with AuditLog(tmp_path / "audit.db", key=key) as log:
            async with SecureChatCompletion(router.url, allow_http=True, audit_log=log) as client:
                replies = [
                    await client.create("qwen3", [{"role": "user", "content": f"q{n}"}], security_tier="high")
                    for n in range(2)
                ]
            if key is not None:
                log.checkpoint()
        return replies

    replies = asyncio.run(chats())
    (tmp_path / "reply.json").write_text(json.dumps(replies[0]))
    (tmp_path / "replies.jsonl").write_text("".join(json.dumps(r) + "\n" for r in replies))
    (tmp_path / "evidence").mkdir()
    shutil.copy(tmp_path / "replies.jsonl", tmp_path / "evidence" / "replies.jsonl")
    shutil.copy(REPO / "tests" / "fixtures" / "eventlogs" / "sb_cert_eventlog", tmp_path / "eventlog.bin")
    (tmp_path / "policies").mkdir()
    shutil.copy(REPO / "policies" / "production.yaml", tmp_path / "policies")
    (tmp_path / "request.json").write_text(
        json.dumps({"model": "qwen3", "messages": [{"role": "user", "content": "q0"}]})
    )
    (tmp_path / "new-golden.yaml").write_text(
        "apiVersion: nomyo-audit/v1\nkind: AttestationPolicy\nmetadata: {name: new-golden}\n"
        f"spec:\n  pcrs:\n    sha256:\n      0: ['{'11' * 32}']\n"
    )
    return tmp_path, replies[0]["_metadata"]["payload_id"]


def for_test(code: str, url: str) -> str:
    """The example against the test router. That router quotes with the software attester, which
    production denies on aik_trust (no EK to anchor), so a client example's production policy is
    production's other rules with any AIK (tests/fixtures/policies/production-unanchored.yaml)."""
    code = code.replace('policy="production"', f'policy="{PRODUCTION_UNANCHORED}"')
    code = code.replace('policy="policies/production.yaml"', f'policy="{PRODUCTION_UNANCHORED}"')
    return code.replace(f'"{EXAMPLE_URL}"', f'"{url}", allow_http=True').replace(
        f"--base-url {EXAMPLE_URL}", f"--base-url {url} --allow-http"
    )


PYTHON = cases("python")


@pytest.mark.parametrize("case", PYTHON, ids=ids(PYTHON))
def test_python_examples(case, workspace, router, monkeypatch, request):
    path, line, code = case
    directory, _ = workspace
    monkeypatch.chdir(directory)
    source = for_test(with_database(code, request), router.url)
    compiled = compile(source, f"{path.name}:{line}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    namespace = {"__name__": "__doc_example__", "KEY": "sk-doc-example"}
    result = eval(compiled, namespace)
    if inspect.iscoroutine(result):
        asyncio.run(result)


def runnable(code: str) -> bool:
    return any(line.strip() and not line.strip().startswith(("#", *SKIP_LINES)) for line in code.splitlines())


# Blocks holding only set-up or benchmark commands are left out (see the module docstring).
BASH = [case for case in cases("bash") if runnable(case[2])]


@pytest.mark.parametrize("case", BASH, ids=ids(BASH))
def test_bash_examples(case, router, tmp_path, request):
    path, line, code = case
    workspace_fixture = request.getfixturevalue("workspace") if path.name not in FRESH else None
    if workspace_fixture is None:
        directory, payload_id = _fresh_workspace(request, tmp_path)
    else:
        directory, payload_id = workspace_fixture
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("NOMYO_AUDIT_LOG", None)
    ran = 0
    code = with_database(code, request)
    for command in re.sub(r"\\\n\s*", " ", code).splitlines():
        command = command.strip()
        if not command or command.startswith("#") or command.startswith(SKIP_LINES):
            continue
        command = for_test(command.replace(".venv/bin/nomyo-audit", "nomyo-audit"), router.url)
        command = command.replace("<payload_id>", payload_id)
        done = subprocess.run(
            command, shell=True, cwd=directory, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode in (0, 1), (
            f"{path.name}:{line}: {command}\n{done.stdout[-500:]}{done.stderr[-1500:]}"
        )
        ran += 1
    assert ran


def _fresh_workspace(request, tmp_path):
    """The walk-through's starting point: a log with records, no key and no checkpoint yet."""
    directory = tmp_path / "fresh"
    directory.mkdir()
    from nomyo_audit import SecureChatCompletion

    router = request.getfixturevalue("router")

    async def chats():
        async with SecureChatCompletion(
            router.url, allow_http=True, audit_log=str(directory / "audit.db")
        ) as client:
            return [await client.create("qwen3", [{"role": "user", "content": "q"}]) for _ in range(2)]

    replies = asyncio.run(chats())
    (directory / "reply.json").write_text(json.dumps(replies[0]))
    (directory / "replies.jsonl").write_text("".join(json.dumps(r) + "\n" for r in replies))
    return directory, replies[0]["_metadata"]["payload_id"]


YAML = cases("yaml")


@pytest.mark.parametrize("case", YAML, ids=ids(YAML))
def test_yaml_examples(case, tmp_path):
    path, line, code = case
    document = yaml.safe_load(code)
    assert isinstance(document, dict), f"{path.name}:{line}"
    example = tmp_path / "example.yaml"
    example.write_text(code)
    if document.get("kind") == "AttestationPolicy":
        assert load_policy(example).name == document["metadata"]["name"]  # lints, extends resolved
    if path.name == "ci.md" and "chat" in document:
        from nomyo_audit.cli._main import load_config

        assert set(load_config(example)) == {"chat", "verify", "report"}


def test_every_fenced_block_is_covered():
    languages = {lang for path in DOCS for lang, _, _ in blocks(path)}
    # json: shapes with "..." placeholders (docs/protocol.md); "": sample output, not code
    assert languages <= {"python", "bash", "ci-gate", "yaml", "json", ""}, languages
