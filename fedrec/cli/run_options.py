"""Command-line options generated from the fields of :class:`RunConfig`.

A command that trains (``fedrec simulate``, ``fedrec server run``) declares a parameter
``run: RunOptions`` and is decorated with :func:`run_options`. The decorator replaces that
parameter by one typer option per ``RunConfig`` field whose metadata (see
:func:`fedrec.core.config.run_config.knob`) names the command, plus a repeatable
``--run-config KEY=VALUE`` for every other run-config key, and hands the parsed values to the
command as a :class:`RunOptions`. Typer reads a command's options from its signature, so the
decorator gives the wrapper a generated ``__signature__``.

A new run-config key is therefore one field in ``run_config.py``: its option appears here by
itself, with the field's name in kebab case (``client_optimizer`` → ``--client-optimizer``),
its default, its help, its choices as the metavar and, for a ``bool``, a
``--flag/--no-flag`` pair.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

import click
import typer
from click.core import ParameterSource

from fedrec.core.config.run_config import CLI_COMMANDS, RunConfig, user_config_field

RUN_CONFIG_PARAM = "run_config"  # the name of the generated --run-config option
# The default of a command's ``run`` parameter where Python needs one (after parameters with
# defaults); never used: the decorator replaces the parameter.
GENERATED: Any = None


@dataclass(frozen=True)
class RunOptions:
    """What a command received for its run config.

    ``values``: every generated option's value by field name (``None``: an optional option
    that was not given). ``given``: the fields whose option was on the command line.
    ``extra``: the ``--run-config`` entries, by field name, already typed.
    """

    values: Mapping[str, Any]
    given: frozenset[str]
    extra: Mapping[str, Any]

    def get(self, name: str) -> Any:
        """The value of the generated option for field ``name`` (``None``: not given)."""
        return self.values[name]

    def overrides(self) -> dict[str, Any]:
        """Field name → value for building a :class:`RunConfig`: the options (those not
        given keep their command-line default) and, over them, ``--run-config``."""
        chosen = {name: value for name, value in self.values.items() if value is not None}
        return {**chosen, **self.extra}

    def resume_overrides(self) -> dict[str, Any]:
        """The run-config keys a resumed run takes: only ``rounds``, when given (a resumed run
        keeps its config, or its privacy accounting would no longer describe it)."""
        if self.extra:
            raise ValueError("--run-config cannot change a resumed run: it keeps its config "
                             "(only --rounds may grow)")
        rounds = self.values.get("rounds")
        return {} if rounds is None else {"rounds": rounds}


def option_fields(command: str, config_class: type = RunConfig) -> list[dataclasses.Field]:
    """The fields of ``config_class`` that ``command`` has an option for, in field order."""
    if command not in CLI_COMMANDS:
        raise ValueError(f"unknown command {command!r}: choose from {CLI_COMMANDS}")
    return [f for f in dataclasses.fields(config_class) if command in f.metadata.get("cli", ())]


def option_name(field: dataclasses.Field) -> str:
    """The option of ``field`` on the command line: ``--`` and its name in kebab case."""
    return "--" + field.name.replace("_", "-")


def _parameter(command: str, field: dataclasses.Field, kind: type) -> inspect.Parameter:
    """The typer parameter (an ``inspect.Parameter`` with a ``typer.Option`` default) of
    ``field``, of type ``kind``, on ``command``."""
    meta = field.metadata
    special = meta.get("per_command", {}).get(command, {})
    help_text = special.get("help", meta.get("help", "")).replace("{default}", str(field.default))
    default = None if meta.get("optional") else special.get("default", field.default)
    choices = meta.get("choices", ())
    # no declared names: typer derives --name-in-kebab-case, and --flag/--no-flag for a bool
    option = typer.Option(default, help=help_text, metavar=f"[{'|'.join(choices)}]" if choices else None)
    annotation = Optional[kind] if meta.get("optional") else kind
    return inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)


def _run_config_parameter() -> inspect.Parameter:
    option = typer.Option(None, "--run-config", metavar="KEY=VALUE",
                          help="set any run-config key, as flwr run --run-config does (the keys of "
                               "pyproject's tool.flwr.app.config), e.g. negatives=8; repeat for several")
    return inspect.Parameter(RUN_CONFIG_PARAM, inspect.Parameter.KEYWORD_ONLY, default=option,
                             annotation=Optional[list[str]])


def parse_run_config(entries: list[str] | None, reserved: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``KEY=VALUE`` entries as field name → typed value.

    A key must be a run-config key (an unknown one is a ``ValueError`` that names the known
    keys), set at most once, and neither internal (set by fedrec itself) nor in
    ``reserved`` (field name → why the command sets it itself). A value may be quoted, as
    ``flwr run`` writes strings.
    """
    parsed: dict[str, Any] = {}
    for entry in entries or ():
        key, sep, raw = entry.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep or not key:
            raise ValueError(f"expected KEY=VALUE, got {entry!r}")
        if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
            raw = raw[1:-1]
        name, value = user_config_field(key, raw)
        field = next(f for f in dataclasses.fields(RunConfig) if f.name == name)
        if field.metadata.get("internal"):
            raise ValueError(f"run-config key {key!r} is set by fedrec itself")
        if reserved and name in reserved:
            raise ValueError(f"run-config key {key!r}: {reserved[name]}")
        if name in parsed:
            raise ValueError(f"run-config key {key!r} is given twice")
        parsed[name] = value
    return parsed


def _check_optional(field: dataclasses.Field, value: Any) -> None:
    """A given optional option (no default on the command line) must be positive."""
    if value is None or value > 0:
        return
    bound = "≥ 1" if isinstance(value, int) else "> 0"
    raise click.UsageError(f"{option_name(field)} must be {bound}, got {value}")


def run_options(command: str, reserved: Mapping[str, str] | None = None,
                config_class: type = RunConfig) -> Callable[[Callable], Callable]:
    """Decorate a typer command whose parameter ``run: RunOptions`` stands for the run config.

    In the command's signature, ``run`` is replaced by the generated options of
    ``command`` (one of :data:`CLI_COMMANDS`) and ``--run-config``; the other parameters
    keep their place. ``reserved``: fields the command sets itself (field name → the reason
    ``--run-config`` gives when refusing them). ``config_class``: the dataclass whose fields
    are read (:class:`RunConfig`; another in tests).
    """
    fields = option_fields(command, config_class)
    kinds = typing.get_type_hints(config_class)
    names = {f.name for f in fields}

    def decorate(func: Callable) -> Callable:
        hints = typing.get_type_hints(func)
        own = inspect.signature(func).parameters
        if "run" not in own:
            raise TypeError(f"{func.__name__} has no parameter run: RunOptions")
        clash = (names | {RUN_CONFIG_PARAM}) & (set(own) - {"run"})
        if clash:
            raise TypeError(f"{func.__name__}: parameters {sorted(clash)} clash with generated run options")
        parameters: list[inspect.Parameter] = []
        for param in own.values():
            if param.name == "run":
                parameters += [_parameter(command, f, kinds[f.name]) for f in fields]
                parameters.append(_run_config_parameter())
            else:
                parameters.append(param.replace(kind=inspect.Parameter.KEYWORD_ONLY,
                                                annotation=hints.get(param.name, param.annotation)))

        @functools.wraps(func)
        def wrapper(**kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in names}
            for f in fields:
                if f.metadata.get("optional"):
                    _check_optional(f, values[f.name])
            try:
                extra = parse_run_config(kwargs.pop(RUN_CONFIG_PARAM), reserved)
            except ValueError as err:
                raise click.BadParameter(str(err), param_hint="'--run-config'") from err
            given = _given(values)
            twice = sorted(given & set(extra))
            if twice:
                raise click.UsageError(f"{', '.join(option_name(f) for f in fields if f.name in twice)} "
                                       "also given with --run-config: give each key once")
            return func(run=RunOptions(values=values, given=given, extra=extra), **kwargs)

        wrapper.__signature__ = inspect.Signature(parameters, return_annotation=hints.get("return", None))
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": hints.get("return")}
        return wrapper

    return decorate


def _given(values: Mapping[str, Any]) -> frozenset[str]:
    """The fields among ``values`` whose option came from the command line (or the
    environment), not from its default."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return frozenset(name for name, value in values.items() if value is not None)
    explicit = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT, ParameterSource.PROMPT)
    return frozenset(name for name in values if ctx.get_parameter_source(name) in explicit)
