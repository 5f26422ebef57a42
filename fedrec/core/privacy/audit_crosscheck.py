"""Cross-checks of a run's privacy ledger against the run's other files.

The ledger's chain, anchors, signatures and ε recompute (:mod:`fedrec.core.privacy.audit`)
show that the ledger is consistent with itself. These checks show that it is the ledger
*of this run*: every number in it is what the run was configured and planned to do.

Files read (all optional except the plan, which a DP run always writes at its start):

* ``privacy_plan.json`` — :func:`fedrec.core.privacy.plan.privacy_plan` as the server
  wrote it (keys ``mode, unit, relation, accountant, delta, budget, n_units, rounds,
  train{noise_multiplier, sensitivity, clip, sample_rate, steps, who}, evaluate{…}``, an
  optional ``run_id``);
* ``run_config.json`` — the run config (run-config keys, ``-`` separated), written by the
  simulation CLI; a deployed server may have none;
* ``summary.json`` — written when the run finished (``rounds``, ``config``);
* ``checkpoint/state.json`` — the latest checkpoint (``round``, ``config``);
* ``metrics.jsonl`` — one line per completed round (``round``, the ledger anchor).

Checks (each disagreement is one problem string naming the row, round or file):

* δ: every row's, the plan's, run_config's, summary's and the checkpoint's config δ are
  equal, and δ < 1/n_units (the plan's n_units);
* every row: ``relation == MODE_RELATION[mode]`` and the plan's; mode, unit and
  accountant the plan's; budget the plan's (a removed or raised budget is caught); σ,
  sensitivity, q and steps those of the plan's section for the row's release
  (``train``/``evaluate``), clip norm the plan's ``clip``; under adaptive clipping
  (``adaptive-clip``) the clip norm moves, so a train row's sensitivity must be its own
  ``clip_norm`` (``2·clip_norm`` for user-local) instead; who is the server or a client as
  the plan's section says; the row's run id is the plan's (when the plan names one);
* user-central: exactly one server train row for each completed round (the rounds of
  ``metrics.jsonl``), none missing and none extra (dropping a round's row is caught);
  rows of rounds that never completed are a finding too, except after the last
  completed round (a crash between the ledger and the metrics write);
* the plan's rounds equal run_config's; summary's ``rounds`` and the checkpoint's round
  are rounds ``metrics.jsonl`` completed, the summary's the last one, and the final
  round's metrics line carries an anchor;
* when :func:`fedrec.core.privacy.plan.privacy_plan` is importable and run_config.json
  exists: the plan is recomputed from the run config and the plan's n_units and every
  number must agree to 1e-9 relative (so an edited plan must come with an edited config,
  which the signed heads' ``config_sha256`` then catches).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from fedrec.core.privacy.ledger_chain import ANCHOR_HEAD, ANCHOR_ROWS
from fedrec.core.privacy.ledger_rows import DISTRIBUTED_MODES, SERVER, LedgerRow
from fedrec.core.privacy.modes import MODE_RELATION
from fedrec.core.run_files import METRICS_FILE, SUMMARY_FILE

PLAN_FILE = "privacy_plan.json"
CONFIG_FILE = "run_config.json"  # fedrec.simulations.simulate.CONFIG_FILE (not imported: Flower)
CHECKPOINT_STATE = Path("checkpoint") / "state.json"  # fedrec.server.checkpoint layout
REL = 1e-9
# 2·C for a replace-one train release (one clipped update replaced by another), C otherwise
TRAIN_SENSITIVITY_FACTOR = {"record": 1.0, "user-local": 2.0, "user-central": 1.0}


class CrossCheckError(ValueError):
    """A run file exists but cannot be read as JSON of the expected shape."""


@dataclass
class RunFiles:
    """The run's files besides the ledger, read once (``None``: the file is absent)."""

    run_dir: Path
    plan: dict[str, Any] | None
    config: dict[str, Any] | None
    summary: dict[str, Any] | None
    checkpoint: dict[str, Any] | None
    metrics: list[dict[str, Any]] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.summary is not None

    @property
    def completed_rounds(self) -> list[int]:
        return [line["round"] for line in self.metrics if _is_int(line.get("round"))]


def read_run_files(run_dir: Path, metrics: Sequence[dict[str, Any]]) -> RunFiles:
    """Read the plan, config, summary and checkpoint state (``CrossCheckError`` if malformed)."""
    run_dir = Path(run_dir)
    return RunFiles(run_dir, _json(run_dir / PLAN_FILE), _json(run_dir / CONFIG_FILE),
                    _json(run_dir / SUMMARY_FILE), _json(run_dir / CHECKPOINT_STATE), list(metrics))


def _json(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise CrossCheckError(f"{path}: cannot read it ({error})") from error
    except json.JSONDecodeError as error:
        raise CrossCheckError(f"{path}: not JSON ({error.msg}, line {error.lineno})") from error
    if not isinstance(value, dict):
        raise CrossCheckError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def same(a: Any, b: Any, rel: float = REL) -> bool:
    """Numbers equal to ``rel`` relative (None only equals None)."""
    if a is None or b is None:
        return a is None and b is None
    if not (_is_num(a) and _is_num(b)):
        return a == b
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= rel * max(abs(a), abs(b))


def crosscheck(files: RunFiles, rows: Sequence[LedgerRow]) -> tuple[list[str], list[str]]:
    """(problems, notes) of the ledger ``rows`` against the run's files."""
    problems: list[str] = []
    notes: list[str] = []
    plan = files.plan
    if plan is None:
        if rows:
            problems.append(f"{PLAN_FILE} is missing: the run's rows cannot be checked against what it "
                            "planned (a DP run writes it at its start)")
        _check_rounds(files, rows, problems, notes)
        return problems, notes
    plan_problems = _plan_shape(plan)
    if plan_problems:
        return [f"{PLAN_FILE}: {p}" for p in plan_problems], notes
    _check_delta(files, rows, problems)
    _check_rows(files, rows, problems)
    _check_rounds(files, rows, problems, notes)
    _check_config(files, problems, notes)
    return problems, notes


def _plan_shape(plan: dict[str, Any]) -> list[str]:
    missing = [k for k in ("mode", "relation", "accountant", "delta", "budget", "n_units", "rounds", "train")
               if k not in plan]
    if missing:
        return [f"lacks keys {missing}"]
    if plan["mode"] not in MODE_RELATION:
        return [f"unknown mode {plan['mode']!r}"]
    for release in ("train", "evaluate"):
        section = plan.get(release)
        if section is None and release == "evaluate":
            continue
        if not isinstance(section, dict):
            return [f"'{release}' is not an object"]
        lacking = [k for k in ("noise_multiplier", "sensitivity", "sample_rate", "steps", "who") if k not in section]
        if lacking:
            return [f"'{release}' lacks keys {lacking}"]
    if not (_is_num(plan["delta"]) and _is_int(plan["n_units"]) and plan["n_units"] > 0):
        return [f"delta {plan['delta']!r} / n_units {plan['n_units']!r} are not numbers"]
    return []


def _config_value(config: dict[str, Any] | None, key: str) -> Any:
    return None if config is None else config.get(key)


def _check_delta(files: RunFiles, rows: Sequence[LedgerRow], problems: list[str]) -> None:
    plan = files.plan
    assert plan is not None
    delta, n_units = plan["delta"], plan["n_units"]
    if not delta < 1 / n_units:
        problems.append(f"{PLAN_FILE}: δ={delta:g} is not below 1/n_units = {1 / n_units:.3g} "
                        f"(n_units={n_units}): such a δ allows releasing some unit's data outright")
    sources = [(CONFIG_FILE, files.config), (f"{SUMMARY_FILE} config", (files.summary or {}).get("config")),
               (f"{CHECKPOINT_STATE} config", (files.checkpoint or {}).get("config"))]
    for name, config in sources:
        if isinstance(config, dict) and "delta" in config and not same(config["delta"], delta):
            problems.append(f"{name}: δ={config['delta']!r} but {PLAN_FILE} says δ={delta!r}")
    for row in rows:
        if not same(row.delta, delta):
            problems.append(f"row seq={row.seq} (round {row.round}, {row.who}): δ={row.delta:g} but {PLAN_FILE} "
                            f"says δ={delta:g}")
            if not row.delta < 1 / n_units:
                problems.append(f"row seq={row.seq} (round {row.round}, {row.who}): δ={row.delta:g} is not below "
                                f"1/n_units = {1 / n_units:.3g}")


def _adaptive(files: RunFiles) -> bool:
    for config in (files.config, (files.summary or {}).get("config"), (files.checkpoint or {}).get("config")):
        if isinstance(config, dict) and "adaptive-clip" in config:
            return bool(config["adaptive-clip"])
    return bool(files.plan and (files.plan.get("adaptive_clip") or files.plan["train"].get("adaptive_clip")))


def _check_rows(files: RunFiles, rows: Sequence[LedgerRow], problems: list[str]) -> None:
    plan = files.plan
    assert plan is not None
    mode = plan["mode"]
    adaptive = _adaptive(files)
    if plan["relation"] != MODE_RELATION[mode]:
        problems.append(f"{PLAN_FILE}: relation {plan['relation']!r} but mode {mode!r} is stated under "
                        f"{MODE_RELATION[mode]!r}")
    run_id = plan.get("run_id")
    for row in rows:
        where = f"row seq={row.seq} (round {row.round}, {row.who}, {row.release})"
        said: list[str] = []

        def differ(name: str, value: Any, planned: Any) -> None:
            if not same(value, planned):
                said.append(f"{name}={value!r} but the plan says {planned!r}")

        if run_id is not None and row.run_id != run_id:
            said.append(f"run id {row.run_id!r} but {PLAN_FILE} names run {run_id!r}: a ledger of another run")
        differ("mode", row.mode, mode)
        if "unit" in plan:
            differ("unit", row.unit, plan["unit"])
        if row.relation != MODE_RELATION.get(row.mode):
            said.append(f"relation {row.relation!r} but mode {row.mode!r} is stated under "
                        f"{MODE_RELATION.get(row.mode)!r}")
        differ("relation", row.relation, plan["relation"])
        differ("accountant", row.accountant, plan["accountant"])
        differ("budget", row.budget, plan["budget"])
        section = plan.get(row.release)
        if not isinstance(section, dict):
            said.append(f"a {row.release!r} release, which the plan has no section for")
        else:
            differ("noise_multiplier", row.noise_multiplier, section["noise_multiplier"])
            differ("sample_rate", row.sample_rate, section["sample_rate"])
            differ("steps", row.steps, section["steps"])
            if section["who"] == "server" and row.who != SERVER:
                said.append(f"who={row.who!r} but the plan's {row.release} releases are the server's")
            if section["who"] == "client" and row.who == SERVER:
                said.append(f"who='server' but the plan's {row.release} releases are the clients'")
            if row.release == "train":
                factor = TRAIN_SENSITIVITY_FACTOR.get(row.mode, 1.0)
                # (the distributed modes: the sensitivity is a bound in grid units, checked against
                # the row's mechanism parameters by the ε recompute)
                if row.mode not in DISTRIBUTED_MODES and not same(row.sensitivity, factor * row.clip_norm):
                    said.append(f"sensitivity={row.sensitivity!r} but a {row.mode} train release of clip norm "
                                f"{row.clip_norm!r} has sensitivity {factor * row.clip_norm!r}")
                if not adaptive:
                    differ("sensitivity", row.sensitivity, section["sensitivity"])
                    if "clip" in section:
                        differ("clip_norm", row.clip_norm, section["clip"])
            else:
                differ("sensitivity", row.sensitivity, section["sensitivity"])
        if said:
            problems.append(f"{where}: " + "; ".join(said))


def _check_rounds(files: RunFiles, rows: Sequence[LedgerRow], problems: list[str], notes: list[str]) -> None:
    completed = files.completed_rounds
    last = max(completed, default=None)
    plan = files.plan or {}
    if plan.get("mode") == "user-central":
        trains: dict[int, list[int]] = {}
        for row in rows:
            if row.release == "train" and row.who == SERVER:
                trains.setdefault(row.round, []).append(row.seq)
        for round_ in completed:
            seqs = trains.get(round_, [])
            if len(seqs) != 1:
                problems.append(f"round {round_}: {len(seqs)} server train rows in the ledger "
                                f"({'seq ' + ', '.join(map(str, seqs)) if seqs else 'none'}), a completed "
                                "user-central round has exactly one (a row was dropped or added)")
        for round_, seqs in sorted(trains.items()):
            if round_ not in completed and (last is None or round_ < last):
                problems.append(f"round {round_}: server train row(s) seq {seqs} for a round {METRICS_FILE} "
                                "never completed")
    if rows and completed:
        tail = sorted({row.round for row in rows if last is not None and row.round > last})
        if tail:
            notes.append(f"ledger rows of round(s) {tail} after the last completed round {last}: allowed (a "
                         "crash between the ledger and the metrics write)")
    if files.summary is not None:
        rounds = files.summary.get("rounds")
        if rounds != last:
            problems.append(f"{SUMMARY_FILE}: rounds={rounds!r} but the last round {METRICS_FILE} completed is "
                            f"{last!r}")
        if last is not None:
            final = [line for line in files.metrics if line.get("round") == last]
            if not any(ANCHOR_ROWS in line and ANCHOR_HEAD in line for line in final) and (rows or plan):
                problems.append(f"round {last} (the final round): its {METRICS_FILE} line carries no ledger anchor")
    if files.checkpoint is not None:
        round_ = files.checkpoint.get("round")
        if round_ not in completed and round_ != 0:
            problems.append(f"{CHECKPOINT_STATE}: round={round_!r} is not a round {METRICS_FILE} completed "
                            f"(last completed: {last!r})")
    if plan and files.summary is not None and _is_int(plan.get("rounds")) and _is_int(last) \
            and last > plan["rounds"]:
        problems.append(f"{METRICS_FILE}: round {last} is past the plan's {plan['rounds']} rounds")


def _check_config(files: RunFiles, problems: list[str], notes: list[str]) -> None:
    plan = files.plan
    assert plan is not None
    config = files.config
    if config is None:
        notes.append(f"no {CONFIG_FILE} (a deployed server writes none): the plan was not checked against "
                     "the run config")
        return
    checks = [("dp", plan["mode"]), ("rounds", plan["rounds"])]
    if plan["mode"] not in DISTRIBUTED_MODES:  # (their accountant is ddg-zcdp whatever the config's says)
        checks.append(("accountant", plan["accountant"]))
    if "epsilon" in config:
        checks.append(("epsilon", plan["budget"] if plan["budget"] is not None else 0.0))
    for key, planned in checks:
        if key in config and not same(config[key], planned):
            problems.append(f"{CONFIG_FILE}: {key}={config[key]!r} but {PLAN_FILE} says {planned!r}")
    recomputed, why = recompute_plan(config, plan["n_units"])
    if recomputed is None:
        notes.append(f"the plan was not recomputed from {CONFIG_FILE}: {why}")
        return
    for path, ours, theirs in _differences(recomputed, plan):
        problems.append(f"{PLAN_FILE}: {path}={theirs!r} but the plan recomputed from {CONFIG_FILE} "
                        f"(n_units={plan['n_units']}) says {ours!r}")


def recompute_plan(config: dict[str, Any], n_units: int) -> tuple[dict[str, Any] | None, str]:
    """``plan.privacy_plan(RunConfig(config), n_units)`` as JSON would hold it, or (None, why)."""
    try:
        from fedrec.core.config.run_config import RunConfig
        from fedrec.core.privacy import plan as plan_module
    except ImportError as error:  # pragma: no cover - the package is whole
        return None, f"cannot import the planner ({error})"
    planner = getattr(plan_module, "privacy_plan", None)
    if planner is None:
        return None, "this fedrec's plan module has no privacy_plan()"
    try:
        run_config = RunConfig.from_user_config(config)
        planned = planner(run_config, int(n_units))
    except (ValueError, TypeError, KeyError) as error:
        return None, f"the planner refused the run config ({error})"
    return json.loads(json.dumps(planned, sort_keys=True)), ""


def _differences(ours: Any, theirs: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """Leaves where two JSON values differ (numbers to ``REL``); keys only in one side count."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        found = []
        for key in sorted(set(ours) | set(theirs)):
            if key == "run_id":  # the planner does not know the run id
                continue
            found += _differences(ours.get(key), theirs.get(key), f"{path}.{key}" if path else key)
        return found
    if isinstance(ours, list) and isinstance(theirs, list) and len(ours) == len(theirs):
        return [d for i, (a, b) in enumerate(zip(ours, theirs)) for d in _differences(a, b, f"{path}[{i}]")]
    return [] if same(ours, theirs) else [(path, ours, theirs)]
