"""The ``nomyo-audit`` command line; :func:`main` is the console script."""

from ._main import cli, main

__all__ = ["cli", "main"]
