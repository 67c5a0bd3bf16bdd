"""The click group and the CLI's single exit path.

Every command raises :class:`nomyo_audit.errors.NomyoAuditError` (or a
click usage error) instead of exiting itself; :func:`main` turns that into a
one-line ``error[code]: message`` on stderr and the documented exit status
(docs/ci.md): 0 ok, 1 finding, 2 usage or invalid input, 3 integrity, 4 internal.
"""

from __future__ import annotations

import difflib
import functools
import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import click
import jsonschema
import yaml
from jsonschema.exceptions import ValidationError

from .._version import __version__
from ..errors import ConfigurationError, ExitCode, NomyoAuditError
from ._bundle import bundle
from ._ca import ca_group
from ._chat import chat
from ._demo import demo
from ._eventlog import eventlog_group
from ._log import keys_group, log_group
from ._log_tiles import log_serve, log_tiles
from ._policy import policy_group
from ._report import report, verify_report
from ._serve import serve
from ._verify import verify
from ._witness import witness_group  # also adds 'log witness' and 'log cosign'


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nomyo-audit")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="NOMYO_AUDIT_CONFIG",
    help="YAML defaults per command, keyed by flag name (flags and environment win).",
)
@click.pass_context
def cli(ctx: click.Context, config_file: Path | None) -> None:
    """Encrypted LLM inference you can prove and audit.

    Settings come from flags, then environment variables (NOMYO_BASE_URL,
    NOMYO_API_KEY, NOMYO_AUDIT_LOG, NOMYO_POLICY), then the config file
    (--config, $NOMYO_AUDIT_CONFIG, or ./nomyo-audit.yaml if present): one
    mapping per command, keyed by the command's flags (verify: {policy: ...}).

    \b
    Example:
      nomyo-audit demo
    """
    path = config_file or (Path("nomyo-audit.yaml") if Path("nomyo-audit.yaml").is_file() else None)
    if path is not None:
        ctx.default_map = default_map(load_config(path), cli)


# -- the config file ---------------------------------------------------------------------------

#: A config file is a few lines; anything larger is a mistake (or an attack on the parser).
CONFIG_MAX_BYTES = 1 << 20

#: Settings that must never come from a file, and where they come from instead.
SECRET_KEYS = {
    ("chat", "api_key"): "NOMYO_API_KEY",
    ("serve", "api_key"): "NOMYO_ROUTER_API_KEYS",
    ("serve", "upstream_api_key"): "NOMYO_UPSTREAM_API_KEY",
}

_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "a boolean (true or false)",
}


def config_schema() -> dict[str, Any]:
    """The JSON Schema of the config file (shipped as nomyo_audit/cli/config.schema.json)."""
    schema: dict[str, Any] = json.loads(
        resources.files(__package__).joinpath("config.schema.json").read_text()
    )
    return schema


def load_config(path: Path) -> dict[str, Any]:
    """The validated config file: ``{command: {flag: value}}``, e.g. ``chat: {base_url: ...}``.

    Every problem is a :class:`ConfigurationError` that names ``file:line``:
    a file that is not UTF-8 text or not YAML, YAML aliases, a key given twice,
    an unknown command or flag, a value of the wrong type, an API key.
    """
    text = _read_config_text(path)
    node, data = _parse_config(path, text)
    if data is None:
        return {}
    errors = sorted(
        _config_validator().iter_errors(data),
        key=lambda e: (_error_line(node, e), [str(p) for p in e.absolute_path]),
    )
    if errors:
        raise ConfigurationError(f"{path}:{_error_line(node, errors[0])}: {_describe(errors[0])}")
    result: dict[str, Any] = data
    return result


def default_map(config: dict[str, Any], group: click.Group) -> dict[str, Any]:
    """click's ``default_map`` for a validated config: flag names become parameter names.

    click looks defaults up by parameter name (``verify --policy`` is ``policy_file``),
    while the file is keyed by flag (``verify: {policy: ...}``), as docs/ci.md shows.
    """
    result: dict[str, Any] = {}
    for name, settings in config.items():
        command = group.commands[name]
        if isinstance(command, click.Group):
            result[name] = default_map(settings or {}, command)
        else:
            parameters = _parameters_by_flag(command)
            result[name] = {parameters[key]: value for key, value in (settings or {}).items()}
    return result


def _parameters_by_flag(command: click.Command) -> dict[str, str]:
    """``{"policy": "policy_file", "base_url": "base_url", "pin_aik": "pin_aik", ...}``."""
    found: dict[str, str] = {}
    for param in command.params:
        if isinstance(param, click.Option) and param.name is not None:
            for opt in [*param.opts, *param.secondary_opts]:
                if opt.startswith("--"):
                    found.setdefault(opt[2:].replace("-", "_"), param.name)
    return found


def _read_config_text(path: Path) -> str:
    try:
        with path.open("rb") as file:
            raw = file.read(CONFIG_MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read the config file: {exc.strerror or exc}") from None
    if len(raw) > CONFIG_MAX_BYTES:
        raise ConfigurationError(f"{path}: larger than {CONFIG_MAX_BYTES // 1024} KiB; not a config file")
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigurationError(f"{path}:{line}: not UTF-8 text (byte {exc.start})") from None


class _ConfigLoader(yaml.SafeLoader):
    """YAML's safe loader, but an unquoted date or time stays text: it means what the flag's text means."""


_ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _parse_config(path: Path, text: str) -> tuple[yaml.Node | None, Any]:
    """The YAML node tree (for line numbers) and the data, without expanding anything."""
    try:
        loader = _ConfigLoader(text)  # checks every character first
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        problem = f"{exc.reason} (#x{exc.character:04x})"
        raise ConfigurationError(f"{path}:{line}: not valid YAML: {problem}") from None
    try:
        node = loader.get_single_node()
        if node is not None:
            _check_nodes(path, node)
        return node, (loader.construct_document(node) if node is not None else None)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise ConfigurationError(f"{path}:{line}: not valid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{path}: not valid YAML: {exc}") from None
    except RecursionError:
        raise ConfigurationError(f"{path}: nested too deeply to be a config file") from None
    finally:
        loader.dispose()


def _check_nodes(path: Path, root: yaml.Node) -> None:
    """Refuse aliases (a few lines can expand to gigabytes) and keys given twice."""
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    while stack:
        node, where = stack.pop()
        if id(node) in seen:
            line = node.start_mark.line + 1
            raise ConfigurationError(f"{path}:{line}: YAML aliases (*name) are not allowed in config files")
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys: set[str] = set()
            for key, value in node.value:
                name = str(key.value)
                if name in keys:
                    place = f"{where}: " if where else ""
                    raise ConfigurationError(
                        f"{path}:{key.start_mark.line + 1}: {place}{name!r} is given twice"
                    )
                keys.add(name)
                stack.append((key, where))
                stack.append((value, f"{where}.{name}" if where else name))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, where) for item in node.value)


@functools.lru_cache(maxsize=1)
def _config_validator() -> jsonschema.protocols.Validator:
    schema = config_schema()
    validator: jsonschema.protocols.Validator = jsonschema.validators.validator_for(schema)(schema)
    return validator


def _find(node: yaml.Node | None, path: list[Any]) -> tuple[yaml.Node | None, yaml.Node | None]:
    """(key node, value node) at ``path`` in the YAML tree; (None, root) for the root."""
    key: yaml.Node | None = None
    for step in path:
        if isinstance(node, yaml.MappingNode):
            key, node = next(((k, v) for k, v in node.value if str(k.value) == str(step)), (None, None))
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            key, node = None, node.value[step]
        else:
            return None, None
    return key, node


def _error_line(root: yaml.Node | None, error: ValidationError) -> int:
    path = list(error.absolute_path)
    if error.validator == "additionalProperties":
        extra = _unknown_keys(error)
        if extra:
            path.append(extra[0])
        key, node = _find(root, path)
        target = key or node
    else:
        _, target = _find(root, path)
    return target.start_mark.line + 1 if target is not None else 1


def _unknown_keys(error: ValidationError) -> list[str]:
    allowed = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
    instance = error.instance if isinstance(error.instance, dict) else {}
    return [str(key) for key in instance if key not in allowed]


def _describe(error: ValidationError) -> str:
    where = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {})) if isinstance(error.schema, dict) else []
        unknown = _unknown_keys(error)[0]
        if (where, unknown) in SECRET_KEYS:
            return f"keep API keys out of config files; use {SECRET_KEYS[(where, unknown)]}"
        what = f"unknown key {unknown!r} in {where}" if where else f"unknown command {unknown!r}"
        close = difflib.get_close_matches(unknown, allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(allowed)})"
        return what + hint
    place = f"{where}: " if where else ""
    if error.validator == "type":
        types = _list(error.validator_value)
        if "object" in types:
            expected = "a mapping of option: value" if where else "a mapping of command -> {option: value}"
        else:
            expected = " or ".join(_TYPE_NAMES[t] for t in types if t in _TYPE_NAMES)
        return f"{place}expected {expected}, got {_shown(error.instance)}"
    if error.validator == "enum":
        choices = ", ".join(str(choice) for choice in _list(error.validator_value))
        return f"{place}expected one of {choices}, got {_shown(error.instance)}"
    return f"{place}{error.message}"


def _list(value: object) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


cli.add_command(serve)
cli.add_command(chat)
cli.add_command(demo)
cli.add_command(verify)
cli.add_command(policy_group)
cli.add_command(log_group)
log_group.add_command(log_tiles)
log_group.add_command(log_serve)
cli.add_command(keys_group)
cli.add_command(report)
cli.add_command(ca_group)
cli.add_command(verify_report)
cli.add_command(eventlog_group)
cli.add_command(bundle)
cli.add_command(witness_group)


def main(argv: list[str] | None = None) -> int:
    """Run the command line on ``argv`` (default ``sys.argv[1:]``) and return its exit status.

    The ``nomyo-audit`` console script, and the way to run a command from Python
    or a test. It raises nothing: every error becomes a message on stderr and a
    fixed status (:class:`nomyo_audit.errors.ExitCode`): 0 OK, 1 a finding (a
    verification failed, a policy denied), 2 usage or input, 3 integrity, 4 an
    internal error, 130 interrupted.
    """
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
    except OSError as exc:
        if exc.filename is None:
            click.echo(f"internal error: {type(exc).__name__}: {exc}", err=True)
            return ExitCode.INTERNAL
        click.echo(f"error[file_system]: {describe_os_error(exc)}", err=True)
        return ExitCode.USAGE
    except Exception as exc:  # an internal error is never reported as a finding
        click.echo(f"internal error: {type(exc).__name__}: {exc}", err=True)
        return ExitCode.INTERNAL
    return status if isinstance(status, int) else ExitCode.OK


def describe_os_error(exc: OSError) -> str:
    """``out/report.xml: No such file or directory``: the file and what the system said, no traceback."""
    names = str(exc.filename) + (f" -> {exc.filename2}" if exc.filename2 is not None else "")
    return f"{names}: {exc.strerror or exc}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
