"""Tests for the run config's sections (privacy, evaluation, deployment) and the import graph."""

from __future__ import annotations

import dataclasses
import functools
import pickle
import subprocess
import sys

import pytest

from fedrec.core.config.deployment_section import DeploymentConfig
from fedrec.core.config.evaluation_section import EvaluationConfig
from fedrec.core.config.privacy_section import ACCOUNTANTS, DP_MODES, PrivacyConfig
from fedrec.core.config.run_config import RunConfig
from fedrec.core.privacy import accounting

SECTIONS = {"privacy": PrivacyConfig, "evaluation": EvaluationConfig, "deployment": DeploymentConfig}


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_a_section_is_made_of_run_config_fields_with_their_defaults(name: str) -> None:
    section = SECTIONS[name]
    run_fields = {f.name: f for f in dataclasses.fields(RunConfig)}
    for f in dataclasses.fields(section):
        assert f.name in run_fields, f"{section.__name__}.{f.name} is not a run-config key"
        assert f.default == run_fields[f.name].default, f.name
        assert str(f.type) == str(run_fields[f.name].type), f.name
    assert getattr(RunConfig(), name) == section()


def test_no_key_is_in_two_sections() -> None:
    names = [f.name for section in SECTIONS.values() for f in dataclasses.fields(section)]
    assert len(names) == len(set(names))


def test_sections_carry_the_run_configs_values_and_are_cached() -> None:
    config = RunConfig(dp="user-central", epsilon=4.0, clip=0.5, adaptive_clip=True, eval_k=5, eval_every=2,
                       min_nodes=3, round_timeout=60.0, catalogue="/tmp/items.txt")
    assert config.privacy == PrivacyConfig(dp="user-central", epsilon=4.0, clip=0.5, adaptive_clip=True)
    assert config.evaluation == EvaluationConfig(eval_every=2, eval_k=5)
    assert config.deployment == DeploymentConfig(min_nodes=3, round_timeout=60.0, catalogue="/tmp/items.txt")
    assert config.privacy is config.privacy and config.training is config.training
    assert RunConfig.privacy.__doc__  # the class attribute is the view, documented
    assert config.privacy.enabled and not RunConfig().privacy.enabled
    # a replaced config builds its own sections
    assert dataclasses.replace(config, eval_k=20).evaluation.eval_k == 20


def test_the_cached_sections_leave_equality_hashing_and_the_user_config_alone() -> None:
    fresh, read = RunConfig(dp="record", epsilon=1.0), RunConfig(dp="record", epsilon=1.0)
    read.privacy, read.evaluation, read.deployment, read.training  # noqa: B018 (fill the caches)
    assert fresh == read and hash(fresh) == hash(read)
    assert read.to_user_config() == fresh.to_user_config() and "privacy" not in read.to_user_config()
    assert pickle.loads(pickle.dumps(read)) == read
    assert set(vars(read)) == {f.name for f in dataclasses.fields(RunConfig)}
    assert RunConfig(**{**vars(read), "resume": True}) == dataclasses.replace(read, resume=True)

    @functools.lru_cache(maxsize=None)
    def calls(config: RunConfig) -> object:
        return object()

    assert calls(fresh) is calls(read)


@pytest.mark.parametrize(("section", "values", "message"), [
    (PrivacyConfig, {"dp": "sometimes"}, "unknown dp mode"),
    (PrivacyConfig, {"accountant": "moments"}, "unknown accountant"),
    (PrivacyConfig, {"dp": "record"}, "needs --epsilon"),
    (PrivacyConfig, {"dp": "user-local", "epsilon": 1.0, "delta": 1.0}, "delta must be in"),
    (PrivacyConfig, {"dp": "user-local", "epsilon": 1.0, "clip": 0.0}, "clip must be > 0"),
    (PrivacyConfig, {"dp": "user-local", "epsilon": 1.0, "adaptive_clip": True}, "user-central only"),
    (PrivacyConfig, {"dp": "user-local", "epsilon": 1.0, "dp_participations": -1}, "dp-participations"),
    (PrivacyConfig, {"dp": "record", "epsilon": 1.0, "record_sample_rate": 0.0}, "record-sample-rate"),
    (PrivacyConfig, {"dp": "user-central", "epsilon": 1.0, "clip_quantile": 1.0}, "clip-quantile"),
    (PrivacyConfig, {"dp": "user-central", "epsilon": 1.0, "eval_noise_multiplier": -1.0}, "eval-noise-multiplier"),
    (EvaluationConfig, {"eval_k": 0}, "eval-k must be ≥ 1"),
    (EvaluationConfig, {"eval_every": 0}, "eval-every must be ≥ 1"),
    (EvaluationConfig, {"eval_negatives": 0}, "eval-negatives must be ≥ 1"),
    (EvaluationConfig, {"eval_fraction": 0.0}, "eval-fraction"),
    (EvaluationConfig, {"reconstruct_epochs": -1}, "reconstruct-epochs"),
    (DeploymentConfig, {"checkpoint_every": 0}, "checkpoint-every must be ≥ 1"),
    (DeploymentConfig, {"min_valid_updates": 0}, "min-nodes and min-valid-updates"),
])
def test_a_section_validates_its_keys(section: type, values: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        section(**values)
    # ... and the run config, which builds every section at construction, refuses them too
    with pytest.raises(ValueError, match=message):
        RunConfig(**values)


def test_dp_off_leaves_the_mechanism_keys_unchecked() -> None:
    assert PrivacyConfig(clip=0.0, delta=2.0).dp == "off"


def test_checks_across_sections_stay_with_the_run_config() -> None:
    PrivacyConfig(dp="user-local", epsilon=1.0, dp_participations=10)  # the section cannot know the rounds
    with pytest.raises(ValueError, match=r"dp-participations must be in 0..rounds \(5\)"):
        RunConfig(dp="user-local", epsilon=1.0, dp_participations=10)
    assert RunConfig(dp="record", epsilon=1.0, executor="cohort").executor == "cohort"  # vectorised since stop 25


def test_the_privacy_constants_have_one_definition() -> None:
    from fedrec.core.config import run_config

    assert accounting.ACCOUNTANTS is ACCOUNTANTS and run_config.ACCOUNTANTS is ACCOUNTANTS
    assert run_config.DP_MODES is DP_MODES


@pytest.mark.parametrize(("module", "must_not_load"), [
    ("fedrec.core.config.run_config", "fedrec.core.privacy"),
    ("fedrec.core.config.privacy_section", "fedrec.core.privacy"),
    ("fedrec.core.privacy.plan", "fedrec.core.config.run_config"),
    ("fedrec.core.privacy.accounting", "fedrec.core.config.run_config"),
])
def test_the_run_config_and_the_privacy_modules_do_not_import_each_other(module: str, must_not_load: str) -> None:
    code = (f"import sys, {module}; loaded = [m for m in sys.modules if m == {must_not_load!r} "
            f"or m.startswith({must_not_load!r} + '.')]; print(loaded); assert not loaded")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
