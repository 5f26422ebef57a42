"""The run-config options of ``fedrec simulate`` and ``fedrec server run`` come from
:class:`RunConfig`'s fields, and ``--run-config KEY=VALUE`` reaches every key."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import click
import pytest
import typer
from typer.testing import CliRunner

from fedrec.cli.main import app
from fedrec.cli.run_options import (
    RunOptions,
    option_fields,
    parse_run_config,
    run_options,
)
from fedrec.core.config.run_config import (
    CLI_COMMANDS,
    SERVER_RUN,
    SIMULATE,
    RunConfig,
    knob,
)

runner = CliRunner()
COMMAND_PATHS = {SIMULATE: ("simulate",), SERVER_RUN: ("server", "run")}


def flat(output: str) -> str:
    """Output with rich's boxes and line breaks gone, to search for a phrase."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", output).split())


def click_command(command: str) -> click.Command:
    group = typer.main.get_command(app)
    for name in COMMAND_PATHS[command]:
        group = group.commands[name]  # type: ignore[attr-defined]
    return group


def marked(command: str) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(RunConfig) if command in f.metadata.get("cli", ())]


@pytest.mark.parametrize("command", CLI_COMMANDS)
def test_every_marked_field_is_an_option_with_its_default(command: str) -> None:
    params = {p.name: p for p in click_command(command).params}
    assert marked(command), "no field is marked for the command"
    assert [f.name for f in option_fields(command)] == [f.name for f in marked(command)]
    for f in marked(command):
        param = params[f.name]
        flag = "--" + f.name.replace("_", "-")
        assert flag in param.opts, (f.name, param.opts)
        special = f.metadata["per_command"].get(command, {})
        expected = None if f.metadata["optional"] else special.get("default", f.default)
        assert param.default == expected, f.name
        if f.metadata["choices"]:
            assert param.metavar == f"[{'|'.join(f.metadata['choices'])}]"
        if isinstance(f.default, bool):
            assert param.secondary_opts == ["--no-" + f.name.replace("_", "-")]
    help_text = runner.invoke(app, [*COMMAND_PATHS[command], "--help"], env={"COLUMNS": "250"}).output
    for f in marked(command):
        assert "--" + f.name.replace("_", "-") in help_text


@pytest.mark.parametrize("command", CLI_COMMANDS)
def test_fields_not_marked_have_no_generated_option(command: str) -> None:
    own = {SIMULATE: {"resume"}, SERVER_RUN: {"catalogue", "resume"}}[command]  # the commands' own options
    params = {p.name for p in click_command(command).params}
    unmarked = {f.name for f in dataclasses.fields(RunConfig)} - {f.name for f in marked(command)}
    assert params & unmarked <= own


def test_the_options_keep_their_names_and_defaults() -> None:
    """A few of the options the CLI had before they were generated, as the README uses them."""
    sim = {p.name: p for p in click_command(SIMULATE).params}
    assert sim["clients_per_round"].opts == ["--clients-per-round"] and sim["clients_per_round"].default == 100
    assert sim["client_optimizer"].default == "sgd" and sim["lr"].default == 2.0 and sim["rounds"].default is None
    assert sim["adaptive_clip"].opts == ["--adaptive-clip"] and sim["adaptive_clip"].default is False
    server = {p.name: p for p in click_command(SERVER_RUN).params}
    assert server["checkpoint_every"].default == 1 and server["round_timeout"].default == 120.0
    assert "dataset" not in server and "batch_size" not in server


@dataclasses.dataclass(frozen=True)
class WithNewKey(RunConfig):
    """RunConfig with one more key, as a later edit of run_config.py would add it."""

    momentum: float = knob(0.9, "client optimiser momentum", cli=(SIMULATE,))
    nesterov: bool = knob(False, "Nesterov momentum", cli=(SIMULATE,))
    schedule: str = knob("constant", "learning-rate schedule", cli=(SIMULATE,), choices=("constant", "cosine"))


def test_a_new_field_becomes_an_option_by_itself() -> None:
    seen: dict[str, RunOptions] = {}

    @run_options(SIMULATE, config_class=WithNewKey)
    def probe(run: RunOptions, out: str = typer.Option("")) -> None:
        seen["run"] = run

    probe_app = typer.Typer()
    probe_app.command()(probe)
    probe_app.command("other")(lambda: None)  # (a group, so that commands are invoked by name)
    params = {p.name: p for p in typer.main.get_command(probe_app).commands["probe"].params}
    assert set(params) == {f.name for f in option_fields(SIMULATE)} | {"momentum", "nesterov", "schedule",
                                                                       "run_config", "out"}
    assert params["momentum"].opts == ["--momentum"] and params["momentum"].default == 0.9
    assert params["nesterov"].secondary_opts == ["--no-nesterov"]
    assert params["schedule"].metavar == "[constant|cosine]"
    result = runner.invoke(probe_app, ["probe", "--momentum", "0.5", "--nesterov", "--lr", "0.3",
                                       "--run-config", "eval-k=20"])
    assert result.exit_code == 0, result.output
    run = seen["run"]
    assert run.given == {"momentum", "nesterov", "lr"} and run.extra == {"eval_k": 20}
    values = run.overrides()
    assert (values["momentum"], values["nesterov"], values["lr"], values["eval_k"]) == (0.5, True, 0.3, 20)
    assert values["schedule"] == "constant" and "rounds" not in values  # defaults; optional ones not given


@pytest.fixture
def simulated(monkeypatch) -> list[RunConfig]:
    """``fedrec simulate`` with the simulation replaced by one that records its config."""
    import fedrec.simulations.simulate as simulate_module

    configs: list[RunConfig] = []

    def fake_simulate(config: RunConfig, out_dir: Path, **_: Any) -> dict[str, Any]:
        configs.append(config)
        return {"rounds": config.rounds, "config": config.to_user_config()}

    monkeypatch.setattr(simulate_module, "simulate", fake_simulate)
    return configs


def test_run_config_sets_a_key(simulated: list[RunConfig], tmp_path: Path) -> None:
    result = runner.invoke(app, ["simulate", "--out", str(tmp_path), "--run-config", "lr=0.5",
                                 "--run-config", "negatives=8", "--run-config", "client-optimizer='sgd'",
                                 "--dim", "16"])
    assert result.exit_code == 0, result.output
    [config] = simulated
    assert (config.lr, config.negatives, config.client_optimizer, config.dim) == (0.5, 8, "sgd", 16)
    assert config.rounds == RunConfig().rounds and config.epsilon == 0.0  # optional options not given


def test_options_build_the_config(simulated: list[RunConfig], tmp_path: Path) -> None:
    result = runner.invoke(app, ["simulate", "--out", str(tmp_path), "--rounds", "3", "--dp", "user-central",
                                 "--epsilon", "4", "--adaptive-clip", "--executor", "cohort", "--eval-fraction",
                                 "0.5", "--clients-per-round", "7"])
    assert result.exit_code == 0, result.output
    [config] = simulated
    assert (config.rounds, config.dp, config.epsilon, config.adaptive_clip, config.executor) == \
        (3, "user-central", 4.0, True, "cohort")
    assert (config.eval_fraction, config.clients_per_round, config.noise_multiplier) == (0.5, 7, 0.0)


def test_unknown_run_config_key_names_the_known_keys(simulated: list[RunConfig], tmp_path: Path) -> None:
    result = runner.invoke(app, ["simulate", "--out", str(tmp_path), "--run-config", "learning-rate=0.5"])
    assert result.exit_code == 2
    text = flat(result.output)
    assert "unknown run-config key 'learning-rate'" in text
    assert "known keys:" in text and "client-optimizer" in text and "lr," in text
    assert not simulated


@pytest.mark.parametrize(("entry", "message"), [
    ("lr", "expected KEY=VALUE"),
    ("dim=big", "run-config dim: expected int"),
    ("out-dir=/elsewhere", "set by fedrec itself"),
    ("catalogue=items.txt", "fedrec server run --catalogue"),
])
def test_bad_run_config_entries_are_refused(simulated: list[RunConfig], tmp_path: Path, entry: str,
                                            message: str) -> None:
    result = runner.invoke(app, ["simulate", "--out", str(tmp_path), "--run-config", entry])
    assert result.exit_code == 2
    assert message in flat(result.output)
    assert not simulated


def test_run_config_is_validated_by_run_config(simulated: list[RunConfig], tmp_path: Path) -> None:
    result = runner.invoke(app, ["simulate", "--out", str(tmp_path), "--run-config", "eval-k=0"])
    assert result.exit_code == 2 and "eval-k must be ≥ 1" in result.output
    assert not simulated


def test_an_option_and_run_config_for_one_key_is_an_error(simulated: list[RunConfig], tmp_path: Path) -> None:
    result = runner.invoke(app, ["simulate", "--out", str(tmp_path), "--lr", "0.1", "--run-config", "lr=0.5"])
    assert result.exit_code == 2 and "--lr also given with --run-config" in flat(result.output)
    assert not simulated


def test_optional_options_must_be_positive_when_given(simulated: list[RunConfig], tmp_path: Path) -> None:
    for flag in ("--epsilon", "--noise-multiplier"):
        result = runner.invoke(app, ["simulate", "--out", str(tmp_path), flag, "0"])
        assert result.exit_code == 2 and f"{flag} must be > 0" in flat(result.output)
    assert not simulated


def test_run_config_cannot_change_a_resumed_run(simulated: list[RunConfig], tmp_path: Path) -> None:
    result = runner.invoke(app, ["simulate", "--resume", str(tmp_path), "--run-config", "lr=0.5"])
    assert result.exit_code == 2 and "cannot change a resumed run" in flat(result.output)


def test_server_run_sends_the_generated_options(monkeypatch, tmp_path: Path) -> None:
    import fedrec.server.superlink as superlink

    sent: list[dict[str, Any]] = []

    def fake_submit(state_dir: Path, run_config: dict[str, Any], log_path: Path, **_: Any) -> int:
        sent.append(run_config)
        return 1

    monkeypatch.setattr(superlink, "submit_run", fake_submit)
    catalogue = tmp_path / "items.txt"
    catalogue.write_text("i1\ni2\n")
    result = runner.invoke(app, ["server", "run", "--catalogue", str(catalogue), "--state", str(tmp_path / "s"),
                                 "--name", "r1", "--lr", "0.2", "--run-config", "eval-k=5"])
    assert result.exit_code == 2 and "the run failed" in result.output  # the fake's exit code
    [user_config] = sent
    assert RunConfig.from_user_config(user_config) == RunConfig(
        dataset="deployment", catalogue=str(catalogue.resolve()), out_dir=user_config["out-dir"], lr=0.2,
        eval_k=5, checkpoint_every=1, round_timeout=120.0)
    refused = runner.invoke(app, ["server", "run", "--catalogue", str(catalogue), "--state", str(tmp_path / "s"),
                                  "--run-config", "dataset=ml-100k"])
    assert refused.exit_code == 2 and "data stays on the devices" in flat(refused.output)
    assert len(sent) == 1


def test_parse_run_config() -> None:
    assert parse_run_config(['model="gmf"', " dim = 16 ", "adaptive-clip=true"]) == \
        {"model": "gmf", "dim": 16, "adaptive_clip": True}
    assert parse_run_config(None) == {}
    with pytest.raises(ValueError, match="given twice"):
        parse_run_config(["lr=0.1", "lr=0.2"])
    with pytest.raises(ValueError, match="known keys: accountant, adaptive-clip"):
        parse_run_config(["nope=1"])
