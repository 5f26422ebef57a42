"""Record-level DP local training: DP-SGD with Opacus' per-example clipping.

A *record* is one of the user's training positives (an interaction). One user trains
as in :func:`fedrec.core.training.local_round.train_user`, but every optimiser step is a
Poisson-subsampled Gaussian mechanism over the user's records (Abadi et al. 2016), on a
**public, fixed schedule** (:mod:`fedrec.core.privacy.record_steps`) that is the same for
every user whatever their record count ``n``:

1. **Sample**: each of the ``n`` records joins the batch ``B`` independently with
   probability ``q`` = the run config's ``record_sample_rate`` (a Bernoulli mask over
   the records drawn here, not by Opacus' data loader).
2. **Pair**: each sampled positive ``i`` gets ``k = config.negatives`` negatives ``j``
   drawn with the caller's ``rng`` uniformly from the catalogue (not "among items the
   user has not trained on", which would tie every example to the other records); the
   example's loss ``ℓ_i`` is its positive's loss over its ``1 + k`` scores (``bce``:
   the mean of the ``1 + k`` BCE terms; ``bpr``: the mean of ``-log σ(s_i - s_j)``
   over the ``k`` pairs), so one example's gradient depends on one record only.
3. **Clip** each example's gradient ``g_i = ∇ℓ_i`` over **all trained parameters
   jointly** — the user vector included — to L2 norm ``C``:
   ``ḡ_i = g_i · min(1, C/‖g_i‖)``.
4. **Noise**: ``g̃ = (Σ_{i∈B} ḡ_i + N(0, σ²C² I)) / b``, ``b`` the public constant
   ``config.batch_size`` (``RecordDP.divisor``), with noise on *every* coordinate of
   every trained parameter: every row of every item table gets noise whether or not
   the batch touched it (the update is dense).
5. **Step**: the optimiser (SGD or Adam, :func:`~fedrec.core.training.implicit.make_optimizer`)
   applies ``g̃``. The user vector moves only through ``g̃``.

A round is FedRecon's two phases (Singhal et al. 2021), each with a fresh optimiser
and both private: ``user_epochs`` epochs with the global part frozen (only the user's
parameters are trained, clipped and noised), then ``local_epochs`` epochs over all
parameters. An epoch is ``⌈1/q⌉`` steps, so a round is
:func:`~fedrec.core.privacy.record_steps.steps_per_round` steps for every user with at
least one record; the ``(σ, q, steps)`` runs the accountant hook recorded come back
with the result, for :func:`fedrec.core.privacy.accounting.epsilon`, and are checked
against that plan.

Neighbouring relation: add/remove of one record of the user. ``q``, the number of steps
and the divisor ``b`` are public constants of the run, so adding or removing a record
changes only the sampled sum (by at most one clipped gradient, norm ≤ ``C``), which is
exactly the Poisson-subsampled Gaussian mechanism Opacus' RDP (or PRV) accountant
analyses. (The earlier schedule, ``q = 1/⌈n/b⌉``, ``⌊1/q⌋`` steps and divisor ``n·q``,
revealed ``n`` and made add/remove the wrong relation.) Dividing by ``b`` instead of the
expected batch ``n·q`` only rescales the step: a user whose ``n·q`` is far from ``b``
takes smaller or larger steps than a plain run would. A user with no records runs the
same steps (every batch empty: noise only), so removing a user's *last* record is not
visible either.

Randomness: every secret draw — each step's Poisson mask, the negatives and the
Gaussian noise — comes from the caller's
:class:`~fedrec.core.privacy.secure_random.SecureRandom` (ChaCha20 with a 256-bit key
from the OS in the apps; tests pass a fixed key to be reproducible). No torch or numpy
generator is used and nothing secret seeds one: torch's generator keeps 32 bits of its
seed, so a server could try every seed, regenerate the noise and subtract it
(``tests/attacks/test_seed_replay.py`` runs that attack). Opacus' ``DPOptimizer`` draws
its noise from ``torch.normal(generator=...)``; fedrec's optimiser subclasses
(:mod:`fedrec.core.privacy.secure_noise_optimizers`) override
``add_noise`` to draw it from the ``SecureRandom`` instead (float64 draws, added to the
clipped sum in float64 and rounded to the parameters' float32; see
:mod:`~fedrec.core.privacy.secure_random` on floating-point attacks). Opacus'
``secure_mode`` (``torchcsprng``) is not used.

Per-sample gradient modes (``grad_sample_mode``):

* ``hooks`` and ``functorch`` materialise every example's gradient of every item
  table, ``(b, n_items, d)``, to clip it: the cost grows with ``b · n_items``.
* ``ghost`` (Opacus' fast gradient clipping: per-example *norms* from the layers'
  activations and output gradients, then a second backward pass of the loss
  re-weighted by the clip factors) never builds them. Opacus' embedding norm sampler
  sorts ``(example, row)`` pairs (``torch.unique(dim=0)``, slow on CPU); fedrec
  plugs :func:`lookup_norm_sample` in instead (the same norms from the ``(1+k)²``
  Gram matrix of an example's lookups) on the wrapped module only; Opacus' registry
  is left as it is.
* ``bookkeeping`` (fedrec, :mod:`fedrec.core.privacy.bookkeeping_step`): the same
  norms from the stored activations and output gradients, then the clipped sum from
  them too (one matrix product or ``index_add`` per layer), so there is a single
  backward, to the layers' outputs only; Opacus' accountant records the steps. It
  covers models of ``nn.Embedding`` and ``nn.Linear`` layers (all of fedrec's rankers)
  and refuses anything else.

All four modes agree with a per-example autograd loop for every model (tests), so the
default is the fastest, ``bookkeeping``. The measured cost of a step in each mode, and of
drawing the noise from ``SecureRandom``, is in ``docs/privacy.md`` ("Cost of a DP-SGD
step"; ``python -m fedrec.simulations.benchmarks.dp_step_cost`` measures it).

Caveats. ``LocalResult.loss`` and ``num_examples`` are raw statistics of the records
(not noised): the record-level guarantee covers the update Δ and the new local
parameters, not those two numbers. With Adam, noise-only coordinates (rows no example
touched) move by the order of ``lr`` per step whatever σ, since Adam rescales the noise
to unit size; SGD moves them by ``lr·σ·C/b`` (std) per step.
"""

from __future__ import annotations

import warnings
from dataclasses import KW_ONLY, dataclass
from typing import Iterator

import numpy as np
import torch
from numpy.typing import NDArray
from opacus.accountants import create_accountant
from opacus.grad_sample import GradSampleModule, GradSampleModuleFastGradientClipping
from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping
from opacus.validators import ModuleValidator
from torch import nn
from torch.nn import functional as F

from fedrec.core.data.split import UserData
from fedrec.core.models.base import (
    Recommender,
    global_state,
    load_parameters,
    local_state,
)
from fedrec.core.models.registry import ItemFeatureInput, build_model
from fedrec.core.privacy.accounting import Step, check_accountant
from fedrec.core.privacy.record_steps import (
    sample_rate,
    steps_per_epoch,
    steps_per_round,
)
from fedrec.core.privacy.secure_noise_optimizers import (
    SecureNoiseDPOptimizer,
    SecureNoiseGhostOptimizer,
)
from fedrec.core.privacy.secure_random import SecureRandom
from fedrec.core.training.implicit import TrainingConfig, make_optimizer
from fedrec.core.training.local_round import LocalResult

# Opacus' three ways to per-example gradients, and fedrec's one-backward book-keeping
# clipping (fedrec.core.privacy.bookkeeping_step: the same step, ≈ 1.7× a plain one)
BOOKKEEPING = "bookkeeping"
GRAD_SAMPLE_MODES = ("hooks", "functorch", "ghost", BOOKKEEPING)
DEFAULT_GRAD_SAMPLE_MODE = BOOKKEEPING


@dataclass(frozen=True)
class RecordDP:
    """Record-level DP-SGD settings, validated once.

    Attributes:
        noise_multiplier: σ; the noise added to the sum of clipped gradients has std σ·C.
            σ = 0 is allowed (tests, ε = ∞) but must be asked for explicitly.
        clip: C, the L2 bound on one example's gradient over all trained parameters.
        accountant: "rdp" or "prv" (the Opacus accountant the steps are recorded with).
        grad_sample_mode: how per-example gradients are clipped: Opacus' "hooks",
            "functorch" or "ghost" clipping, or fedrec's "bookkeeping" (one backward).
        sample_rate: q (keyword only), the public Poisson rate of one record per step:
            the run config's ``record_sample_rate``; an epoch is ``⌈1/q⌉`` steps.
        divisor: b (keyword only), the public constant the noised sum of clipped
            gradients is divided by: the run config's ``batch_size``.
    """

    noise_multiplier: float
    clip: float
    accountant: str
    grad_sample_mode: str = DEFAULT_GRAD_SAMPLE_MODE
    _: KW_ONLY
    sample_rate: float
    divisor: float

    def __post_init__(self) -> None:
        sample_rate(self.sample_rate)  # raises unless 0 < q ≤ 1
        if not (np.isfinite(self.divisor) and self.divisor > 0):
            raise ValueError(f"divisor b must be finite and > 0, got {self.divisor}")
        if not (np.isfinite(self.noise_multiplier) and self.noise_multiplier >= 0):
            raise ValueError(f"noise_multiplier σ must be finite and ≥ 0, got {self.noise_multiplier}")
        if not (np.isfinite(self.clip) and self.clip > 0):
            raise ValueError(f"clip C must be finite and > 0, got {self.clip}")
        check_accountant(self.accountant)
        if self.grad_sample_mode not in GRAD_SAMPLE_MODES:
            raise ValueError(
                f"unknown grad_sample_mode {self.grad_sample_mode!r}: choose one of {GRAD_SAMPLE_MODES}"
            )


def record_losses(scores: torch.Tensor, loss: str) -> torch.Tensor:
    """``(b,)`` loss of each record from its ``(b, 1+k)`` logits (column 0 the positive).

    ``bce``: ``mean_c BCE(s_c, y_c)`` with ``y = (1, 0, …, 0)``;
    ``bpr``: ``mean_j -log σ(s_0 - s_j)`` over the ``k`` negatives.
    The batch mean of these is :func:`fedrec.core.training.implicit.batch_loss`.
    """
    if loss == "bce":
        labels = torch.zeros_like(scores)
        labels[:, 0] = 1.0
        return F.binary_cross_entropy_with_logits(scores, labels, reduction="none").mean(dim=1)
    if loss == "bpr":
        return -F.logsigmoid(scores[:, :1] - scores[:, 1:]).mean(dim=1)
    raise ValueError(f"unknown loss {loss!r}")


class RecordLoss(nn.Module):
    """The criterion over a batch of records' scores ``(b, 1+k)``.

    ``reduction`` is ``"mean"`` (``Σ_i ℓ_i / max(b, 1)``: 0, not NaN, on an empty
    Poisson batch), ``"sum"`` or ``"none"`` (the ``(b,)`` per-record losses, which
    Opacus' ghost clipping asks for).
    """

    def __init__(self, loss: str, reduction: str = "mean") -> None:
        super().__init__()
        self.loss = loss
        self.reduction = reduction

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        per_record = record_losses(scores, self.loss)
        if self.reduction == "none":
            return per_record
        total = per_record.sum()
        return total if self.reduction == "sum" else total / max(len(per_record), 1)


def record_examples(
    positives: torch.Tensor, negatives: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The one user's examples: ``(users, items)``, both ``(b, 1+k)``.

    ``positives (b,)``, ``negatives (b, k)``; column 0 of ``items`` is the positive.
    Users are all 0 (a client model holds one user).
    """
    items = torch.cat([positives[:, None], negatives], dim=1)
    return torch.zeros_like(items), items


def draw_negatives(positives: torch.Tensor, n_items: int, k: int, rng: SecureRandom) -> torch.Tensor:
    """``(b, k)`` negatives drawn uniformly from the whole catalogue.

    Not "among items the user never trained on", as the non-private path does: that
    rule makes every example's negatives depend on the user's *other* records, so
    adding or removing one record would change every example's gradient and the
    clipped sum's sensitivity would no longer be ``C``. A drawn item that happens to be
    one of the user's positives is kept as a (noisy) negative.
    """
    drawn = rng.integers(0, n_items, size=(len(positives), k))
    return torch.from_numpy(np.asarray(drawn, dtype=np.int64).reshape(len(positives), k))


def lookup_norm_sample(
    layer: nn.Embedding, activations: list[torch.Tensor], backprops: torch.Tensor
) -> dict[nn.Parameter, torch.Tensor]:
    """Per-example gradient norms of an embedding table, from each example's lookups.

    Example ``i`` looks up rows ``r_{i,1..T}`` and its lookups receive output gradients
    ``g_{i,t}`` (``activations[0] (b, T)``, ``backprops (b, T, d)``). Its gradient of the
    table is ``G_i = Σ_t e_{r_it} g_itᵀ``, so
    ``‖G_i‖²_F = Σ_{t,s} [r_it = r_is] ⟨g_it, g_is⟩`` (lookups of ``padding_idx`` get
    no gradient). ``O(b·T²·d)``, with no ``(b, rows, d)`` tensor and no sort — the same
    norms as Opacus' ghost-clipping embedding sampler, which sorts ``(example, row)``
    pairs with ``torch.unique(dim=0)`` (slow on CPU). Signature of an Opacus norm sampler.
    """
    rows = activations[0].reshape(len(backprops), -1)
    grads = backprops.reshape(len(backprops), -1, layer.embedding_dim)
    same_row = rows[:, :, None] == rows[:, None, :]
    if layer.padding_idx is not None:
        same_row &= (rows != layer.padding_idx)[:, :, None]
    gram = torch.bmm(grads, grads.transpose(1, 2))
    return {layer.weight: (gram * same_row).sum(dim=(1, 2)).clamp(min=0).sqrt()}


class PrivatePhase:
    """One private training phase: the clipping (fedrec's book-keeping step, or Opacus' module
    with a secure-noise optimiser), the optimiser, Opacus' accountant.

    ``trainable`` are the parameters trained (the rest of ``model`` is frozen for the
    phase); each per-example gradient over them is clipped jointly to ``C``. The noised
    sum is divided by ``dp.divisor`` (``optimizer.expected_batch_size``) and every step
    is recorded at ``(σ, dp.sample_rate)``. :meth:`batches` draws the Poisson samples
    from ``rng``, the optimiser its noise. Use as a context manager: on exit the model
    is unwrapped and every parameter trainable again.
    """

    def __init__(
        self,
        model: Recommender,
        trainable: list[nn.Parameter],
        records: NDArray[np.int64],
        config: TrainingConfig,
        dp: RecordDP,
        rng: SecureRandom,
        opacus_embedding_norms: bool = False,
        device: torch.device | str = "cpu",
    ) -> None:
        if not isinstance(rng, SecureRandom):
            raise TypeError(f"record-level DP draws from a SecureRandom, got {type(rng).__name__}")
        self.model = model
        self.config = config
        self.dp = dp
        self.rng = rng
        self.records = torch.from_numpy(np.asarray(records, dtype=np.int64).copy())
        self.n_records = len(self.records)
        self.device = torch.device(device)
        self.sample_rate = sample_rate(dp.sample_rate)
        self.steps_per_epoch = steps_per_epoch(self.sample_rate)
        self.divisor = float(dp.divisor)
        chosen = {id(p) for p in trainable}
        for p in model.parameters():
            p.requires_grad_(id(p) in chosen)
        ModuleValidator.validate(model, strict=True)
        self.bookkeeping = None
        if dp.grad_sample_mode == BOOKKEEPING:  # fedrec's step; Opacus' accountant records it
            from fedrec.core.privacy.bookkeeping_step import BookkeepingStep

            self.bookkeeping = BookkeepingStep(model, dp.clip, dp.noise_multiplier, config.loss, rng)
            self.optimizer = make_optimizer(trainable, config)
            self.accountant = create_accountant(dp.accountant)
            return
        optimizer_class: type[SecureNoiseDPOptimizer] | type[SecureNoiseGhostOptimizer]
        if dp.grad_sample_mode == "ghost":
            module: GradSampleModule = GradSampleModuleFastGradientClipping(
                model, batch_first=True, loss_reduction="mean", max_grad_norm=dp.clip
            )
            if not opacus_embedding_norms:
                module.NORM_SAMPLERS = {**module.NORM_SAMPLERS, nn.Embedding: lookup_norm_sample}
            optimizer_class = SecureNoiseGhostOptimizer
        else:
            module = GradSampleModule(model, batch_first=True, loss_reduction="mean",
                                      force_functorch=dp.grad_sample_mode == "functorch")
            optimizer_class = SecureNoiseDPOptimizer
        module.forbid_grad_accumulation()  # one backward per step: the Poisson batch is the step
        self.module = module
        self.optimizer = optimizer_class(
            make_optimizer(trainable, config),
            secure_rng=rng,
            noise_multiplier=dp.noise_multiplier,
            max_grad_norm=dp.clip,
            expected_batch_size=self.divisor,
            loss_reduction="mean",
        )
        self.accountant = create_accountant(dp.accountant)
        self.optimizer.attach_step_hook(self.accountant.get_optimizer_hook_fn(sample_rate=self.sample_rate))
        self.criterion: DPLossFastGradientClipping | None = None
        if dp.grad_sample_mode == "ghost":
            self.criterion = DPLossFastGradientClipping(module, self.optimizer, RecordLoss(config.loss), "mean")

    def __enter__(self) -> PrivatePhase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.bookkeeping is not None:
            self.bookkeeping.close()
        else:
            self.module.to_standard_module()
        for p in self.model.parameters():
            p.requires_grad_(True)

    def batches(self) -> Iterator[torch.Tensor]:
        """One Poisson epoch: ``⌈1/q⌉`` batches of sampled positives ``(|B|,)`` (maybe empty).

        Each batch keeps every record independently with probability ``q``: a fresh
        ``rng.bernoulli(q, n)`` mask per step.
        """
        for _ in range(self.steps_per_epoch):
            mask = self.rng.bernoulli(self.sample_rate, self.n_records)
            yield self.records[torch.from_numpy(np.asarray(mask, dtype=bool))]

    def step(self, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """One DP-SGD step on the examples of ``positives (b,)``, ``negatives (b, k)``.

        Returns the ``(b,)`` per-record losses before the step (detached). An empty
        batch (Poisson sampling draws one with probability ``(1-q)^n``) is still a
        step: its clipped sum is 0, the noise is added and the step is recorded.
        """
        self.optimizer.zero_grad(set_to_none=True)
        if self.bookkeeping is not None:  # an empty batch included: the noise alone
            losses = self.bookkeeping.gradients(positives.to(self.device), negatives.to(self.device), self.divisor)
            self.optimizer.step()
            self.accountant.step(noise_multiplier=self.dp.noise_multiplier, sample_rate=self.sample_rate)
            return losses
        if len(positives) == 0:
            return self._empty_step()
        users, items = record_examples(positives.to(self.device), negatives.to(self.device))
        scores = self.module(users, items)
        if self.dp.grad_sample_mode == "ghost":
            loss = self.criterion(scores)  # Opacus' wrapper: two backward passes, clipped sum
            per_record = loss.loss_per_sample
        else:
            per_record = record_losses(scores, self.config.loss)
            loss = per_record.sum() / len(per_record)
        with warnings.catch_warnings():
            # phase 1 trains the user vector only: no module input needs a gradient, which is
            # what torch warns about on every backward of Opacus' hooks (harmless, and loud)
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            loss.backward()
        self.optimizer.step()
        return per_record.detach()

    def _empty_step(self) -> torch.Tensor:
        """A step on an empty batch: zero per-example gradients, then noise as usual.

        Opacus' functorch and ghost paths fail on a zero-length batch (vmap and the
        norm samplers cannot reshape it), so no forward runs: the per-example gradients
        (hooks/functorch) or the clipped sum (ghost) are set to their empty values and
        the optimiser adds the noise, divides by ``b`` and records the step.
        """
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                if self.dp.grad_sample_mode == "ghost":
                    p.grad = torch.zeros_like(p)
                else:
                    p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
        self.optimizer.step()
        return torch.zeros(0)

    @property
    def expected_batch_size(self) -> float:
        """The ``b`` every noised sum is divided by (Opacus' optimiser's, or the book-keeping step's)."""
        return self.divisor if self.bookkeeping is not None else float(self.optimizer.expected_batch_size)

    @property
    def history(self) -> list[Step]:
        """The ``(σ, q, steps)`` runs Opacus' accountant hook recorded so far."""
        return [(float(s), float(q), int(n)) for s, q, n in self.accountant.history]


def train_user_private(
    model_name: str,
    dim: int,
    global_arrays: dict[str, NDArray[np.float32]],
    local_arrays: dict[str, NDArray[np.float32]],
    user: UserData,
    config: TrainingConfig,
    local_epochs: int,
    user_epochs: int,
    rng: SecureRandom,
    dp: RecordDP,
    device: torch.device | str = "cpu",
    item_features: ItemFeatureInput | None = None,
) -> tuple[LocalResult, list[Step]]:
    """One user's round with record-level DP; returns the result and the steps applied.

    Phase 1 (``user_epochs``): the user's parameters only, global part frozen. Phase 2
    (``local_epochs``): all parameters. Both are DP-SGD over the user's records (see
    the module docstring) on the public schedule ``dp.sample_rate``/``dp.divisor``; the
    returned ``(σ, q, steps)`` runs are what Opacus' accountant recorded and add up to
    ``steps_per_round(dp.sample_rate, local_epochs, user_epochs)``. Every secret draw
    comes from ``rng``. ``LocalResult.update``
    is ``Δ = x' − x`` of the global part (dense: every row carries noise when σ > 0),
    ``num_examples`` the examples of phase 2 (sampled positives × (1 + k)), ``loss``
    the mean per-record loss of phase 2. A user with no records runs the same number of
    steps on empty batches (a noise-only update). ``item_features`` (``(n_items, F)``, public) is required by
    feature models: a fixed buffer, so ``W``'s per-example gradient ``Σ_c g_c f_{i_c}ᵀ``
    over the example's ``1 + k`` items is clipped with the rest.
    """
    records = np.asarray(user.train_items, dtype=np.int64)
    model = build_model(model_name, 1, user.n_items, dim, item_features=item_features)
    load_parameters(model, {k: torch.from_numpy(v) for k, v in global_arrays.items()}, "global")
    load_parameters(model, {k: torch.from_numpy(v) for k, v in local_arrays.items()}, "local")
    model.to(device)  # the training runs on `device`; the records are sampled on the CPU
    model.train()
    history: list[Step] = []
    loss_sum, records_seen = 0.0, 0
    phases = ((list(local_state(model).values()), user_epochs), (list(model.parameters()), local_epochs))
    for index, (trainable, epochs) in enumerate(phases):
        if epochs == 0:
            continue
        with PrivatePhase(model, trainable, records, config, dp, rng, device=device) as phase:
            for _ in range(epochs):
                for positives in phase.batches():
                    negatives = draw_negatives(positives, user.n_items, config.negatives, rng)
                    losses = phase.step(positives, negatives)
                    if index == 1:
                        loss_sum += float(losses.sum())
                        records_seen += len(losses)
            history += phase.history
    expected = steps_per_round(dp.sample_rate, local_epochs, user_epochs)
    if sum(steps for _, _, steps in history) != expected or any(q != dp.sample_rate for _, q, _ in history):
        raise RuntimeError(f"Opacus recorded {history}, fedrec planned {expected} steps")
    new_global = _arrays(global_state(model))
    update = {k: new_global[k] - global_arrays[k] for k in global_arrays}
    loss = loss_sum / records_seen if records_seen else 0.0
    return LocalResult(update, _arrays(local_state(model)), records_seen * (1 + config.negatives), loss), history


def _arrays(state: dict[str, torch.Tensor]) -> dict[str, NDArray[np.float32]]:
    return {k: v.detach().cpu().numpy().astype(np.float32, copy=True) for k, v in state.items()}
