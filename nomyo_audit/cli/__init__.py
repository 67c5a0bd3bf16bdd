"""The ``nomyo-audit`` command line: :func:`main` runs it and returns the exit status.

:data:`cli` is the click group, for embedding the commands in another click
application or calling them with ``click.testing.CliRunner``. The commands parse
options, call the library (:mod:`nomyo_audit.policy`, :mod:`nomyo_audit.audit`,
:mod:`nomyo_audit.client`, :mod:`nomyo_audit.router`) and print: the logic lives
there, not here.
"""

from ._main import cli, main

__all__ = ["cli", "main"]
