"""``serve``'s measured serving stack: its options, and the measurement made at start."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import click

from ..errors import ConfigurationError

__all__ = ["measure_at_start", "parse_measure_models", "quoted_pcrs"]

_DEFAULT_PCRS = "sha256:0,7,10"


def parse_measure_models(values: tuple[str, ...]) -> dict[str, Path | None]:
    """``NAME=PATH`` (local weights) or ``NAME`` (a model the upstream serves) per --measure-model."""
    models: dict[str, Path | None] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not name or (sep and not path) or name in models:
            raise click.BadParameter(
                f"{value!r}: expected NAME=PATH or NAME, each name once", param_hint="--measure-model"
            )
        if sep and not Path(path).exists():
            raise click.BadParameter(f"{value!r}: {path} does not exist", param_hint="--measure-model")
        models[name] = Path(path) if sep else None
    return models


def quoted_pcrs(pcrs: str | None, serving_pcr: str) -> str:
    """The --pcrs to quote: as given, or sha256:0,7,10 and the serving PCR."""
    if pcrs is not None:
        return pcrs
    return _DEFAULT_PCRS if serving_pcr == "none" else f"{_DEFAULT_PCRS},{serving_pcr}"


def measure_at_start(
    attester: object,
    serving_pcr: str,
    upstream: str | None,
    model_tiers: Mapping[str, tuple[str, ...]],
    models: Mapping[str, Path | None],
    pcrs: str,
) -> None:
    """Measure the serving stack into ``serving_pcr`` (not with ``--tpm none`` or ``--serving-pcr none``),
    saying on stderr when the quotes will not cover it."""
    from ..attest import TPMAttester
    from ..router._serving_stack import measure_serving_stack, serving_models

    if serving_pcr == "none" or not isinstance(attester, TPMAttester):
        if models:
            raise ConfigurationError("--measure-model needs an attester (--tpm) and a --serving-pcr")
        return
    index = int(serving_pcr)
    measure_serving_stack(attester, upstream, model_tiers, serving_models(upstream, models), index)
    if not any(index in s.indices for s in attester.selections):
        warning = f"warning: --pcrs {pcrs} does not quote PCR {index}: no reply proves the serving stack"
        click.echo(warning, err=True)
