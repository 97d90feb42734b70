"""The toy-claims experiment's configuration (:class:`ClaimsConfig`, :data:`SMOKE`, the horizon
sweep's π_ref) and its two pure rules: which sampled rows a variant trains on
(:func:`select_rows`) and which tuning trial each method keeps (:func:`choose_budgets`)."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..forks import REFERENCE_RECIPE as FORKS_REFERENCE
from .variants import ROW_SELECTIONS, VARIANTS, VARIANTS_BY_NAME, Variant

__all__ = [
    "HORIZON_REFERENCE",
    "FORKS_REFERENCE",
    "ClaimsConfig",
    "SMOKE",
    "select_rows",
    "choose_budgets",
]


def _toy_train_defaults() -> dict[str, Any]:
    from ..pipeline import TASK_DEFAULTS

    base = dict(TASK_DEFAULTS["toy"]["train"])
    for tuned in ("policy_lr", "value_lr", "epochs"):
        base.pop(tuned)
    # the pipeline warms V up for 20 of 125 steps (1,000 prompts); scaled to 400 prompts
    base |= {"value_warmup_steps": 10, "checkpoint_every": 1000}
    return base


_SHARED_KNOBS: tuple[Mapping[str, Any], ...] = (
    {},
    {"beta": 0.3},
    {"value_model": "shared"},
    {"beta": 0.3, "value_model": "shared"},
)
"""The knobs DRO and DQO share beyond the learning rate (the diagnostics' two best ones)."""

_DQO_OWN_KNOBS: tuple[Mapping[str, Any], ...] = (
    {},
    {"lam": 0.95},
    {"is_mode": "none"},
    {"lam": 0.95, "is_mode": "none"},
)
"""DQO's own knobs (λ ∈ {1, 0.95} × prefix IS on / off): on the toy, round 1 measured λ = 0.95
(+4.2 points) and no IS (+3.5) as better than the specification's defaults."""


HORIZON_REFERENCE: Mapping[str, Any] = {
    "init": "toy",
    "ops": (2, 8),
    "max_positions": 256,
    "passes": 8,
    "lr": 1e-3,
}
"""The horizon sweep's π_ref: the shipped one, taught chains of 2–8 operations by the toy-ref
recipe (:func:`~dqo_tutorial.recipes.train_toy_reference` with these arguments)."""


@dataclass(frozen=True)
class ClaimsConfig:
    """The experiment (:mod:`.plan`'s docstring). Sizes chosen so that the default grid takes
    under half an hour on a 2-core CPU; ``train``: the TrainConfig fields every run shares (toy
    defaults of :data:`~dqo_tutorial.pipeline.TASK_DEFAULTS` without the tuned learning rates).
    The ``forks`` set: ``forks_prompts`` training prompts per length, π_ref trained by the
    experiment with ``forks_reference`` (:func:`~dqo_tutorial.recipes.train_forks_reference`'s
    arguments), the horizon sweep's test sizes; its knob-tuned runs choose among
    ``forks_knob_grid`` (DRO: β and the value head; DQO: λ and IS — each its own, the same
    number of sets)."""

    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    prompts: int = 400
    num_samples: int = 8
    test_problems: int = 500
    eval_samples: int = 4
    dev_problems: int = 300
    curve_problems: int = 100
    curve_points: int = 5
    policy_lrs: tuple[float, ...] = (1e-4, 3e-4)
    epoch_grid: tuple[int, ...] = (1, 2, 4)
    value_lr_ratio: float = 10.0
    sweep_seeds: tuple[int, ...] = (0, 1, 2)
    horizon_prompts: int = 200
    horizon_test_problems: int = 300
    horizon_eval_samples: int = 2
    horizon_reference: Mapping[str, Any] = field(default_factory=lambda: dict(HORIZON_REFERENCE))
    forks_prompts: int = 100
    forks_reference: Mapping[str, Any] = field(default_factory=lambda: dict(FORKS_REFERENCE))
    positive_keep: float = 0.1
    process_k: int = 4
    train: Mapping[str, Any] = field(default_factory=_toy_train_defaults)
    variants: tuple[str, ...] = tuple(v.name for v in VARIANTS if v.default)
    workers: int = 2
    knob_grid: Mapping[str, tuple[Mapping[str, Any], ...]] = field(
        default_factory=lambda: {m: _SHARED_KNOBS for m in ("dro", "dqo")}
    )
    budgets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    oracle_k: int = 16
    forks_knob_grid: Mapping[str, tuple[Mapping[str, Any], ...]] = field(
        default_factory=lambda: {"dro": _SHARED_KNOBS, "dqo": _DQO_OWN_KNOBS}
    )

    def __post_init__(self) -> None:
        from ..train import TrainConfig

        for m, b in self.budgets.items():
            if set(b) != {"policy_lr", "epochs"} or b["policy_lr"] <= 0 or b["epochs"] < 1:
                raise ValueError(f"ClaimsConfig.budgets[{m!r}]: {{policy_lr > 0, epochs >= 1}}")
        for name in ("seeds", "policy_lrs", "variants", "epoch_grid", "sweep_seeds"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"ClaimsConfig.seeds: distinct seeds needed, got {self.seeds}")
        if not set(self.sweep_seeds) <= set(self.seeds) or not self.sweep_seeds:
            raise ValueError(f"ClaimsConfig.sweep_seeds: a non-empty subset of seeds {self.seeds}")
        sizes = ("prompts", "num_samples", "test_problems", "dev_problems", "workers")
        for name in (*sizes, "horizon_prompts", "horizon_test_problems", "forks_prompts"):
            if getattr(self, name) < 1:
                raise ValueError(f"ClaimsConfig.{name}: must be >= 1, got {getattr(self, name)}")
        if not self.policy_lrs or min(self.policy_lrs) <= 0:
            raise ValueError(f"ClaimsConfig.policy_lrs: positive rates needed: {self.policy_lrs}")
        if not self.epoch_grid or min(self.epoch_grid) < 1:
            raise ValueError(f"ClaimsConfig.epoch_grid: epochs >= 1 needed: {self.epoch_grid}")
        if not 0 < self.positive_keep < 1:
            raise ValueError("ClaimsConfig.positive_keep: must lie in (0, 1)")
        unknown = [n for n in self.variants if n not in VARIANTS_BY_NAME]
        if unknown:
            raise ValueError(
                f"ClaimsConfig.variants: unknown {unknown}; known: {list(VARIANTS_BY_NAME)}"
            )
        fixed = {"method", "model", "task", "data", "policy_lr", "value_lr", "seed", "epochs"}
        bad = sorted(set(self.train) & fixed)
        if bad:
            raise ValueError(f"ClaimsConfig.train: {bad} are set by the experiment")
        TrainConfig(method="dqo", model="toy", task="toy", **self.train)  # fails on a bad field
        for grid in ("knob_grid", "forks_knob_grid"):
            for m, sets in getattr(self, grid).items():
                for knobs in sets:
                    try:
                        TrainConfig(method=m, model="toy", task="toy", **{**self.train, **knobs})
                    except (TypeError, ValueError) as err:
                        raise ValueError(f"ClaimsConfig.{grid}[{m!r}]: {knobs}: {err}") from err

    @property
    def selected(self) -> list[Variant]:
        return [VARIANTS_BY_NAME[n] for n in self.variants]


SMOKE: dict[str, Any] = {
    "seeds": (0, 1),
    "sweep_seeds": (0,),
    "epoch_grid": (1, 2),
    "horizon_prompts": 8,
    "horizon_test_problems": 8,
    "horizon_reference": {**HORIZON_REFERENCE, "max_steps": 2},
    "forks_prompts": 8,
    "forks_reference": {**FORKS_REFERENCE, "per_length": 4, "max_steps": 2},
    "prompts": 16,
    "num_samples": 4,
    "test_problems": 16,
    "eval_samples": 2,
    "dev_problems": 16,
    "curve_problems": 8,
    "curve_points": 2,
    "policy_lrs": (1e-4, 3e-4),
    "process_k": 2,
    "oracle_k": 2,
    "train": {**_toy_train_defaults(), "max_steps": 3, "batch_size": 4, "value_warmup_steps": 1},
}
"""``--smoke``: every variant and every stage at toy sizes (two seeds, two rates), to check that
everything runs in about a minute — the accuracies mean nothing."""


def select_rows(
    rows: Sequence[Mapping[str, Any]] | Any,
    how: str,
    *,
    seed: int,
    positive_keep: float = 0.1,
    pairs_per_prompt: int = 4,
) -> list[int]:
    """Indices of the sampled rows a variant trains on.

    ``all``: every row. ``few_positives``: every wrong response and ``round(positive_keep × P)``
    of the P correct ones (a seeded draw), i.e. ``positive_keep`` of the usual positive share.
    ``negatives_only``: the responses that are not positives (wrong, or cut: no outcome).
    ``dpo_responses``: the responses that DPO's pairs
    use (:func:`~dqo_tutorial.train.dpo_pairs` with the same ``seed``), in row order.
    """
    from ..rewards import outcome
    from ..train import dpo_pairs

    positive = [outcome(r) == 1.0 for r in rows]  # a cut response is never a positive
    positives = [i for i, p in enumerate(positive) if p]
    if how == "all":
        return list(range(len(positive)))
    if how == "negatives_only":
        return [i for i, p in enumerate(positive) if not p]
    if how == "few_positives":
        kept = random.Random(seed).sample(positives, round(positive_keep * len(positives)))
        return sorted(set(kept) | {i for i, p in enumerate(positive) if not p})
    if how == "dpo_responses":
        return sorted(i for pair in dpo_pairs(rows, pairs_per_prompt, seed) for i in pair)
    raise ValueError(f"unknown row selection {how!r}; expected one of {ROW_SELECTIONS}")


def choose_budgets(tuning: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per method, the ``{"policy_lr", "epochs"}`` trial with the best dev greedy accuracy; ties
    go to the cheaper trial (fewer epochs, then the smaller rate).

    ``tuning``: records ``{"method", "policy_lr", "epochs", "dev": accuracy or None}``; a trial
    that could not train (None) never wins unless every trial failed (then the cheapest)."""
    best: dict[str, tuple[float, dict[str, Any]]] = {}
    for r in sorted(tuning, key=lambda r: (r["method"], r["epochs"], r["policy_lr"])):
        score = -1.0 if r["dev"] is None else r["dev"]
        if r["method"] not in best or score > best[r["method"]][0]:
            best[r["method"]] = (score, {"policy_lr": r["policy_lr"], "epochs": r["epochs"]})
    return {m: budget for m, (_, budget) in best.items()}
