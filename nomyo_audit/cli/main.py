"""The click group and the CLI's single exit path.

Every command raises :class:`~nomyo_audit.errors.NomyoAuditError` (or a
click usage error) instead of exiting itself; :func:`main` turns that into a
one-line ``error[code]: message`` on stderr and the documented exit status
(docs/ci.md): 0 ok, 1 finding, 2 usage or invalid input, 3 integrity, 4 internal.
"""

from __future__ import annotations

import sys

import click

from .._version import __version__
from ..errors import ExitCode, NomyoAuditError
from .chat import chat
from .demo import demo
from .log import keys_group, log_group
from .policy import policy_group
from .report import report, verify_report
from .serve import serve
from .verify import verify


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nomyo-audit")
def cli() -> None:
    """Encrypted LLM inference you can prove and audit.

    \b
    Example:
      nomyo-audit demo
    """


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
        cli.main(args=argv, prog_name="nomyo-audit", standalone_mode=False)
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
    return ExitCode.OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
