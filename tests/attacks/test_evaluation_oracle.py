"""The crafted-model evaluation attack (adversarial review, finding 2), in-process.

A server sends a crafted model: zero item vectors (so the user vector does not matter,
refitted or not) and item biases ``b[t] = ½`` on the user's held-out item ``t`` (the
review found it in 36 replies; here the attacker is simply given it, which only makes
it stronger), ``b[p] = 1`` on a probed item ``p``, 0 elsewhere. Full-ranking metrics
leave the user's training items out of the ranking, so

* ``p`` trained: ``p`` is excluded, ``t`` ranks first → ``full_ndcg = 1``;
* ``p`` not trained: ``p`` outranks ``t`` → ``full_ndcg = 1/log2(3) ≈ 0.63``.

One exact reply per probe tells them apart. Under ``--dp user-local`` the reply is the
user's metric vector plus ``N(0, (σ_e√K)²)`` per coordinate, accounted ``(σ_e, 1, 1)`` in
the user's history; an (ε, δ)-DP release bounds any test by ``TPR ≤ e^ε·FPR + δ``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from scipy.stats import beta

from fedrec.client import app as client_app
from fedrec.client.partition import split_for
from fedrec.client.privacy_state import PrivacyHistoryStore
from fedrec.core.config.run_config import RunConfig
from fedrec.core.privacy import plan
from fedrec.core.privacy.accounting import compact, epsilon
from fedrec.core.privacy.evaluation import local_private_evaluation
from fedrec.core.privacy.secure_random import SecureRandom
from fedrec.protocol.wire import ARRAYS, CONFIG, METRICS, PRIVACY, PRIVACY_REFUSED, SERVER_ROUND, USERS_EVALUATED
from fedrec.server.loop import initial_global_arrays
from fedrec.server.strategy.fedopt_updates import numpy_to_arrays

N_ITEMS = 500  # the synthetic catalogue
USER = 3  # partition 3 of 1000: one user per node
FULL_NDCG = "full_ndcg@10"
THRESHOLD = (1 + 1 / math.log2(3)) / 2  # midway between the two exact answers


def _config(dp: str, **extra: object) -> RunConfig:
    if dp == "off":
        return RunConfig(model="mf", dim=8, reconstruct_epochs=1, **extra)
    return RunConfig(model="mf", dim=8, reconstruct_epochs=1, dp=dp, epsilon=8.0, rounds=20, eval_every=5,
                     **extra)


def _context(config: RunConfig) -> Context:
    return Context(run_id=1, node_id=USER + 1, node_config={"partition-id": USER, "num-partitions": 1000},
                   state=RecordDict(), run_config=config.to_user_config())


def _crafted(config: RunConfig, held_out: int, probe: int) -> dict[str, np.ndarray]:
    arrays = {name: np.zeros_like(value) for name, value in initial_global_arrays(config, N_ITEMS).items()}
    arrays["item_bias.weight"][held_out, 0] = 0.5
    arrays["item_bias.weight"][probe, 0] = 1.0
    return arrays


def _ask(config: RunConfig, context: Context, arrays: dict[str, np.ndarray]) -> Message:
    content = RecordDict({ARRAYS: numpy_to_arrays(arrays), CONFIG: ConfigRecord({SERVER_ROUND: 1})})
    return client_app.evaluate(Message(content=content, dst_node_id=1, message_type=MessageType.EVALUATE), context)


def _probes() -> tuple[int, list[int], list[int]]:
    """The user's held-out item, 14 items it trained on and 14 it did not (28 probes)."""
    data = split_for(_config("off")).user_data(USER)
    trained = sorted(int(i) for i in data.train_items)
    excluded = {int(i) for i in data.excluded_from_ranking()} | {int(data.test_item)}
    untrained = [i for i in range(N_ITEMS) if i not in excluded]
    rng = np.random.default_rng(0)  # which items to probe: public, not a secret draw
    assert len(trained) >= 14
    return (int(data.test_item), [int(i) for i in rng.choice(trained, 14, replace=False)],
            [int(i) for i in rng.choice(untrained, 14, replace=False)])


def _attack(config: RunConfig, context: Context) -> tuple[float, list[Message]]:
    """The attacker's accuracy over the 28 probes, one reply each, and the replies."""
    held_out, trained, untrained = _probes()
    correct, replies = 0, []
    for probe, is_trained in [*((p, True) for p in trained), *((p, False) for p in untrained)]:
        reply = _ask(config, context, _crafted(config, held_out, probe))
        replies.append(reply)
        metrics = reply.content.metric_records[METRICS]
        count = metrics.get(USERS_EVALUATED, 1)
        guess = count > 0 and metrics[FULL_NDCG] / count > THRESHOLD  # DP replies are sums over users
        correct += guess == is_trained
    return correct / (len(trained) + len(untrained)), replies


def _clopper_pearson(successes: int, trials: int, alpha: float) -> tuple[float, float]:
    """Two-sided (1 − alpha) Clopper–Pearson interval of a binomial proportion."""
    low = 0.0 if successes == 0 else float(beta.ppf(alpha / 2, successes, trials - successes + 1))
    high = 1.0 if successes == trials else float(beta.ppf(1 - alpha / 2, successes + 1, trials - successes))
    return low, high


def test_exact_replies_reveal_every_trained_item() -> None:
    """(a) The old reply (today's `--dp off` behaviour): the attack has teeth."""
    config = _config("off")
    accuracy, _ = _attack(config, _context(config))
    assert accuracy >= 0.95


def test_dp_replies_are_noised_and_each_one_is_accounted_in_the_users_history() -> None:
    config = _config("user-local")
    context = _context(config)
    accuracy, replies = _attack(config, context)
    sigma_e = plan.evaluation_step(config, 0)[0]
    # one (σ_e, 1, 1) per reply, in the same history as training
    assert compact(PrivacyHistoryStore(context.state).load(USER)) == [(sigma_e, 1.0, len(replies))]
    assert accuracy < 0.95  # at σ_e ≈ 10 (ε = 8, a tenth for 4 evaluations) the answers are noise
    reported = [r.content.config_records[PRIVACY] for r in replies]
    assert [r["epsilon"][0] for r in reported] == pytest.approx(
        [epsilon([(sigma_e, 1.0, n)], config.delta, config.accountant) for n in range(1, len(replies) + 1)])


def test_the_attack_advantage_stays_within_what_epsilon_allows() -> None:
    """(b) TPR ≤ e^ε·FPR + δ for the release the attacker reads, with ε from the accountant.

    The attacker reads one reply per decision, so ε is that of one ``(σ_e, 1, 1)`` release.
    The replies are drawn through the function the ClientApp's handler calls
    (:func:`local_private_evaluation`) from the exact rows of a trained and an untrained
    probe, 20 000 of each; the bound is checked with 99.99 % Clopper–Pearson margins
    (the lower end of TPR against the upper end of FPR). An emulated exact reply fails
    the same check, so the check has teeth.
    """
    config = _config("user-local")
    off = _config("off")
    held_out, trained, untrained = _probes()
    rows = {}
    for name, probe in (("trained", trained[0]), ("untrained", untrained[0])):
        exact = _ask(off, _context(off), _crafted(off, held_out, probe)).content.metric_records[METRICS]
        rows[name] = {key: float(exact[key]) for key in plan.private_metric_keys(config.eval_k)}
    assert rows["trained"][FULL_NDCG] == 1.0 and rows["untrained"][FULL_NDCG] < THRESHOLD

    sigma_e = plan.evaluation_step(config, 0)[0]
    eps = epsilon([(sigma_e, 1.0, 1)], config.delta, config.accountant)
    trials, alpha = 20_000, 1e-4
    column = plan.private_metric_keys(config.eval_k).index(FULL_NDCG)
    generator = SecureRandom(key=bytes(range(32)))  # a fixed key: reproducible test draws

    def positives(row: dict[str, float], noised: bool) -> int:
        hits = 0
        for _ in range(trials):
            if noised:
                released = local_private_evaluation(config, [USER], [[]], lambda idx: [row], generator)
                value = released.total[column] / released.count
            else:
                value = row[FULL_NDCG]
            hits += value > THRESHOLD
        return hits

    def within_bound(noised: bool) -> bool:
        tpr_low, _ = _clopper_pearson(positives(rows["trained"], noised), trials, alpha)
        _, fpr_high = _clopper_pearson(positives(rows["untrained"], noised), trials, alpha)
        return tpr_low <= math.exp(eps) * fpr_high + config.delta

    assert eps < 1.0  # the derived σ_e: ε of one evaluation release ≈ 0.38
    assert within_bound(noised=True)
    assert not within_bound(noised=False)  # the exact reply: TPR 1, FPR 0


def test_an_attacker_who_keeps_asking_is_refused_once_the_budget_is_spent() -> None:
    config = _config("user-local", eval_noise_multiplier=1.5)  # ε after n releases 3.0, 4.4, …, 7.5, 8.4: five fit
    context = _context(config)
    held_out, trained, _ = _probes()
    answered = []
    for _ in range(6):
        reply = _ask(config, context, _crafted(config, held_out, trained[0]))
        answered.append(reply.content.metric_records[METRICS][USERS_EVALUATED])
        refused = reply.content.config_records[PRIVACY][PRIVACY_REFUSED][0]
        assert refused == (answered[-1] == 0)
    allowed = max(n for n in range(1, 7) if epsilon([(1.5, 1.0, n)], config.delta, config.accountant) <= 8.0)
    assert allowed == 5
    assert answered == [1] * allowed + [0] * (6 - allowed)
    refused_reply = reply.content.metric_records[METRICS]
    assert all(refused_reply[key] == 0.0 for key in plan.private_metric_keys(config.eval_k))
    assert compact(PrivacyHistoryStore(context.state).load(USER)) == [(1.5, 1.0, allowed)]
