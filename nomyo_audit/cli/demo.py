"""``nomyo-audit demo``: the whole loop on loopback, with nothing to prepare."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import click

from ..errors import ConfigurationError

DEMO_PROMPTS = (
    "Summarise our Q3 incident report.",
    "Draft a reply to the auditor.",
)


@click.command()
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def demo(fmt: str) -> None:
    """Start the reference router on loopback and send encrypted chats through it.

    Everything runs in this process on 127.0.0.1 and stops when it ends.

    \b
    Example:
      nomyo-audit demo
    """
    try:
        from ..router import RouterConfig, RouterThread
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigurationError(
            f"the demo needs the 'router' extra: pip install 'nomyo-audit[router]' ({exc})"
        ) from None
    from ..client import SecureChatCompletion
    from ..client.keys import generate_key_pair
    from .chat import describe_metadata

    say = (lambda text: click.echo(text, err=True)) if fmt == "json" else click.echo
    say("generating the router's RSA-4096 key...")
    config = RouterConfig(private_key=generate_key_pair().private_key)
    with RouterThread(config) as router:
        say(f"reference router listening on {router.url} (built-in echo model)")

        async def run() -> list[dict[str, Any]]:
            async with SecureChatCompletion(router.url, allow_http=True) as client:
                replies = []
                for prompt in DEMO_PROMPTS:
                    replies.append(
                        await client.create(
                            "echo", [{"role": "user", "content": prompt}], security_tier="high"
                        )
                    )
                return replies

        replies = asyncio.run(run())
    if fmt == "json":
        click.echo(json.dumps(replies, indent=2))
        return
    for prompt, reply in zip(DEMO_PROMPTS, replies, strict=False):
        click.echo(f"\n> {prompt}")
        click.echo(reply["choices"][0]["message"]["content"])
        click.echo("  " + describe_metadata(reply["_metadata"]))
        click.echo("  _metadata: " + json.dumps(reply["_metadata"], indent=2).replace("\n", "\n  "))
    click.echo("\nrouter stopped; nothing left running.")
