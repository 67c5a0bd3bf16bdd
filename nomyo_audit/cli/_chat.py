"""``nomyo-audit chat``: one encrypted chat completion from the command line."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from typing import Any

import click

from ..client import SECURITY_TIERS, SecureChatCompletion
from ..client._settings import PROTOCOL_ENV, PROTOCOLS
from ..errors import APIConnectionError, ConfigurationError, SecurityError

#: Connection failures that are the user's to fix (a mistyped host, https:// to a plain-HTTP
#: server), not findings about the router: exit 2, like any other bad setting.
USER_CONNECTION_ERRORS = frozenset({"name_resolution", "tls"})


@click.command()
@click.argument("prompt", required=False)
@click.option("--base-url", envvar="NOMYO_BASE_URL", default="https://api.nomyo.ai", show_default=True)
@click.option("--model", default="echo", show_default=True)
@click.option("--system", "system_prompt", help="Optional system message.")
@click.option("--api-key", envvar="NOMYO_API_KEY", help="Bearer key (or NOMYO_API_KEY); never echoed.")
@click.option("--security-tier", type=click.Choice(SECURITY_TIERS))
@click.option("--allow-http", is_flag=True, help="Permit a plain http:// base URL (local development only).")
@click.option(
    "--server-key-fingerprint",
    callback=lambda ctx, param, value: _fingerprint(value),
    help="Pin the router key (SHA-256 of its DER SPKI, hex).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds for the whole call, retries included.",
)
@click.option(
    "--policy",
    "policy_file",
    envvar="NOMYO_POLICY",
    help="Policy gating the reply (denied: exit 1, no reply).",
)
@click.option(
    "--protocol",
    type=click.Choice(PROTOCOLS),
    envvar=PROTOCOL_ENV,
    help="auto (default): protocol 2 when the router offers it; 1.0; 2 (required). Or NOMYO_PROTOCOL.",
)
@click.option("--service", envvar="NOMYO_AUDIT_SERVICE", help="Label the audit record with this service.")
@click.option("--tenant", envvar="NOMYO_AUDIT_TENANT", help="Label the audit record with this tenant.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def chat(
    prompt: str | None,
    base_url: str,
    model: str,
    system_prompt: str | None,
    api_key: str | None,
    security_tier: str | None,
    allow_http: bool,
    server_key_fingerprint: str | None,
    timeout: float | None,
    policy_file: str | None,
    protocol: str | None,
    service: str | None,
    tenant: str | None,
    fmt: str,
) -> None:
    """Send PROMPT (or stdin) as an encrypted chat; print the reply.

    The reply goes to stdout; with --format json the whole response,
    _metadata included, goes there instead. A summary of the evidence goes
    to stderr.

    \b
    Example:
      nomyo-audit chat --base-url http://127.0.0.1:12434 --allow-http "Hello"
    """
    if prompt is None:
        prompt = _prompt_from_stdin()
    messages: list[dict[str, Any]] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": prompt})

    async def run() -> dict[str, Any]:
        async with SecureChatCompletion(
            base_url,
            allow_http=allow_http,
            api_key=api_key,
            server_key_fingerprint=server_key_fingerprint,
            timeout=timeout,
            policy=policy_file,
            protocol=protocol or "auto",
            service=service,
            tenant=tenant,
        ) as client:
            kwargs: dict[str, Any] = {"security_tier": security_tier} if security_tier else {}
            return await client.create(model, messages, **kwargs)

    try:
        response = asyncio.run(run())
    except SecurityError as exc:
        if exc.code != "insecure_transport":
            raise
        raise ConfigurationError(
            f"{base_url} is plain HTTP: pass --allow-http to permit it (local development only)",
            code="insecure_transport",
        ) from None
    except APIConnectionError as exc:
        if exc.code not in USER_CONNECTION_ERRORS:
            raise
        raise ConfigurationError(exc.message, code=exc.code) from None
    if fmt == "json":
        click.echo(json.dumps(response, indent=2))
    else:
        for choice in response.get("choices", []):
            message = choice.get("message", {})
            click.echo(message.get("content") or json.dumps(message.get("tool_calls")))
    click.echo(describe_metadata(response.get("_metadata", {})), err=True)


def _fingerprint(value: str | None) -> str | None:
    """Checked here so that the message names the flag, before anything is sent."""
    if value is None:
        return None
    digits = value.lower().removeprefix("sha256:").replace(":", "").strip()
    if not re.fullmatch(r"[0-9a-f]{64}", digits):
        raise click.BadParameter(
            "must be 64 hex digits (the SHA-256 of the router key's DER SPKI)",
            param_hint="--server-key-fingerprint",
        )
    return digits


def _prompt_from_stdin() -> str:
    if sys.stdin.isatty():
        raise ConfigurationError("give a prompt as an argument or on stdin")
    try:
        return sys.stdin.buffer.read().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"stdin: not UTF-8 text (byte {exc.start})", code="unreadable") from None


def describe_metadata(metadata: dict[str, Any]) -> str:
    """A short human summary of a response's ``_metadata`` and its verdict (no secrets in it)."""
    bound = "payload_id bound" if metadata.get("payload_id_verified") else "payload_id NOT echoed by server"
    lines = [
        f"protocol {metadata.get('protocol')} payload_id={metadata.get('payload_id')} "
        f"tier={metadata.get('security_tier')} {bound}"
    ]
    verification = metadata.get("verification")
    if verification:
        lines.append(f"attestation: {verification['result'].upper()}")
        for finding in verification["findings"]:
            if finding["code"] == "not_reached":
                continue
            mark = {"pass": "ok  ", "fail": "FAIL", "skip": "note"}[finding["status"]]
            lines.append(f"  {mark} {finding['check']:<19} {finding['code']}: {finding['detail']}")
    return "\n".join(lines)
