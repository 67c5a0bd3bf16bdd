"""``nomyo-audit serve``: the reference router."""

from __future__ import annotations

import errno
import math
import socket
from pathlib import Path

import click
from cryptography.hazmat.primitives.asymmetric import rsa

from ..attest._endorsement import EK_CHOICES
from ..errors import ConfigurationError


def _parse_model_tiers(values: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    from ..wire import SECURITY_TIERS

    result: dict[str, tuple[str, ...]] = {}
    for value in values:
        pattern, sep, tiers = value.partition("=")
        names = tuple(t.strip() for t in tiers.split(",") if t.strip())
        if not sep or not pattern or not names or any(t not in SECURITY_TIERS for t in names):
            raise click.BadParameter(
                f"{value!r}: expected MODEL_GLOB=TIER[,TIER...] with tiers from {', '.join(SECURITY_TIERS)}",
                param_hint="--model-tiers",
            )
        result[pattern] = names
    return result


def _finite_seconds(ctx: click.Context, param: click.Parameter, value: float) -> float:
    """A deadline in seconds: positive and finite (asyncio takes NaN as no wait at all, inf as forever)."""
    if not math.isfinite(value) or value <= 0:
        raise click.BadParameter(f"{value} is not a positive, finite number of seconds")
    return value


def _aik_source(value: str, tpm_spec: str) -> str:
    """``auto`` (the default) means the router's own AIK for a TPM that cannot hold a cloud anchor."""
    return "ephemeral" if value == "auto" and not tpm_spec.startswith(("swtpm", "device")) else value


def load_or_create_router_key(path: Path | None) -> rsa.RSAPrivateKey:
    """The router's RSA-4096 key: loaded from ``path``, or generated (and saved there, 0600)."""
    from ..client._keys import generate_key_pair, load_key_pair, save_private_key

    if path is not None and path.exists():
        return load_key_pair(path).private_key
    key = generate_key_pair().private_key
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_private_key(key, path)
    return key


def listen_on(host: str, port: int) -> socket.socket:
    """The bound, listening socket, or a :class:`ConfigurationError` (exit 2) saying why not."""
    from ..router._server import bind_socket

    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        return bind_socket(host, port)
    except socket.gaierror:
        reason = f"the host name {host!r} does not resolve"
        raise ConfigurationError(f"cannot listen on {where}: {reason}", code="listen") from None
    except OSError as exc:
        raise ConfigurationError(f"cannot listen on {where}: {_bind_failure(exc)}", code="listen") from None


def _bind_failure(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "the address is already in use (choose another --port, or --port 0 for a free one)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "that address is not one of this machine's (check --host)"
    if exc.errno == errno.EACCES:
        return "permission denied (ports below 1024 need privileges)"
    return exc.strerror or type(exc).__name__


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=12434, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Router private key PEM; generated there (0600) if missing. Default: ephemeral.",
)
@click.option(
    "--api-key",
    "api_keys",
    multiple=True,
    envvar="NOMYO_ROUTER_API_KEYS",
    help="Accepted bearer key (repeatable). None configured: no authentication.",
)
@click.option("--upstream", help="OpenAI-compatible base URL to forward to (default: built-in echo model).")
@click.option("--upstream-api-key", envvar="NOMYO_UPSTREAM_API_KEY", help="Bearer key for --upstream.")
@click.option(
    "--model-tiers",
    multiple=True,
    metavar="GLOB=TIER[,TIER]",
    help="Tiers a model may use, e.g. 'gpt-4*=high,maximum' (repeatable); 403 otherwise.",
)
@click.option(
    "--tpm",
    "tpm_spec",
    default="none",
    show_default=True,
    metavar="none|software|swtpm:host=H,port=P|device:/dev/tpmrm0",
    help="Attester for every response's tpm_attestation (software: in-process, not hardware-rooted).",
)
@click.option(
    "--aik",
    default="rsa2048-rsassa",
    show_default=True,
    type=click.Choice(["rsa2048-rsassa", "rsa2048-rsapss", "ecc256-ecdsa"]),
    help="Kind of the ephemeral attestation key.",
)
@click.option(
    "--aik-parent",
    default="primary",
    show_default=True,
    type=click.Choice(["primary", "ek"]),
    help="Make the AIK a primary key, or a child of the EK (as tpm2_createak does).",
)
@click.option(
    "--aik-source",
    default="auto",
    show_default=True,
    metavar="auto|ephemeral|cloud|persistent:HANDLE",
    help="Quote with the cloud's certified AK (auto: when the vTPM holds a cloud anchor; see docs).",
)
@click.option(
    "--ek",
    default="auto",
    show_default=True,
    type=click.Choice(list(EK_CHOICES)),
    help="The EK served and used for activation (auto: the first with a certificate, low range first).",
)
@click.option(
    "--platform-evidence",
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSON with the platform fields the vTPM lacks (TD quote, VCEK...; docs/cloud-anchors.md).",
)
@click.option(
    "--pcrs",
    metavar="BANK:PCRS",
    help="PCR selection to quote.  [default: sha256:0,7,10 and the --serving-pcr]",
)
@click.option(
    "--serving-pcr",
    default="23",
    show_default=True,
    type=click.Choice(["23", "none"]),
    help="Reset this PCR at start and measure the serving stack into it (docs/serving-stack.md).",
)
@click.option(
    "--measure-model",
    "measure_models",
    multiple=True,
    metavar="NAME[=PATH]",
    help="Measure a served model: its weights (file or directory) at PATH, or by name (--upstream).",
)
@click.option(
    "--admin-key",
    "admin_keys",
    multiple=True,
    envvar="NOMYO_ROUTER_ADMIN_KEYS",
    help="Key that may install an AK certificate chain (nomyo-audit ca enroll; repeatable).",
)
@click.option("--enroll", metavar="CA_URL", help="Enroll the AIK with `nomyo-audit ca serve` at start.")
@click.option(
    "--plain-endpoint",
    is_flag=True,
    hidden=True,
    help="Also serve plaintext /v1/chat/completions (benchmark baseline only).",
)
@click.option(
    "--max-connections",
    default=1024,
    show_default=True,
    type=click.IntRange(1),
    help="Connections served at once; more get 503 and are closed.",
)
@click.option(
    "--header-timeout",
    default=10.0,
    show_default=True,
    type=float,
    callback=_finite_seconds,
    help="Seconds for a request's headers to arrive before the connection is closed.",
)
@click.option(
    "--body-timeout",
    default=60.0,
    show_default=True,
    type=float,
    callback=_finite_seconds,
    help="Seconds for a request's body to arrive; then 408 and the connection is closed.",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
def serve(
    host: str,
    port: int,
    key_file: Path | None,
    api_keys: tuple[str, ...],
    upstream: str | None,
    upstream_api_key: str | None,
    model_tiers: tuple[str, ...],
    tpm_spec: str,
    aik: str,
    aik_parent: str,
    aik_source: str,
    ek: str,
    platform_evidence: Path | None,
    pcrs: str | None,
    serving_pcr: str,
    measure_models: tuple[str, ...],
    admin_keys: tuple[str, ...],
    enroll: str | None,
    plain_endpoint: bool,
    max_connections: int,
    header_timeout: float,
    body_timeout: float,
    log_level: str,
) -> None:
    """Run the reference router (NOMYO protocol 1.0) on HOST:PORT.

    \b
    Example:
      nomyo-audit serve --port 12434 --tpm swtpm:host=127.0.0.1,port=2321
    """
    try:
        from ..router import EchoBackend, RouterConfig, UpstreamBackend, run_router
        from ..router._attestation import make_attester
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigurationError(
            f"the router needs the 'router' extra: pip install 'nomyo-audit[router]' ({exc})"
        ) from None
    from ._serving import measure_at_start, parse_measure_models, quoted_pcrs

    tiers = _parse_model_tiers(model_tiers)
    measured = parse_measure_models(measure_models)
    pcrs = quoted_pcrs(pcrs, serving_pcr)
    sock = listen_on(host, port)
    try:
        backend = UpstreamBackend(upstream, upstream_api_key) if upstream else EchoBackend()
        config = RouterConfig(
            private_key=load_or_create_router_key(key_file),
            backend=backend,
            api_keys=api_keys,
            model_tiers=tiers,
            plain_endpoint=plain_endpoint,
            attester=make_attester(
                tpm_spec, aik, pcrs, aik_parent, ek, platform_evidence, _aik_source(aik_source, tpm_spec)
            ),
            max_connections=max_connections,
            header_timeout=header_timeout,
            body_timeout=body_timeout,
            admin_keys=admin_keys,
        )
        measure_at_start(config.attester, serving_pcr, upstream, tiers, measured, pcrs)
        if enroll is not None:  # docs/anchoring.md: the chain for this process's AIK
            from ..ca import enroll_with_ca

            enroll_with_ca(enroll, config.attester)
    except BaseException:
        sock.close()
        raise
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    # Printed once the socket listens, with the real port (--port 0 picks one): a script may connect now.
    what = f"backend: {upstream or 'echo'}, attester: {tpm_spec}"
    click.echo(f"nomyo-audit router on http://{shown}:{bound_port} ({what})", err=True)
    run_router(config, log_level=log_level, sock=sock)
