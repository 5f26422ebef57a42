"""The privacy section of the run config: the DP mode and its mechanism's knobs.

:class:`PrivacyConfig` holds the run-config keys that say how a run is private (see
:mod:`fedrec.core.privacy.plan` for what each mode protects and how σ is chosen) and
checks them once, when it is built. :class:`~fedrec.core.config.run_config.RunConfig`
builds it from its flat fields (``config.privacy``); a function that reads only these keys
takes the section.

This module owns the constants the privacy package shares with the run config
(:data:`DP_MODES`, :data:`ACCOUNTANTS`) and imports nothing from :mod:`fedrec.core.privacy`,
so the run config and the privacy modules do not import each other.
"""

from __future__ import annotations

from dataclasses import dataclass

# off: nothing is private. record: each example's gradient (Opacus, on the client).
# user-local: each client clips and noises its own update. user-central: clients clip,
# the server noises the sum (fedrec.core.privacy.plan has the details). user-distributed:
# clients clip, quantise and add their share of discrete Gaussian noise; the server sees
# only the modular sum (fedrec.core.privacy.distributed_mode; the round driver only, so far).
# record-distributed: one DP gradient step of every record a round, each record's clipped
# gradient rounded and summed under secure aggregation with discrete noise shares
# (fedrec.core.privacy.record_distributed; the round driver only, so far).
DP_MODES = ("off", "record", "user-local", "user-central", "user-distributed", "record-distributed")
# the Opacus accountants fedrec.core.privacy.accounting composes a history with
ACCOUNTANTS = ("rdp", "prv")
# the server's noise across rounds under dp-groups (fedrec.core.privacy.correlated_noise.MECHANISMS)
NOISE_MECHANISMS = ("gaussian", "banded-mf")


@dataclass(frozen=True)
class PrivacyConfig:
    """How a run is private (the run-config keys are the names with ``-``).

    ``epsilon`` 0 means no target/budget, ``noise_multiplier`` 0 means σ is derived from
    ε; ``clip`` is ``C`` of the mode's unit. With ``dp == "off"`` only the mode and the
    accountant are checked: the other keys are unused.

    What needs keys of other sections is checked by the run config (``dp-participations``
    against ``rounds``, ``dp record`` against the executor and the model); what needs the
    data by :func:`fedrec.core.privacy.plan.check_against_data`.
    """

    dp: str = "off"
    epsilon: float = 0.0
    delta: float = 1e-5
    clip: float = 1.0
    noise_multiplier: float = 0.0
    accountant: str = "rdp"
    # user-central only: let C follow the clip-quantile of update norms (Andrew et al. 2021)
    adaptive_clip: bool = False
    clip_quantile: float = 0.5
    # record / user-local: σ from ε is planned for this many rounds per client (0: every round)
    dp_participations: int = 0
    # record: the public Poisson rate of one record per DP-SGD step, the same for every user
    record_sample_rate: float = 0.25
    # σ_e of the evaluation releases (0 = derived: a share of ε, fedrec.core.privacy.plan)
    eval_noise_multiplier: float = 0.0
    # user-distributed: the modulus 2^bits of the integer sum, the per-round wrap-around
    # probability the grid step γ is chosen for, and the fewest clients whose noise share is
    # counted (the dropout allowance; 0: every client sampled in a round)
    ddg_bits: int = 20
    ddg_wrap_probability: float = 1e-9
    ddg_min_clients: int = 0
    # user-central, the round driver: users train in dp-groups cyclic groups (group t mod g in
    # round t; 0: Poisson sampling) and the server's noise is dp-mechanism's, correlated
    # across rounds (fedrec.core.privacy.correlated_noise; gaussian: independent)
    dp_mechanism: str = "gaussian"
    dp_groups: int = 0

    def __post_init__(self) -> None:
        if self.dp not in DP_MODES:
            raise ValueError(f"unknown dp mode {self.dp!r}: choose one of {DP_MODES}")
        if self.accountant not in ACCOUNTANTS:
            raise ValueError(f"unknown accountant {self.accountant!r}: choose one of {ACCOUNTANTS}")
        if self.dp == "off":
            return
        if not self.epsilon >= 0:
            raise ValueError(f"epsilon must be > 0, got {self.epsilon}: ε is the privacy budget")
        if not self.noise_multiplier >= 0:
            raise ValueError(f"noise-multiplier must be > 0, got {self.noise_multiplier}")
        if self.dp in ("user-distributed", "record-distributed"):
            if self.noise_multiplier > 0:
                raise ValueError(f"dp {self.dp}: --noise-multiplier is not supported (the noise is a discrete "
                                 "Gaussian in grid units, planned together with the grid step γ): give --epsilon")
            if self.epsilon == 0:
                raise ValueError(f"dp {self.dp} needs --epsilon: γ and σ are planned for a budget")
        if self.epsilon == 0 and self.noise_multiplier == 0:
            raise ValueError(f"dp {self.dp} needs --epsilon (a budget; σ is derived) or "
                             "--noise-multiplier (σ; ε is tracked), or both")
        if not 0 < self.delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {self.delta}")
        if not self.clip > 0:
            raise ValueError(f"clip must be > 0, got {self.clip}: it bounds each unit's contribution")
        if self.dp_participations < 0:
            raise ValueError(f"dp-participations must be ≥ 0, got {self.dp_participations}")
        if self.adaptive_clip and self.dp != "user-central":
            raise ValueError("adaptive-clip works with dp user-central only (the server adapts C from noised bits)")
        if not 0 < self.record_sample_rate <= 1:
            raise ValueError(f"record-sample-rate must be in (0, 1], got {self.record_sample_rate}")
        if not self.eval_noise_multiplier >= 0:
            raise ValueError(f"eval-noise-multiplier must be ≥ 0, got {self.eval_noise_multiplier}")
        if not 0 < self.clip_quantile < 1:
            raise ValueError(f"clip-quantile must be in (0, 1), got {self.clip_quantile}")
        if not 4 <= self.ddg_bits <= 48:
            raise ValueError(f"ddg-bits must be in 4..48 (the modulus 2^bits of the integer sum), got {self.ddg_bits}")
        if not 0 < self.ddg_wrap_probability < 1:
            raise ValueError(f"ddg-wrap-probability must be in (0, 1), got {self.ddg_wrap_probability}")
        if self.ddg_min_clients < 0:
            raise ValueError(f"ddg-min-clients must be ≥ 0 (0: every sampled client), got {self.ddg_min_clients}")
        self._check_correlated()

    def _check_correlated(self) -> None:
        """``dp-mechanism`` and ``dp-groups``: what the correlated-noise path supports."""
        if self.dp_mechanism not in NOISE_MECHANISMS:
            raise ValueError(f"unknown dp-mechanism {self.dp_mechanism!r}: choose one of {NOISE_MECHANISMS}")
        if self.dp_groups < 0:
            raise ValueError(f"dp-groups must be ≥ 0 (0: Poisson sampling), got {self.dp_groups}")
        if (self.dp_groups > 0 or self.dp_mechanism != "gaussian") and self.dp != "user-central":
            raise ValueError(f"dp-groups and dp-mechanism {self.dp_mechanism} work with dp user-central only "
                             f"(the server adds the correlated noise), not dp {self.dp}")
        if self.dp_mechanism == "banded-mf" and self.dp_groups < 2:
            raise ValueError("dp-mechanism banded-mf needs dp-groups ≥ 2: its band is the number of rounds between "
                             "a user's participations, which Poisson sampling does not bound")
        if self.dp_groups > 0 and (self.adaptive_clip or self.noise_multiplier > 0 or self.epsilon == 0):
            raise ValueError("dp-groups plans its noise for --epsilon (the whole run is one Gaussian mechanism); "
                             "--noise-multiplier and --adaptive-clip are not supported with it")

    @property
    def enabled(self) -> bool:
        """Whether anything is private (``dp`` is not ``off``)."""
        return self.dp != "off"


PRIVACY_DEFAULTS = PrivacyConfig()
