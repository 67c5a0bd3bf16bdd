"""``nomyo-audit ca init | enroll | serve``: the enrollment CA (docs/anchoring.md)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import ConfigurationError


@click.group("ca")
def ca_group() -> None:
    """An enrollment CA: AK certificates for AIKs proven to live in a genuine TPM.

    \b
    Example:
      nomyo-audit ca init ca/
      nomyo-audit ca enroll --ca ca/ --router http://127.0.0.1:12434 --tpm-roots roots/
    """


_CA_DIR = click.Path(file_okay=False, path_type=Path)
_ROOTS = click.Path(exists=True, file_okay=False, path_type=Path)
_AK_DAYS = click.option(
    "--days", default=30, show_default=True, type=click.IntRange(1, 3650), help="AK certificate validity."
)


@ca_group.command("init")
@click.argument("directory", type=_CA_DIR)
@click.option("--name", default="nomyo-audit enrollment CA", show_default=True, help="The CA's common name.")
@click.option("--days", default=3650, show_default=True, type=click.IntRange(1, 36500), help="CA validity.")
def ca_init(directory: Path, name: str, days: int) -> None:
    """Make a CA in DIRECTORY: ca.key (ECDSA P-256, 0600) and ca.pem (the root verifiers trust)."""
    from ..ca import init_authority

    authority = init_authority(directory, name, days=days)
    click.echo(f"CA {name!r} in {directory} (certificate sha256 {authority.sha256})", err=True)


@ca_group.command("enroll")
@click.option("--ca", "ca_dir", required=True, type=_CA_DIR, help="The CA directory (ca init).")
@click.option("--router", "router_url", required=True, help="The router's base URL.")
@click.option("--tpm-roots", required=True, type=_ROOTS, help="Directory of trusted TPM manufacturer roots.")
@click.option(
    "--admin-key",
    envvar="NOMYO_ROUTER_ADMIN_KEY",
    help="The router's admin key: hand it the chain (POST /pki/aik_certificate). Without: only -o.",
)
@_AK_DAYS
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Also write the chain here (PEM)."
)
def ca_enroll(
    ca_dir: Path, router_url: str, tpm_roots: Path, admin_key: str | None, days: int, output: Path | None
) -> None:
    """Enroll a running router: validate its EK certificate, activate a credential for its AIK,
    issue the AK certificate, and hand it over. Prints what was certified, as JSON."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from .._files import write_file
    from ..ca import enroll_router, load_authority
    from ..tpm import TrustStore

    if admin_key is None and output is None:
        raise ConfigurationError("give --admin-key (hand the chain to the router) or -o FILE (keep it)")
    result = enroll_router(router_url, load_authority(ca_dir), TrustStore.from_directory(tpm_roots),
                           admin_key=admin_key, days=days)  # fmt: skip
    if output is not None:
        pem = b"".join(x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM) for der in result.chain)
        write_file(output, pem, mode=0o644)
    click.echo(json.dumps({**result.facts, "installed": result.installed}, indent=2))


@ca_group.command("serve")
@click.option("--ca", "ca_dir", required=True, type=_CA_DIR, help="The CA directory (ca init).")
@click.option("--tpm-roots", required=True, type=_ROOTS, help="Directory of trusted TPM manufacturer roots.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=12435, show_default=True, type=click.IntRange(0, 65535))
@_AK_DAYS
def ca_serve(ca_dir: Path, tpm_roots: Path, host: str, port: int, days: int) -> None:
    """Serve enrollments: routers started with `serve --enroll URL` enroll themselves here."""
    import asyncio

    from ..ca import create_ca_app, load_authority
    from ..router._server import _serve, _uvicorn
    from ..tpm import TrustStore
    from ._serve import listen_on

    app = create_ca_app(load_authority(ca_dir), TrustStore.from_directory(tpm_roots), days=days)
    sock = listen_on(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    click.echo(f"nomyo-audit enrollment CA on http://{bound_host}:{bound_port}", err=True)
    try:
        asyncio.run(_serve(_uvicorn(app, "info", 256, 10.0), sock, _nothing))
    finally:
        sock.close()


async def _nothing() -> None:
    return None
