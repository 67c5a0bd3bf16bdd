"""``nomyo-audit demo``: the whole loop on loopback, with nothing to prepare."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import click

from ..errors import ConfigurationError

DEMO_PROMPTS = (
    "Summarise our Q3 incident report.",
    "Draft a reply to the auditor.",
)


def _tpm2_usable() -> bool:
    from ..tpm.swtpm import swtpm_available

    try:
        import tpm2_pytss  # noqa: F401
    except ImportError:
        return False
    return swtpm_available()


@click.command()
@click.option(
    "--attester",
    type=click.Choice(["auto", "swtpm", "software", "none"]),
    default="auto",
    show_default=True,
    help="auto: swtpm when installed (with the 'tpm' extra), else the software attester.",
)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def demo(attester: str, fmt: str) -> None:
    """Run the whole loop on loopback: router, TPM quotes, encrypted chats, verdicts.

    Everything runs on 127.0.0.1 and stops when the command ends.

    \b
    Example:
      nomyo-audit demo
    """
    try:
        from ..router import RouterConfig, RouterThread
        from ..router.attestation import make_attester
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigurationError(
            f"the demo needs the 'router' extra: pip install 'nomyo-audit[router]' ({exc})"
        ) from None
    from ..client import SecureChatCompletion
    from ..client.keys import generate_key_pair
    from ..tpm.swtpm import SwtpmProcess
    from .chat import describe_metadata

    say: Callable[[str], None] = (lambda text: click.echo(text, err=True)) if fmt == "json" else click.echo
    if attester == "auto":
        attester = "swtpm" if _tpm2_usable() else "software"
        if attester == "software":
            say("swtpm or tpm2-pytss is not available: using the SOFTWARE attester (not hardware-rooted).")
    with contextlib.ExitStack() as stack:
        spec = attester
        if attester == "swtpm":
            spec = stack.enter_context(SwtpmProcess()).spec
            say(f"started a software TPM (swtpm) at {spec.split(':', 1)[1]}")
        say("generating the router's RSA-4096 key...")
        config = RouterConfig(private_key=generate_key_pair().private_key, attester=make_attester(spec))
        router = stack.enter_context(RouterThread(config))
        say(f"reference router listening on {router.url} (built-in echo model, attester: {attester})")

        async def run() -> list[dict[str, Any]]:
            async with SecureChatCompletion(router.url, allow_http=True) as client:
                replies = []
                for prompt in DEMO_PROMPTS:
                    messages = [{"role": "user", "content": prompt}]
                    replies.append(await client.create("echo", messages, security_tier="high"))
                return replies

        replies = asyncio.run(run())
    if fmt == "json":
        click.echo(json.dumps(replies, indent=2))
        return
    for prompt, reply in zip(DEMO_PROMPTS, replies, strict=True):
        click.echo(f"\n> {prompt}")
        click.echo(reply["choices"][0]["message"]["content"])
        click.echo("  " + describe_metadata(reply["_metadata"]).replace("\n", "\n  "))
    click.echo("\nrouter and TPM stopped; nothing left running.")
