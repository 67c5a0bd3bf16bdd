"""The click group and the CLI's single exit path.

Every command raises :class:`~nomyo_audit.errors.NomyoAuditError` (or a
click usage error) instead of exiting itself; :func:`main` turns that into a
one-line ``error[code]: message`` on stderr and the documented exit status
(docs/ci.md): 0 ok, 1 finding, 2 usage or invalid input, 3 integrity, 4 internal.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import yaml

from .._version import __version__
from ..errors import ConfigurationError, ExitCode, NomyoAuditError
from .chat import chat
from .demo import demo
from .log import keys_group, log_group
from .policy import policy_group
from .report import report, verify_report
from .serve import serve
from .verify import verify


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nomyo-audit")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="NOMYO_AUDIT_CONFIG",
    help="YAML defaults per command (flags and environment win).",
)
@click.pass_context
def cli(ctx: click.Context, config_file: Path | None) -> None:
    """Encrypted LLM inference you can prove and audit.

    Settings come from flags, then environment variables (NOMYO_BASE_URL,
    NOMYO_API_KEY, NOMYO_AUDIT_LOG, NOMYO_POLICY), then the config file
    (--config, $NOMYO_AUDIT_CONFIG, or ./nomyo-audit.yaml if present).

    \b
    Example:
      nomyo-audit demo
    """
    path = config_file or (Path("nomyo-audit.yaml") if Path("nomyo-audit.yaml").is_file() else None)
    if path is not None:
        ctx.default_map = load_config(path)


def load_config(path: Path) -> dict[str, Any]:
    """``{command: {option: value}}``, e.g. ``chat: {base_url: https://router.example}``."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"{path}: cannot read the config file ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ConfigurationError(f"{path}: expected a mapping of command -> {{option: value}}")
    if "api_key" in (data.get("chat") or {}):
        raise ConfigurationError(f"{path}: keep API keys out of config files; use NOMYO_API_KEY")
    return data


cli.add_command(serve)
cli.add_command(chat)
cli.add_command(demo)
cli.add_command(verify)
cli.add_command(policy_group)
cli.add_command(log_group)
cli.add_command(keys_group)
cli.add_command(report)
cli.add_command(verify_report)


def main(argv: list[str] | None = None) -> int:
    try:
        # Outside standalone mode click *returns* the code of a click.exceptions.Exit.
        status = cli.main(args=argv, prog_name="nomyo-audit", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return ExitCode.USAGE
    except click.ClickException as exc:
        exc.show()
        return ExitCode.USAGE
    except NomyoAuditError as exc:
        click.echo(f"error[{exc.code}]: {exc.message}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # an internal error is never reported as a finding
        click.echo(f"internal error: {type(exc).__name__}: {exc}", err=True)
        return ExitCode.INTERNAL
    return status if isinstance(status, int) else ExitCode.OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
