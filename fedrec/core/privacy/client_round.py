"""A client's round under a DP mode: train, apply the mode's mechanism, account, budget.

For each user the client holds (no Flower here; the ClientApp and the pure-torch loop
call :func:`private_train_users`):

* ``record`` — DP-SGD through Opacus (:mod:`fedrec.core.privacy.record_level`); the
  user's accountant history gains ``(σ, q, steps)``;
* ``user-local`` — the ordinary local round, then ``clip(Δ, C) + N(0, σ²C²)``; the
  history gains ``(σ/2, 1, 1)``: the relation is replace-one (sensitivity ``2C``, see
  :mod:`fedrec.core.privacy.plan`);
* ``user-central`` — the ordinary local round, then ``clip(Δ, C)``; the server adds the
  noise and keeps the accountant, so the client's history does not change.

Budget: before training, a user whose history plus this round's steps would exceed the
ε budget **refuses** (trains nothing, releases nothing) and says so in its
:class:`Release`. The ε reported after a round is that user's accountant on its whole
history — every round it took part in, never restarted.

Randomness: record sampling and all noise come from a
:class:`~fedrec.core.privacy.secure_random.SecureRandom` keyed from the OS; tests pass
one with a fixed key. The ordinary local training of the user-level modes
keeps its seeded generator: the guarantee rests on clipping and noise, not on it.
Every user weighs 1 in the node's mean update (see :mod:`fedrec.core.privacy.aggregation`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Sequence

from fedrec.core.arrays import Arrays
from fedrec.core.data.split import UserData
from fedrec.core.families.registry import family_of
from fedrec.core.privacy import plan
from fedrec.core.privacy.accounting import Step, epsilon
from fedrec.core.privacy.mechanisms import add_gaussian_noise, clip_update
from fedrec.core.privacy.secure_random import SecureRandom, secure_generator
from fedrec.core.training.cohort import CohortResult, empty_result
from fedrec.core.training.device import resolve_device
from fedrec.core.training.local_round import LocalResult, user_round

if TYPE_CHECKING:  # annotations only: the run config is not imported at run time (no import cycle)
    from fedrec.core.config.run_config import RunConfig


class PrivateRound(NamedTuple):
    """A node's private round: the summed result, each due user's release, the new
    histories (same order as the users given), and how many users' updates were within
    the clip norm (user-central: the bits of adaptive clipping)."""

    result: CohortResult
    releases: list["Release"]
    histories: list[list[Step]]
    within_clip: int


@dataclass(frozen=True)
class Release:
    """What one user spent (or refused to spend) this round."""

    user: int
    refused: bool
    noise_multiplier: float
    sample_rate: float
    steps: int
    epsilon: float  # the user's ε after this round (its ε so far when it refused)
    within_clip: bool = False  # user-central: ‖Δ‖ ≤ C (adaptive clipping's bit)


def user_local_release(update: Arrays, config: RunConfig, generator: SecureRandom) -> tuple[Arrays, float]:
    """What a ``user-local`` client releases: ``clip(Δ, C) + N(0, (σC)²)`` on every entry, σ
    the mechanism's (:func:`fedrec.core.privacy.plan.local_noise`); and ``‖Δ‖`` before clipping.
    Two datasets of the user can give releases whose means are ``2C`` apart (replace-one), so
    one release is accounted as ``(σ/2, 1, 1)``."""
    clipped, norm = clip_update(update, config.clip)
    return add_gaussian_noise(clipped, plan.local_noise(config) * config.clip, generator), norm


def planned_step(config: RunConfig, n_records: int) -> Step:
    """The accounted ``(σ, q, steps)`` this user's round would apply (client-side accounting
    modes). The same for every user: nothing in it depends on ``n_records`` (which is only
    checked to be positive by the callers)."""
    if config.dp in ("record", "user-local"):
        return plan.training_step(config)
    raise ValueError(f"dp {config.dp} is not accounted on the client")


def budgeted(config: RunConfig, user: int, history: Sequence[Step], step: Step) -> tuple[Release, list[Step] | None]:
    """One release of ``step`` by ``user``: the release (ε after it) and the new history, or —
    when the step would take the user past the budget — its refusal (ε so far) and ``None``."""
    after = [*history, step]
    spent = epsilon(after, config.delta, config.accountant)
    budget = plan.budget(config.privacy)
    if budget is not None and spent > budget * (1 + 1e-9):
        return Release(int(user), True, step[0], step[1], 0, epsilon(list(history), config.delta,
                                                                      config.accountant)), None
    return Release(int(user), False, step[0], step[1], step[2], spent), after


def refusal(config: RunConfig, user: UserData, history: list[Step]) -> tuple[Step, Release | None]:
    """This user's planned step, and its refusal when the step would exceed the budget."""
    step = planned_step(config, len(user.train_items))
    release, after = budgeted(config, user.user, history, step)
    return step, (release if after is None else None)


def private_user_round(config: RunConfig, global_arrays: Arrays, stored_local: Arrays | None, user: UserData,
                       server_round: int, history: list[Step],
                       generator: SecureRandom | None = None) -> tuple[LocalResult | None, Release, list[Step]]:
    """One user's private round: ``(result or None if refused, release, new history)``.

    Under user-central the release's ``within_clip`` says whether ``‖Δ‖ ≤ C``."""
    generator = generator if generator is not None else secure_generator()
    if config.dp == "user-central":
        one = user_round(config, global_arrays, stored_local, user, server_round)
        clipped, norm = clip_update(one.update, config.clip)
        return (LocalResult(clipped, one.local, one.num_examples, one.loss),
                Release(user.user, False, 0.0, 0.0, 0, 0.0, norm <= config.clip), history)
    step, refused = refusal(config, user, history)
    if refused is not None:
        return None, refused, history
    if config.dp == "user-local":
        one = user_round(config, global_arrays, stored_local, user, server_round)
        noised, _ = user_local_release(one.update, config, generator)
        result = LocalResult(noised, one.local, one.num_examples, one.loss)
        applied = [step]
    else:
        from fedrec.core.privacy.record_level import RecordDP, train_user_private
        from fedrec.core.training.local_round import new_local_parameters

        local = stored_local
        if local is None:
            local = new_local_parameters(config.model, user.n_items, config.dim, config.seed, user.user)
        result, applied = train_user_private(
            config.model, config.dim, global_arrays, local, user, config.training, config.local_epochs,
            config.user_epochs, generator, RecordDP(noise_multiplier=step[0], clip=config.clip,
                                                     accountant=config.accountant, sample_rate=step[1],
                                                     divisor=float(config.batch_size)),
            device=resolve_device(config.device))
    new_history = [*history, *applied]
    steps = sum(s for _, _, s in applied)
    return result, Release(user.user, False, step[0], step[1], steps,
                           epsilon(new_history, config.delta, config.accountant)), new_history


def private_train_users(config: RunConfig, global_arrays: Arrays, stored: Sequence[Arrays | None],
                        users: Sequence[UserData], server_round: int, histories: Sequence[list[Step]],
                        generator: SecureRandom | None = None) -> PrivateRound:
    """Every user's private round; the node's result weighs each trained user 1."""
    if not len(stored) == len(users) == len(histories):
        raise ValueError("one stored-locals entry and one history per user are required")
    if config.executor == "cohort" or family_of(config.model).name != "implicit":
        return _cohort_private(config, global_arrays, stored, users, server_round, histories, generator)
    result = empty_result(global_arrays)
    releases: list[Release] = []
    new_histories: list[list[Step]] = []
    for local, user, history in zip(stored, users, histories):
        if len(user.train_items) == 0 and config.dp != "record":
            # (record: a user without records runs the same noise-only steps, else removing
            # a user's last record would show)
            new_histories.append(history)
            continue
        one, release, history = private_user_round(config, global_arrays, local, user, server_round, history,
                                                   generator)
        releases.append(release)
        new_histories.append(history)
        if one is None:
            continue
        for name, value in one.update.items():
            result.update_sum[name] += value
        result.weight += 1
        result.users.append(user.user)
        result.locals.append(one.local)
        result.num_examples.append(one.num_examples)
        result.losses.append(one.loss)
    return PrivateRound(result, releases, new_histories, sum(r.within_clip for r in releases))


def _cohort_private(config: RunConfig, global_arrays: Arrays, stored: Sequence[Arrays | None],
                    users: Sequence[UserData], server_round: int, histories: Sequence[list[Step]],
                    generator: SecureRandom | None) -> PrivateRound:
    """User-level modes with the cohort executor, or any family but the implicit one: the
    family's round over the users whose budget allows it (one vectorised pass for the
    implicit family), each user's ``Δ`` clipped (and, user-local, noised) before the sum."""
    if config.dp == "record":
        return _record_cohort(config, global_arrays, stored, users, histories)
    generator = generator if generator is not None else secure_generator()
    allowed, releases, new_histories = [], {}, list(histories)
    for b, (user, history) in enumerate(zip(users, histories)):
        if len(user.train_items) == 0:
            continue
        if config.dp == "user-central":
            allowed.append(b)
            releases[b] = Release(user.user, False, 0.0, 0.0, 0, 0.0)
            continue
        releases[b], after = budgeted(config, user.user, history, planned_step(config, len(user.train_items)))
        if after is None:
            continue
        allowed.append(b)
        new_histories[b] = after

    within = []

    def mechanism(update: Arrays) -> Arrays:
        if config.dp == "user-central":
            clipped, norm = clip_update(update, config.clip)
            within.append(norm <= config.clip)
            return clipped
        released, norm = user_local_release(update, config, generator)
        within.append(norm <= config.clip)
        return released

    result = family_of(config.model).train_users(config, global_arrays, [stored[b] for b in allowed],
                                                 [users[b] for b in allowed], server_round,
                                                 update_transform=mechanism)
    return PrivateRound(result, [releases[b] for b in sorted(releases)], new_histories, int(sum(within)))


def _record_cohort(config: RunConfig, global_arrays: Arrays, stored: Sequence[Arrays | None],
                   users: Sequence[UserData], histories: Sequence[list[Step]],
                   generators: Sequence[SecureRandom] | None = None) -> PrivateRound:
    """``record`` with the cohort executor: every user whose budget allows the round trains
    at once (:func:`fedrec.core.privacy.record_cohort.train_users_private`, the per-client
    arithmetic vectorised), each from its own OS-keyed generator (``generators``: tests)."""
    from fedrec.core.privacy.record_cohort import train_users_private
    from fedrec.core.privacy.record_level import RecordDP
    from fedrec.core.training.local_round import new_local_parameters

    releases: list[Release | None] = []
    new_histories = [list(h) for h in histories]
    allowed: list[int] = []
    step = plan.training_step(config)
    for b, (user, history) in enumerate(zip(users, histories)):
        _, refused = refusal(config, user, history)
        releases.append(refused)
        if refused is None:
            allowed.append(b)
    result = empty_result(global_arrays)
    if allowed:
        locals_ = [stored[b] if stored[b] is not None else
                   new_local_parameters(config.model, users[b].n_items, config.dim, config.seed, users[b].user)
                   for b in allowed]
        rngs = [generators[b] if generators is not None else secure_generator() for b in allowed]
        dp = RecordDP(noise_multiplier=step[0], clip=config.clip, accountant=config.accountant, sample_rate=step[1],
                      divisor=float(config.batch_size))
        trained = train_users_private(config.model, config.dim, global_arrays, locals_, [users[b] for b in allowed],
                                      config.training, config.local_epochs, config.user_epochs, rngs, dp)
        for b, (one, applied) in zip(allowed, trained):
            new_histories[b] = [*histories[b], *applied]
            steps = sum(s for _, _, s in applied)
            releases[b] = Release(users[b].user, False, step[0], step[1], steps,
                                  epsilon(new_histories[b], config.delta, config.accountant))
            for name, value in one.update.items():
                result.update_sum[name] += value
            result.weight += 1
            result.users.append(users[b].user)
            result.locals.append(one.local)
            result.num_examples.append(one.num_examples)
            result.losses.append(one.loss)
    return PrivateRound(result, [r for r in releases if r is not None], new_histories, 0)
