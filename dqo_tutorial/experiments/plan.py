r"""DQO's claims, tested on the toy task: equal tuning budgets, seeds, intervals, sweeps.

    dqo-tutorial experiment toy-claims --out outputs/toy-claims [--smoke] [--workers 2]
        [--variants ablations | horizon | data-size sweep | critic | diagnostics | knobs tuned]
    dqo-tutorial experiment toy-claims --out DIR --resummarize   # the summary again, from its runs

The paper (arXiv 2410.09302) reports gains without seeds or error bars. This module reruns its
comparisons on the toy reasoning task (:mod:`dqo_tutorial.toy`, shipped π_ref, CPU) so that
anyone can see which claims hold and how strongly. The written analysis of a full run is
``docs/toy-claims.md``.

**Protocol.**

1. *Data, per seed s.* ``prompts`` training prompts × ``num_samples`` responses at τ = 1 from
   π_ref (sampling seed s), labelled with the exact potentials Φ of the toy step checker; the
   same responses relabelled with Monte-Carlo Φ (``process_k`` rollouts of μ per distinct state,
   :func:`~dqo_tutorial.sampling.with_monte_carlo_potentials`). Every variant of seed s trains on
   (a subset of) these rows — one offline dataset per seed (per sweep point in the sweeps).
2. *Tuning, the same budget for every trained method* (SFT, RFT, DPO, DRO, DQO): every policy
   learning rate of ``policy_lrs`` × every epoch count of ``epoch_grid`` (DRO/DQO: value lr =
   ``value_lr_ratio`` × policy lr), all other knobs fixed at :attr:`ClaimsConfig.train`; seed 0;
   chosen by greedy accuracy on ``dev_problems`` problems of the toy *dev* split (held out from
   π_ref's training problems and from test; ties go to the cheaper trial,
   :func:`choose_budgets`). Every variant, sweeps included, inherits its method's budget.
   Optionally (variants ``"DRO, knobs tuned"`` / ``"DQO, knobs tuned"``) a second stage gives DRO
   and DQO the same further budget: every knob set of ``knob_grid`` (β and the value head) at the
   chosen budget, seed 0, the best on dev wins.
3. *Grid.* Every variant × its seeds (``seeds``; sweeps and critics: ``sweep_seeds``; training
   seed = s), evaluated on ``test_problems`` test problems: greedy, and ``eval_samples`` samples
   at τ = 1 per problem (sampling seed s). Variants whose config equals a tuning run's share its
   training (one run per distinct config).
4. *Aggregation.* Per variant: mean and sample standard deviation (ddof = 1) over seeds of the
   strict greedy and sampling accuracy, and the paired difference to its DQO anchor (same seed,
   same data) with a 95 % interval over seeds × problems (:func:`paired_interval`: two-way
   random effects, a t quantile on Satterthwaite's degrees of freedom) and the number of seeds
   on which it is above 0; each run keeps its per-problem hits, so
   ``--resummarize`` recomputes the summary from them (:func:`resummarize`).

**Variants** (:data:`VARIANTS`). Default: the baselines (π_ref, SFT, RFT, DPO, DRO, DQO with the
toy defaults and §8's β, λ = 1, prefix IS clipped at 2). ``ablations``: DQO without importance
sampling; λ ∈ {0, 0.95}; process rewards α = 0.5 with exact and with Monte-Carlo Φ; imbalance —
only ``positive_keep`` of the correct responses kept (all wrong ones), and wrong responses only
(DPO and RFT have nothing to train on there: reported as skipped, with the reason); DQO trained
on exactly the responses DPO's pairs use (:func:`~dqo_tutorial.train.dpo_pairs`). ``horizon``:
π_ref, RFT, DRO, DQO and DQO + process rewards on chains of exactly 2, 4, 6 and 8 operations
(tasks ``toy-<n>ops``, ``horizon_prompts`` prompts, ``horizon_test_problems`` test problems),
all sampled from one mixed-length π_ref (:data:`HORIZON_REFERENCE`, trained by the experiment).
``data-size sweep``: RFT, DRO and DQO on ¼ and 4 × ``prompts`` (the baselines are the middle
point). ``critic``: DQO with a deeper critic, a wider value head, a longer value warm-up.
``diagnostics`` vary β, the IS clip, target detaching and the value model; ``knobs tuned``
compares DRO and DQO after the second tuning stage.

**Outputs** in ``out/``: ``experiment_config.json`` (a rerun must match it, then resumes),
``data/[<setting>/]seed-S/{exact,monte_carlo}``, ``reference-mixed-<hash>/`` (the horizon π_ref),
``runs/seed-S/<variant>-<hash>/`` (``spec.json``, ``train/``, ``eval-test/``, ``eval-dev/``),
``results.json`` (every run, every seed, the configuration, the tuning table, the summary),
``results.md`` (the tables: variants, tuning and cost, sweeps), ``accuracy.png`` (per variant,
mean ± std, one dot per seed), ``curves.png`` (dev greedy accuracy during training),
``lambda.png`` (accuracy vs λ, with the ablations) and ``horizon.png`` /
``data-size-sweep.png`` (:func:`plot_sweep`). Jobs run in ``workers`` processes of one thread
each (small models gain nothing from intra-op threads); each job resumes on its own.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import random
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from .artifacts import (
    atomic_write_json,
    check_run_identity,
    run_lock,
    save_dataset_atomically,
    save_figure_atomically,
)
from .errors import DataError

__all__ = [
    "Variant",
    "VARIANTS",
    "VARIANT_SETS",
    "HORIZON_REFERENCE",
    "ClaimsConfig",
    "SMOKE",
    "expand_variants",
    "select_rows",
    "choose_budgets",
    "paired_variance",
    "paired_interval",
    "summarize_runs",
    "results_table",
    "budget_table",
    "sweep_points",
    "sweep_table",
    "plot_accuracy",
    "plot_lambda",
    "plot_curves",
    "plot_sweep",
    "run_toy_claims",
    "resummarize",
]

GROUPS = (
    "baselines",
    "importance sampling",
    "λ-return",
    "process rewards",
    "imbalance",
    "data size",
    "diagnostics",
    "knobs tuned",
    "horizon",
    "data-size sweep",
    "critic",
    "credit",
)

VARIANT_SETS: dict[str, tuple[str, ...]] = {
    "ablations": ("importance sampling", "λ-return", "process rewards", "imbalance", "data size"),
    "diagnostics": ("diagnostics",),
    "knobs tuned": ("knobs tuned",),
    "horizon": ("horizon",),
    "data-size sweep": ("data-size sweep",),
    "critic": ("critic",),
    "credit": ("credit",),
}
"""Named sets of ``--variants``: the baselines plus these groups (each a run of its own)."""


@dataclass(frozen=True)
class Variant:
    """One row of the comparison.

    ``method``: ``"reference"`` (π_ref, not trained) or a :data:`~dqo_tutorial.train.METHODS`
    entry; ``train``: :class:`~dqo_tutorial.train.TrainConfig` fields on top of the experiment's
    (after tuning); ``rows``: which sampled rows it trains on (:func:`select_rows`);
    ``potentials``: the Φ of its process rewards (``"exact"`` or ``"monte_carlo"``); ``curve``:
    record a dev learning curve; ``default``: part of the default grid; ``value_lr_scale``:
    multiplies the value learning rate its method was tuned with; ``tune_knobs``: train with
    the knob set of :attr:`ClaimsConfig.knob_grid` that won on dev for its method.

    Sweeps: ``ops`` — chains of exactly that many operations (task ``toy-<ops>ops``) from the
    mixed-length π_ref (:attr:`ClaimsConfig.horizon_reference`); ``data_scale`` — that multiple
    of :attr:`ClaimsConfig.prompts` training prompts; ``sweep`` — run on
    :attr:`ClaimsConfig.sweep_seeds` only; ``warmup_scale`` — multiplies the value warm-up.
    """

    name: str
    method: str
    group: str
    train: Mapping[str, Any] = field(default_factory=dict)
    rows: str = "all"
    potentials: str = "exact"
    curve: bool = False
    default: bool = True
    value_lr_scale: float = 1.0
    tune_knobs: bool = False
    ops: int | None = None
    data_scale: float = 1.0
    sweep: bool = False
    warmup_scale: float = 1.0

    @property
    def task(self) -> str:
        return "toy" if self.ops is None else f"toy-{self.ops}ops"

    @property
    def anchor(self) -> str:
        """The DQO run its paired differences are taken against (same sweep point, same seed)."""
        if self.ops is not None:
            return f"DQO, {self.ops} ops"
        if self.data_scale != 1.0:
            return f"DQO, data ×{self.data_scale:g}"
        return "DQO"

    def __post_init__(self) -> None:
        if self.group not in GROUPS:
            raise ValueError(f"Variant {self.name}: unknown group {self.group!r}")
        if self.rows not in ROW_SELECTIONS:
            raise ValueError(f"Variant {self.name}: rows must be one of {ROW_SELECTIONS}")
        if self.potentials not in ("exact", "monte_carlo", "oracle"):
            raise ValueError(f"Variant {self.name}: potentials must be exact, monte_carlo, oracle")
        if self.ops is not None and not 2 <= self.ops <= 8:
            raise ValueError(f"Variant {self.name}: ops must lie in 2..8 (toy-<n>ops tasks)")
        if self.data_scale <= 0 or self.warmup_scale <= 0:
            raise ValueError(f"Variant {self.name}: data_scale and warmup_scale must be > 0")


ROW_SELECTIONS = ("all", "few_positives", "negatives_only", "dpo_responses")

_PR = {"process_reward_coef": 0.5}
HORIZON_OPS = (2, 4, 6, 8)
DATA_SCALES = (0.25, 4.0)


def _horizon() -> tuple[Variant, ...]:
    methods = (("π_ref", "reference", {}), ("RFT", "rft", {}), ("DRO", "dro", {}),
               ("DQO", "dqo", {}), ("DQO, α=0.5 exact Φ", "dqo", _PR))  # fmt: skip
    return tuple(
        Variant(f"{name}, {n} ops", m, "horizon", dict(t), default=False, ops=n, sweep=True)
        for n in HORIZON_OPS
        for name, m, t in methods
    )


def _data_sizes() -> tuple[Variant, ...]:
    return tuple(
        Variant(
            f"{name}, data ×{k:g}", m, "data-size sweep", default=False, data_scale=k, sweep=True
        )
        for k in DATA_SCALES
        for name, m in (("RFT", "rft"), ("DRO", "dro"), ("DQO", "dqo"))
    )


def _ablation(*args: Any, **kwargs: Any) -> Variant:
    return Variant(*args, **kwargs, default=False)


VARIANTS: tuple[Variant, ...] = (
    Variant("π_ref", "reference", "baselines"),
    Variant("SFT", "sft", "baselines", curve=True),
    Variant("RFT", "rft", "baselines", curve=True),
    Variant("DPO", "dpo", "baselines", curve=True),
    Variant("DRO", "dro", "baselines", curve=True),
    Variant("DQO", "dqo", "baselines", curve=True),
    _ablation("DQO, no IS", "dqo", "importance sampling", {"is_mode": "none"}),
    _ablation("DQO, λ=0", "dqo", "λ-return", {"lam": 0.0}),
    _ablation("DQO, λ=0.95", "dqo", "λ-return", {"lam": 0.95}),
    _ablation("DQO, α=0.5 exact Φ", "dqo", "process rewards", {"process_reward_coef": 0.5}),
    _ablation(
        "DQO, α=0.5 MC Φ",
        "dqo",
        "process rewards",
        {"process_reward_coef": 0.5},
        potentials="monte_carlo",
    ),
    _ablation("RFT, few positives", "rft", "imbalance", rows="few_positives"),
    _ablation("DPO, few positives", "dpo", "imbalance", rows="few_positives"),
    _ablation("DRO, few positives", "dro", "imbalance", rows="few_positives"),
    _ablation("DQO, few positives", "dqo", "imbalance", rows="few_positives"),
    _ablation("RFT, negatives only", "rft", "imbalance", rows="negatives_only"),
    _ablation("DPO, negatives only", "dpo", "imbalance", rows="negatives_only"),
    _ablation("DRO, negatives only", "dro", "imbalance", rows="negatives_only"),
    _ablation("DQO, negatives only", "dqo", "imbalance", rows="negatives_only"),
    _ablation(
        "DQO, negatives only, α=0.5 exact Φ",
        "dqo",
        "imbalance",
        {"process_reward_coef": 0.5},
        rows="negatives_only",
    ),
    _ablation("DQO on DPO's responses", "dqo", "data size", rows="dpo_responses"),
    Variant("DQO, β=0.03", "dqo", "diagnostics", {"beta": 0.03}, default=False),
    Variant("DQO, β=0.3", "dqo", "diagnostics", {"beta": 0.3}, default=False),
    Variant("DQO, IS clip 10", "dqo", "diagnostics", {"is_clip": 10.0}, default=False),
    Variant(
        "DQO, target not detached", "dqo", "diagnostics", {"detach_target": False}, default=False
    ),
    Variant(
        "DQO, shared value trunk", "dqo", "diagnostics", {"value_model": "shared"}, default=False
    ),
    Variant(
        "DQO, no value warm-up", "dqo", "diagnostics", {"value_warmup_steps": 0}, default=False
    ),
    Variant("DQO, value lr ×3", "dqo", "diagnostics", default=False, value_lr_scale=3.0),
    Variant(
        "DQO, λ=0.95, no IS", "dqo", "diagnostics", {"lam": 0.95, "is_mode": "none"}, default=False
    ),
    Variant("DRO, knobs tuned", "dro", "knobs tuned", default=False, tune_knobs=True),
    Variant("DQO, knobs tuned", "dqo", "knobs tuned", default=False, tune_knobs=True),
    *_horizon(),
    *_data_sizes(),
    Variant(
        "DQO, critic +4 layers",
        "dqo",
        "critic",
        {"value_extra_layers": 4},
        default=False,
        sweep=True,
    ),
    Variant(
        "DQO, critic head 512 wide",
        "dqo",
        "critic",
        {"value_head_width": 512},
        default=False,
        sweep=True,
    ),
    Variant("DQO, value warm-up ×2", "dqo", "critic", default=False, sweep=True, warmup_scale=2.0),
    # the critic ablation at fixed data (dqo_tutorial.oracle): the same rows as DQO's
    Variant(
        "DQO, oracle critic",
        "dqo",
        "credit",
        {"critic": "oracle"},
        potentials="oracle",
        default=False,
        sweep=True,
    ),
    Variant(
        "DQO, flat critic",
        "dqo",
        "credit",
        {"critic": "flat"},
        potentials="oracle",
        default=False,
        sweep=True,
    ),
    # the critic-alone study's closest setting (docs/credit-assignment/critic-alone): 150
    # value-only steps at value lr 3 × policy lr, then the policy's 50 steps
    Variant(
        "DQO, critic warmed 150 steps",
        "dqo",
        "credit",
        {"max_steps": 200, "value_warmup_steps": 150},
        value_lr_scale=0.3,
        default=False,
        sweep=True,
    ),
    # at λ = 0 the policy's target is r_h + V(s_{h+1}): the critic *is* the credit (at λ = 1 it
    # is a baseline, which leaves the expected gradient unchanged)
    *(
        Variant(
            f"DQO, λ=0, {c} critic",
            "dqo",
            "credit",
            {"critic": c, "lam": 0.0},
            potentials="oracle",
            default=False,
            sweep=True,
        )
        for c in ("oracle", "flat")
    ),
)
"""Every variant; those with ``default=False`` run only when named (``variants``)."""

_BY_NAME = {v.name: v for v in VARIANTS}


def expand_variants(names: Sequence[str]) -> tuple[str, ...]:
    """``--variants``: variant names, ``"all"``, or names of :data:`VARIANT_SETS` (each adds
    the baselines and its groups), in :data:`VARIANTS` order for the sets."""
    names = [n for n in names if n]
    if names == ["all"]:
        return tuple(v.name for v in VARIANTS)
    groups = {g for n in names if n in VARIANT_SETS for g in ("baselines", *VARIANT_SETS[n])}
    picked = [v.name for v in VARIANTS if v.group in groups]
    return tuple(dict.fromkeys(picked + [n for n in names if n not in VARIANT_SETS]))


def _toy_train_defaults() -> dict[str, Any]:
    from .pipeline import TASK_DEFAULTS

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
    """The experiment (module docstring). Sizes chosen so that the default grid takes under half
    an hour on a 2-core CPU; ``train``: the TrainConfig fields every run shares (toy defaults of
    :data:`~dqo_tutorial.pipeline.TASK_DEFAULTS` without the tuned learning rates)."""

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

    def __post_init__(self) -> None:
        from .train import TrainConfig

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
        for name in (*sizes, "horizon_prompts", "horizon_test_problems"):
            if getattr(self, name) < 1:
                raise ValueError(f"ClaimsConfig.{name}: must be >= 1, got {getattr(self, name)}")
        if not self.policy_lrs or min(self.policy_lrs) <= 0:
            raise ValueError(f"ClaimsConfig.policy_lrs: positive rates needed: {self.policy_lrs}")
        if not self.epoch_grid or min(self.epoch_grid) < 1:
            raise ValueError(f"ClaimsConfig.epoch_grid: epochs >= 1 needed: {self.epoch_grid}")
        if not 0 < self.positive_keep < 1:
            raise ValueError("ClaimsConfig.positive_keep: must lie in (0, 1)")
        unknown = [n for n in self.variants if n not in _BY_NAME]
        if unknown:
            raise ValueError(f"ClaimsConfig.variants: unknown {unknown}; known: {list(_BY_NAME)}")
        fixed = {"method", "model", "task", "data", "policy_lr", "value_lr", "seed", "epochs"}
        bad = sorted(set(self.train) & fixed)
        if bad:
            raise ValueError(f"ClaimsConfig.train: {bad} are set by the experiment")
        TrainConfig(method="dqo", model="toy", task="toy", **self.train)  # fails on a bad field
        for m, sets in self.knob_grid.items():
            for knobs in sets:
                try:
                    TrainConfig(method=m, model="toy", task="toy", **{**self.train, **knobs})
                except (TypeError, ValueError) as err:
                    raise ValueError(f"ClaimsConfig.knob_grid[{m!r}]: {knobs}: {err}") from err

    @property
    def selected(self) -> list[Variant]:
        return [_BY_NAME[n] for n in self.variants]


SMOKE: dict[str, Any] = {
    "seeds": (0, 1),
    "sweep_seeds": (0,),
    "epoch_grid": (1, 2),
    "horizon_prompts": 8,
    "horizon_test_problems": 8,
    "horizon_reference": {**HORIZON_REFERENCE, "max_steps": 2},
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


# --------------------------------------------------------------------------------------------
# pure pieces: row selection, tuning choice, aggregation (unit-tested)
# --------------------------------------------------------------------------------------------


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
    from .rewards import outcome
    from .train import dpo_pairs

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


def _mean_std(values: Sequence[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else float("nan"),
        "n_seeds": len(values),
    }


def _scores(hits: Mapping[str, Any], decoding: str) -> list[float]:
    """Per-problem scores from a run's ``hits``: one digit per test problem, the number of
    correct responses (greedy: 0 or 1; sampling: out of ``hits["samples"]``)."""
    k = 1 if decoding == "greedy" else hits["samples"]
    return [int(c) / k for c in hits[decoding]]


def paired_variance(d: Any) -> dict[str, Any]:
    r"""The mean of a seeds × problems table of paired differences, its variance and degrees of
    freedom, from a two-way random-effects decomposition (numpy; ``d`` of shape (..., S, N):
    every leading index is a study of its own).

    ``d[s, p]`` = a − b at seed s on test problem p (the same problems for every seed), modelled
    as :math:`d_{sp} = \mu + \alpha_s + \beta_p + \varepsilon_{sp}` with independent seed,
    problem and cell terms of variances :math:`\sigma^2_S, \sigma^2_P, \sigma^2_E`, so that

    .. math::

        \operatorname{Var}(\bar d) = \frac{\sigma^2_S}{S} + \frac{\sigma^2_P}{N}
            + \frac{\sigma^2_E}{SN}.

    The ANOVA mean squares :math:`M_S = \frac{N}{S-1}\sum_s (\bar d_{s\cdot} - \bar d)^2`,
    :math:`M_P = \frac{S}{N-1}\sum_p (\bar d_{\cdot p} - \bar d)^2` and
    :math:`M_E = \frac{1}{(S-1)(N-1)}\sum_{s,p}(d_{sp} - \bar d_{s\cdot} - \bar d_{\cdot p}
    + \bar d)^2` have expectations :math:`\sigma^2_E + N\sigma^2_S`,
    :math:`\sigma^2_E + S\sigma^2_P` and :math:`\sigma^2_E`. So :math:`M_S/(SN)` estimates
    :math:`\sigma^2_S/S + \sigma^2_E/(SN)` (the spread of the per-seed means, kept whole) and
    :math:`(M_P - M_E)/(SN)` estimates :math:`\sigma^2_P/N`, floored at 0:

    .. math:: \widehat{\operatorname{Var}}(\bar d) = \frac{M_S + (M_P - M_E)_+}{SN}

    (unbiased while :math:`M_P > M_E`, and never below the per-seed means' own spread
    :math:`M_S/(SN)`). Degrees of freedom by Satterthwaite, with
    :math:`\tilde M_S = \max(M_S, M_E)` in place of :math:`M_S`, :math:`f_S = S-1`,
    :math:`f_P = N-1`, :math:`f_E = (S-1)(N-1)`:

    .. math::

        \nu = \frac{\bigl(\tilde M_S + (M_P - M_E)_+\bigr)^2}{\tilde M_S^2/f_S
            + [M_P > M_E]\,\bigl(M_P^2/f_P + M_E^2/f_E\bigr)}.

    Why these choices (coverage of the 95 % interval on the simulated studies of
    tests/test_claims.py, 5,000 per regime × seed count): this one covers 0.945–0.965 in all
    six. :math:`M_S` at face value in ν covers 0.934–0.935 with 3 seeds where problems matter
    (ν runs towards N − 1 exactly when the seed term is underestimated); flooring the seed
    component at :math:`M_E` in the variance too covers 0.927 with 3 seeds when seeds dominate
    and 0.962–0.966 when problems do; flooring the variance at :math:`M_E/(SN)` covers
    0.971–0.982 with 3 seeds; a t on S − 1 df covers 0.974–0.997 where problems matter. With one
    seed (S = 1) this is the paired t over problems, :math:`s^2_P/N` on N − 1 df, and with one
    problem the paired t over seeds. Returns ``mean``, ``var``, ``df`` and the mean squares
    ``ms_seed``, ``ms_problem``, ``ms_resid`` (0 where a factor has one level).
    """
    import numpy as np

    d = np.asarray(d, dtype=np.float64)
    if d.ndim < 2 or d.shape[-1] * d.shape[-2] < 2:
        raise ValueError(
            "paired_interval: needs a seeds × problems table with at least 2 cells, "
            f"got shape {d.shape}"
        )
    n_s, n_p = d.shape[-2:]
    grand = d.mean((-2, -1))
    seed_dev = d.mean(-1) - grand[..., None]  # (..., S)
    prob_dev = d.mean(-2) - grand[..., None]  # (..., N)
    zero = np.zeros_like(grand)
    ms_s = n_p * (seed_dev**2).sum(-1) / (n_s - 1) if n_s > 1 else zero
    ms_p = n_s * (prob_dev**2).sum(-1) / (n_p - 1) if n_p > 1 else zero
    ms_e = zero
    if n_s > 1 and n_p > 1:
        resid = d - seed_dev[..., :, None] - prob_dev[..., None, :] - grand[..., None, None]
        ms_e = (resid**2).sum((-2, -1)) / ((n_s - 1) * (n_p - 1))
    on = ms_p > ms_e
    problem = np.where(on, ms_p - ms_e, 0.0)
    seed = np.maximum(ms_s, ms_e)
    f_s, f_p, f_e = max(n_s - 1, 1), max(n_p - 1, 1), max((n_s - 1) * (n_p - 1), 1)
    spread = seed**2 / f_s + np.where(on, ms_p**2 / f_p + ms_e**2 / f_e, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(spread > 0, (seed + problem) ** 2 / spread, np.inf)
    return {
        "mean": grand,
        "var": (ms_s + problem) / (n_s * n_p),
        "df": df,
        "ms_seed": ms_s,
        "ms_problem": ms_p,
        "ms_resid": ms_e,
    }


def _betainc(a: Any, b: Any, x: Any) -> Any:
    r"""The regularised incomplete beta :math:`I_x(a, b)` (numpy, elementwise), by its
    continued fraction (modified Lentz), on the side where it converges fast:
    :math:`I_x(a, b) = 1 - I_{1-x}(b, a)`."""
    import numpy as np

    a, b, x = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (a, b, x)))
    flip = x > (a + 1) / (a + b + 2)
    a, b, x = np.where(flip, b, a), np.where(flip, a, b), np.where(flip, 1 - x, x)
    lbeta = np.vectorize(lambda p, q: math.lgamma(p) + math.lgamma(q) - math.lgamma(p + q))
    with np.errstate(divide="ignore"):
        front = np.exp(a * np.log(x) + b * np.log1p(-x) - lbeta(a, b)) / a
    tiny = 1e-300
    c, dd = np.ones_like(x), 1 - (a + b) * x / (a + 1)
    dd = 1 / np.where(np.abs(dd) < tiny, tiny, dd)
    h = dd.copy()
    for m in range(1, 2000):
        step = np.ones_like(x)
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):  # fmt: skip
            dd = 1 + num * dd
            dd = 1 / np.where(np.abs(dd) < tiny, tiny, dd)
            c = 1 + num / c
            c = np.where(np.abs(c) < tiny, tiny, c)
            step = dd * c
            h = h * step
        if np.all(np.abs(step - 1) < 1e-15):
            break
    out = front * h
    return np.where(flip, 1 - out, out)


def _t_quantile(p: float, df: Any) -> Any:
    r"""The p-quantile of Student's t with ``df`` degrees of freedom (p ≥ ½; numpy over
    ``df``; ``inf`` → the normal's). Newton on :math:`F(t) = 1 - \tfrac12 I_{\nu/(\nu+t^2)}
    (\nu/2, \tfrac12)` from the normal quantile: F is concave for t > 0 and the start lies
    below the root, so the iterates rise to it monotonically."""
    from statistics import NormalDist

    import numpy as np

    z = NormalDist().inv_cdf(p)
    nu = np.asarray(df, dtype=np.float64)
    finite = np.isfinite(nu)
    v = np.where(finite, nu, 1.0)
    log_c = np.vectorize(lambda n: math.lgamma((n + 1) / 2) - math.lgamma(n / 2))(v)
    log_c = log_c - 0.5 * np.log(v * math.pi)
    t = np.full_like(v, z)
    for _ in range(200):
        cdf = 1 - 0.5 * _betainc(v / 2, 0.5, v / (v + t**2))
        pdf = np.exp(log_c - (v + 1) / 2 * np.log1p(t**2 / v))
        step = (p - cdf) / pdf
        t = t + step
        if np.all(np.abs(step) <= 1e-12 * t):
            break
    out = np.where(finite, t, z)
    return float(out) if out.ndim == 0 else out


def paired_interval(
    a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], *, level: float = 0.95
) -> list[float]:
    r"""The ``level`` interval of mean(a − b) over seeds × problems: :func:`paired_variance`'s
    mean ± :math:`t_{(1+\text{level})/2,\,\nu}\sqrt{\widehat{\operatorname{Var}}}`.

    ``a[s][p]``, ``b[s][p]``: the per-problem score (0/1 greedy, share of correct samples) of
    the two variants at seed s on test problem p — the same problems, the same data. Both
    sources of noise count (which seeds: data draw and training order; which problems), each
    once; tests/test_claims.py checks the coverage on simulated studies. Returns
    ``[low, high]``."""
    import numpy as np

    if not 0 < level < 1:
        raise ValueError(f"paired_interval: level must lie in (0, 1), got {level}")
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired_interval: a and b must have the same shape: {a.shape}, {b.shape}")
    est = paired_variance(a - b)
    half = _t_quantile((1 + level) / 2, float(est["df"])) * math.sqrt(float(est["var"]))
    mean = float(est["mean"])
    return [mean - half, mean + half]


def summarize_runs(
    runs: Sequence[Mapping[str, Any]], paired_with: str = "DQO"
) -> dict[str, dict[str, Any]]:
    """Per variant (in first-seen order): mean and sample std over seeds of the strict greedy and
    sampling test accuracy, the skip reason where a variant never trained, and ``paired``: the
    per-seed difference to its anchor (a run's ``anchor``, else ``paired_with``; same data, same
    seed), mean ± std over the seeds where both trained — the comparison that cancels the
    data-set noise every variant shares —, how many of those seeds have it above and below 0
    (``seeds_above_0``, ``seeds_below_0``) and, where the runs carry per-problem ``hits``, its
    95 % :func:`paired_interval` (``ci95``) over seeds × problems."""
    by: dict[str, list[Mapping[str, Any]]] = {}
    for r in runs:
        by.setdefault(r["variant"], []).append(r)
    out: dict[str, dict[str, Any]] = {}
    for name, rs in by.items():
        against = rs[0].get("anchor", paired_with)
        anchor = {r["seed"]: r["test"] for r in by.get(against, []) if "test" in r}
        done = [r for r in rs if "test" in r]
        entry: dict[str, Any] = {"group": rs[0]["group"], "method": rs[0]["method"]}
        for decoding in ("greedy", "sampling"):
            values = [r["test"][decoding] for r in done if decoding in r["test"]]
            if values:
                entry[decoding] = _mean_std(values)
            both = [
                (r["test"], anchor[r["seed"]])
                for r in done
                if r["seed"] in anchor and decoding in r["test"] and decoding in anchor[r["seed"]]
            ]
            if both and name != against:
                per_seed = [a[decoding] - b[decoding] for a, b in both]
                diff = _mean_std(per_seed)
                diff["seeds_above_0"] = sum(x > 0 for x in per_seed)
                diff["seeds_below_0"] = sum(x < 0 for x in per_seed)
                hits = [(a.get("hits", {}), b.get("hits", {})) for a, b in both]
                if all(decoding in a and decoding in b for a, b in hits):
                    sa = [_scores(a, decoding) for a, _ in hits]
                    if len(sa) * len(sa[0]) > 1:  # (one seed on one problem has no interval)
                        diff["ci95"] = paired_interval(sa, [_scores(b, decoding) for _, b in hits])
                entry.setdefault("paired", {"against": against})[decoding] = diff
        skipped = sorted({r["skipped"] for r in rs if "skipped" in r})
        if skipped:
            entry["skipped"] = skipped
            entry["skipped_seeds"] = len(rs) - len(done)
        entry["responses"] = (
            _mean_std([r["data"]["responses"] for r in rs]) if rs[0].get("data") else None
        )
        out[name] = entry
    return out


def _pct(r: Mapping[str, Any], sign: str = "") -> str:
    """``mean ± std`` in percent (points); with a ``ci95``, the interval after it; with a sign
    count, how many seeds are above 0 (``(4/5 > 0)``)."""
    std = "" if math.isnan(r["std"]) else f" ± {100 * r['std']:.1f}"
    ci = r.get("ci95")
    ci = f" [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]" if ci else ""
    above = f" ({r['seeds_above_0']}/{r['n_seeds']} > 0)" if "seeds_above_0" in r else ""
    return f"{100 * r['mean']:{sign}.1f}{std}{ci}{above}"


def results_table(summary: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown: per variant, greedy and sampling accuracy as mean ± std over seeds (%), and the
    paired differences to its DQO anchor (points: mean ± std over seeds [95 % interval over
    seeds × problems, :func:`paired_interval`] (seeds above 0 / seeds))."""
    lines = [
        "| group | variant | greedy (mean ± std) | sampling τ=1 (mean ± std) "
        "| greedy − DQO, paired [95 % CI] (seeds > 0) "
        "| sampling − DQO, paired [95 % CI] (seeds > 0) | seeds "
        "| responses |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def cell(e: Mapping[str, Any], decoding: str) -> str:
        return _pct(e[decoding]) if decoding in e else "–"

    def paired(e: Mapping[str, Any], decoding: str) -> str:
        return _pct(e["paired"][decoding], "+") if decoding in e.get("paired", {}) else "–"

    for name, e in summary.items():
        seeds = e["greedy"]["n_seeds"] if "greedy" in e else 0
        diffs = f"{paired(e, 'greedy')} | {paired(e, 'sampling')}"
        if "skipped" in e:
            reason = "; ".join(e["skipped"])
            n = e.get("skipped_seeds", 0)
            lines.append(
                f"| {e['group']} | {name} | skipped ({n} seed{'s' * (n != 1)}): {reason} "
                f"| {cell(e, 'sampling')} | {diffs} | {seeds} | – |"
            )
            continue
        resp = f"{e['responses']['mean']:.0f}" if e.get("responses") else "–"
        lines.append(
            f"| {e['group']} | {name} | {cell(e, 'greedy')} | {cell(e, 'sampling')} | {diffs} "
            f"| {seeds} | {resp} |"
        )
    return "\n".join(lines)


def budget_table(
    tuning: Sequence[Mapping[str, Any]],
    chosen: Mapping[str, Mapping[str, Any]],
    runs: Sequence[Mapping[str, Any]],
) -> str:
    """Markdown: the tuning grid (dev greedy % per policy lr × epochs, the chosen trial in bold)
    and, per method, what its chosen budget costs — optimiser steps, tokens seen (prompt and
    response tokens of the training batches) and training wall time, mean over the baseline
    runs' seeds — next to its test accuracy."""
    trials = sorted({(r["epochs"], r["policy_lr"]) for r in tuning})
    head = " | ".join(f"{lr:g} × {e} ep" for e, lr in trials)
    lines = [f"| dev greedy (%) | {head} | chosen |", "|---" * (len(trials) + 2) + "|"]
    for m in dict.fromkeys(r["method"] for r in tuning):
        cells = []
        for e, lr in trials:
            r = next(r for r in tuning if (r["method"], r["epochs"], r["policy_lr"]) == (m, e, lr))
            value = "–" if r["dev"] is None else f"{100 * r['dev']:.1f}"
            pick = chosen.get(m) == {"policy_lr": lr, "epochs": e}
            cells.append(f"**{value}**" if pick else value)
        c = chosen.get(m, {})
        lines.append(
            f"| {m} | {' | '.join(cells)} | {c.get('policy_lr', 0):g} × {c.get('epochs')} |"
        )
    lines += [
        "",
        "| method | lr × epochs | steps | tokens seen | train wall (s) | greedy | sampling |",
        "|---|---|---|---|---|---|---|",
    ]
    for m, c in chosen.items():
        base = [r for r in runs if r["group"] == "baselines" and r["method"] == m and "test" in r]
        trained = [r["train"] for r in base if "train" in r]
        if not trained:
            continue
        steps = statistics.fmean(t["steps"] for t in trained)
        tokens = statistics.fmean(t.get("tokens", 0) for t in trained)
        wall = statistics.fmean(t["wall_s"] for t in trained)
        acc = {d: _mean_std([r["test"][d] for r in base]) for d in ("greedy", "sampling")}
        lines.append(
            f"| {m} | {c['policy_lr']:g} × {c['epochs']} | {steps:.0f} | {tokens / 1e3:,.0f} k "
            f"| {wall:.0f} | {_pct(acc['greedy'])} | {_pct(acc['sampling'])} |"
        )
    return "\n".join(lines)


SWEEPS = ("horizon", "data-size sweep")
_SWEEP_METHODS = {
    "horizon": ("π_ref", "RFT", "DRO", "DQO", "DQO, α=0.5 exact Φ"),
    "data-size sweep": ("RFT", "DRO", "DQO"),
}


def sweep_points(runs: Sequence[Mapping[str, Any]], axis: str) -> dict[Any, dict[str, Any]]:
    """Per sweep point (operations, or training prompts): :func:`summarize_runs` of its
    methods, keyed by the method's short name. The data-size sweep's middle point is the
    baselines' runs at the sweep's seeds (the same training, not a second copy)."""
    if axis == "horizon":
        picked = [dict(r, point=r["ops"]) for r in runs if r["group"] == "horizon"]
    else:
        sweep = [r for r in runs if r["group"] == "data-size sweep"]
        seeds = {r["seed"] for r in sweep}
        names = _SWEEP_METHODS[axis]
        middle = [r for r in runs if r["group"] == "baselines" and r["variant"] in names
                  and r["seed"] in seeds]  # fmt: skip
        picked = [dict(r, point=r["prompts"]) for r in sweep + (middle if sweep else [])]
    points: dict[Any, dict[str, Any]] = {}
    for x in sorted({r["point"] for r in picked}):
        here = [
            dict(r, variant=_short(r["variant"]), anchor="DQO") for r in picked if r["point"] == x
        ]
        points[x] = summarize_runs(here)
    return points


def _short(variant: str) -> str:
    """A sweep variant's method name: ``"DQO, 6 ops"`` → ``"DQO"``."""
    for name in sorted({n for ns in _SWEEP_METHODS.values() for n in ns}, key=len, reverse=True):
        if variant == name or variant.startswith(name + ", "):
            return name
    return variant


def sweep_table(summary: Mapping[str, Any], runs: Sequence[Mapping[str, Any]], axis: str) -> str:
    """Markdown: per sweep point, greedy accuracy per method (mean ± std over seeds) and the
    paired DQO − DRO and DQO − RFT greedy differences with their 95 % intervals and sign
    counts; "" if the sweep did not run."""
    points = sweep_points(runs, axis)
    if not points:
        return ""
    names = _SWEEP_METHODS[axis]
    x_name = "operations" if axis == "horizon" else "training prompts"
    lines = [
        f"| {x_name} | "
        + " | ".join(f"{n} greedy" for n in names)
        + " | DQO − DRO [95 % CI] (seeds > 0) | DQO − RFT [95 % CI] (seeds > 0) |",
        "|---" * (len(names) + 3) + "|",
    ]
    for x, summ in points.items():
        cells = [_pct(summ[n]["greedy"]) if "greedy" in summ.get(n, {}) else "–" for n in names]
        diffs = [_pct(_flip(summ[n]["paired"]["greedy"]), "+")
                 if "greedy" in summ.get(n, {}).get("paired", {}) else "–"
                 for n in ("DRO", "RFT")]  # fmt: skip
        lines.append(f"| {x} | " + " | ".join(cells + diffs) + " |")
    return "\n".join(lines)


def _flip(diff: Mapping[str, Any]) -> dict[str, Any]:
    """X − DQO → DQO − X (the mean and the interval change sign, the sign counts swap)."""
    out = dict(diff, mean=0.0 - diff["mean"] + 0.0)  # (+ 0.0: no "-0.0" in the tables)
    if "seeds_above_0" in diff:
        out["seeds_above_0"], out["seeds_below_0"] = diff["seeds_below_0"], diff["seeds_above_0"]
    if "ci95" in diff:
        out["ci95"] = [0.0 - diff["ci95"][1] + 0.0, 0.0 - diff["ci95"][0] + 0.0]
    return out


# --------------------------------------------------------------------------------------------
# jobs (each runs in a worker process; every one resumes on its own)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Setting:
    """Where a variant's data come from: its task, its number of training prompts and the π_ref
    that samples them (``"toy"`` or a model directory: the horizon sweep's mixed π_ref)."""

    task: str = "toy"
    prompts: int = 400
    reference: str = "toy"

    def folder(self, default: _Setting) -> str:
        """The data folder's name under ``data/`` (the default setting keeps ``data/seed-S``)."""
        if self == default:
            return ""
        ref = "" if self.reference == "toy" else "-mixed-ref"
        return f"{self.task}-{self.prompts}p{ref}"


_REFERENCES: dict[str, tuple[Any, Any]] = {}


def _reference(spec: str = "toy") -> tuple[Any, Any]:
    """A π_ref (the shipped toy model, or a model directory), loaded once per worker (jobs copy
    it before training)."""
    if spec not in _REFERENCES:
        from .models import load_model_and_tokenizer

        _REFERENCES[spec] = load_model_and_tokenizer(spec, device="cpu")
    return _REFERENCES[spec]


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _sampling_config(cfg: ClaimsConfig, seed: int, setting: _Setting) -> Any:
    from .sampling import SamplingConfig
    from .tasks import get_task

    return SamplingConfig(
        model=setting.reference,
        task=setting.task,
        limit=setting.prompts,
        num_samples=cfg.num_samples,
        max_new_tokens=get_task(setting.task).max_new_tokens,
        batch_size=256,
        shard_size=setting.prompts,
        seed=seed,
        process_rewards=True,
        process_k=cfg.process_k,
    )


def _job_data(cfg: ClaimsConfig, seed: int, out: str, setting: _Setting) -> dict[str, Any]:
    """Sample seed s's dataset of ``setting`` (exact Φ) into ``out/exact``."""
    from .sampling import build_dataset, summarize

    model, tok = _reference(setting.reference)
    t = time.perf_counter()
    ds = build_dataset(
        _sampling_config(cfg, seed, setting),
        Path(out) / "exact",
        model=model,
        tokenizer=tok,
        progress=False,
    )
    return {"seed": seed, "summary": summarize(ds), "wall_s": time.perf_counter() - t}


def _job_monte_carlo(cfg: ClaimsConfig, seed: int, out: str) -> dict[str, Any]:
    """The same rows with Monte-Carlo Φ into ``out/monte_carlo`` (skipped when present)."""
    from .sampling import with_monte_carlo_potentials
    from .train import load_rows

    target = Path(out) / "monte_carlo"
    t = time.perf_counter()
    if not target.is_dir():
        model, tok = _reference()
        relabelled = with_monte_carlo_potentials(
            load_rows(Path(out) / "exact"), _sampling_config(cfg, seed, _Setting()), model, tok
        )
        save_dataset_atomically(relabelled, target)
    return {"seed": seed, "wall_s": time.perf_counter() - t}


def _job_oracle(cfg: ClaimsConfig, seed: int, out: str) -> dict[str, Any]:
    """The same rows with the oracle critic's columns (:mod:`dqo_tutorial.oracle`, ``oracle_k``
    rollouts per anchor) into ``out/oracle`` (skipped when present)."""
    from datasets import Dataset

    from .oracle import with_oracle_values
    from .tasks import get_task
    from .train import load_rows

    target = Path(out) / "oracle"
    t = time.perf_counter()
    if not target.is_dir():
        model, tok = _reference()
        rows = [dict(r) for r in load_rows(Path(out) / "exact")]
        labelled = with_oracle_values(rows, model, tok, task=get_task("toy"), k=cfg.oracle_k,
                                      seed=seed, batch_size=256)  # fmt: skip
        save_dataset_atomically(Dataset.from_list(labelled), target)
    bounds = list(load_rows(target)["oracle_bound"])
    return {
        "seed": seed,
        "wall_s": time.perf_counter() - t,
        "oracle_bound_mean": statistics.fmean(bounds),
        "oracle_bound_max": max(bounds),
    }


def _job_mixed_reference(cfg: ClaimsConfig, out: str) -> dict[str, Any]:
    """The horizon sweep's π_ref (:data:`HORIZON_REFERENCE`) into ``out`` (resumes; a finished
    one is reused; its accuracy per length is the sweep's ``π_ref, n ops`` rows)."""
    from .recipes import train_toy_reference

    t = time.perf_counter()
    if not (Path(out) / "train_summary.json").exists():
        train_toy_reference(out, **cfg.horizon_reference, progress=False)
    summary = json.loads((Path(out) / "train_summary.json").read_text())
    return {"steps": summary["steps"], "wall_s": time.perf_counter() - t}


def _behavior_law(data: str) -> Any:
    """The sampling law of a seed's rows: recorded beside ``exact/`` (the Monte-Carlo relabelling
    in ``monte_carlo/`` keeps the same responses, so the same law)."""
    from .train import behavior_law_of

    law = behavior_law_of(data) or behavior_law_of(Path(data).parent / "exact")
    if law is None:
        raise FileNotFoundError(f"no sampling_config.json for {data} or beside it in exact/")
    return law


def _accuracy(res: Mapping[str, Any]) -> dict[str, Any]:
    """Strict accuracies of an evaluation: ``{greedy, sampling, stderr: {…}, n: {…}, invalid}``."""
    acc = res["accuracy"]
    kinds = [d for d in ("greedy", "sampling") if d in acc]
    return {d: acc[d]["strict"]["mean"] for d in kinds} | {
        "stderr": {d: acc[d]["strict"]["stderr"] for d in kinds},
        "n": {d: acc[d]["strict"]["n"] for d in kinds},
        "invalid_greedy": acc["greedy"]["invalid"]["mean"] if "greedy" in acc else None,
    }


def _hits(eval_dir: Path, problems: int, samples: int) -> dict[str, Any]:
    """Per test problem, its number of strictly correct responses (:func:`_scores`), read from
    the evaluation's ``outputs.jsonl``: one digit per problem and decoding."""
    if samples > 9:
        raise ValueError("hits keep one digit per problem: eval_samples must be <= 9")
    counts = {"greedy": [0] * problems, "sampling": [0] * problems}
    with (eval_dir / "outputs.jsonl").open() as f:
        for line in f:
            r = json.loads(line)
            counts[r["decoding"]][r["problem_index"]] += bool(r["correct_strict"])
    out: dict[str, Any] = {"greedy": "".join(map(str, counts["greedy"]))}
    if samples:
        out |= {"sampling": "".join(map(str, counts["sampling"])), "samples": samples}
    return out


def _greedy_dev_probe(problems: Sequence[Any], tokenizer: Any) -> Callable[[Any], dict]:
    from .gsm8k import is_correct
    from .sampling import generate
    from .toy import MAX_NEW_TOKENS, format_prompt  # the curves probe the default toy task

    prompts = [format_prompt(p.question) for p in problems]

    def probe(policy: Any) -> dict[str, float]:
        gens = generate(
            policy,
            tokenizer,
            prompts,
            temperature=0.0,
            batch_size=256,
            max_new_tokens=MAX_NEW_TOKENS,
            record_logps=False,
        )
        hits = sum(is_correct(g.text, problems[g.prompt_index].gold) for g in gens)
        return {"dev_greedy": hits / len(prompts)}

    return probe


def _expected_steps(method: str, rows: Any, n_prompts: int, tcfg: Any) -> int:
    """Optimiser steps of the run (the example counts of ``train.build_examples``), to space
    the learning-curve probes; SFT has ``rows`` None and one example per prompt."""
    from .rewards import outcome
    from .train import dpo_pairs

    if tcfg.max_steps:
        return tcfg.max_steps
    n = {
        "sft": lambda: n_prompts,
        "rft": lambda: sum(outcome(r) == 1.0 for r in rows),
        "dro": lambda: sum(outcome(r) is not None for r in rows),
        "dpo": lambda: len(dpo_pairs(rows, tcfg.dpo_pairs_per_prompt, tcfg.seed)),
    }.get(method, lambda: len(rows))()
    return max(1, tcfg.epochs * (n // (tcfg.batch_size * tcfg.grad_accum)))


def _job_run(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Train one configuration on its rows (π_ref: nothing to train), then evaluate it.

    Every stage resumes on its own: training from its checkpoints (a finished one is reused when
    its config matches: the seed-0 grid run of a method *is* its chosen tuning run), evaluation
    from its ``outputs.jsonl``, a run without enough data from its ``skipped.json``."""
    from .evaluate import EvalConfig, evaluate
    from .models import load_model_and_tokenizer
    from .rewards import outcome
    from .tasks import get_task
    from .toy import load_toy
    from .train import NotEnoughDataError, TrainConfig, finished_summary, load_rows, train

    run_dir = Path(spec["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    check_run_identity(run_dir / "spec.json", {"config": spec["trained"]})
    t = time.perf_counter()
    ref_model, tok = _reference(spec["reference"])
    record: dict[str, Any] = {}
    model = ref_model
    if spec["method"] != "reference":
        tcfg = TrainConfig(**spec["train"])
        if tcfg.method == "sft":  # gold solutions of the sampled prompts: no sampled rows
            rows = None
            record["data"] = {
                "responses": spec["prompts"],
                "positives": spec["prompts"],
                "gold": True,
            }
        else:
            rows = load_rows(spec["data"])
            rows = rows.select(
                select_rows(
                    rows,
                    spec["rows"],
                    seed=tcfg.seed,
                    positive_keep=spec["positive_keep"],
                    pairs_per_prompt=tcfg.dpo_pairs_per_prompt,
                )
            )
            positives = int(sum(outcome(r) == 1.0 for r in rows))
            record["data"] = {"responses": len(rows), "positives": positives}
        skipped_path = run_dir / "skipped.json"
        if skipped_path.exists():
            return {**record, **json.loads(skipped_path.read_text())}
        summary = finished_summary(tcfg, run_dir / "train")
        if summary is None:
            probe, every = None, 0
            if spec["curve_problems"]:
                probe = _greedy_dev_probe(load_toy("dev", spec["curve_problems"]), tok)
                steps = _expected_steps(tcfg.method, rows, spec["prompts"], tcfg)
                every = max(1, math.ceil(steps / spec["curve_points"]))
            try:
                summary = train(
                    tcfg,
                    run_dir / "train",
                    policy=copy.deepcopy(ref_model),
                    tokenizer=tok,
                    rows=rows,
                    progress=False,
                    probe=probe,
                    probe_every=every,
                    behavior=_behavior_law(spec["data"]) if rows is not None else None,
                )
            except NotEnoughDataError as err:
                skipped = {"skipped": err.reason}
                atomic_write_json(skipped_path, skipped)
                return {**record, **skipped}
        log_lines = (run_dir / "train" / "log.jsonl").read_text().splitlines()
        log = [json.loads(line) for line in log_lines]
        keep = (
            "kl_theta_ref",
            "is_weight_mean",
            "is_clip_rate",
            "value_error",
            "dpo_accuracy",
            "nll",
        )
        record["train"] = {
            "steps": summary["steps"],
            "epochs": tcfg.epochs,
            "tokens": sum(r.get("tokens", 0) for r in log),
            "wall_s": summary["wall_s_this_run"],
            "last": {k: v for k, v in summary["last"].items() if k in keep},
        }
        record["curve"] = [[r["step"], r["dev_greedy"]] for r in log if "dev_greedy" in r]
        model, _ = load_model_and_tokenizer(str(run_dir / "train" / "policy"), device="cpu")
    elif spec["curve_problems"]:
        probe = _greedy_dev_probe(load_toy("dev", spec["curve_problems"]), tok)
        record["curve"] = [[0, probe(ref_model)["dev_greedy"]]]
    evals = (
        ("dev", spec["dev_problems"], 0),
        ("test", spec["test_problems"], spec["eval_samples"]),
    )
    for split, limit, samples in evals:
        if not limit:
            continue
        ecfg = EvalConfig(
            model=spec["label"],
            task=spec["task"],
            split=split,
            limit=limit,
            num_samples=samples,
            batch_size=256,
            seed=spec["seed"],
            max_new_tokens=get_task(spec["task"]).max_new_tokens,
        )
        res = evaluate(ecfg, run_dir / f"eval-{split}", model=model, tokenizer=tok, progress=False)
        record[split] = _accuracy(res) | {"hits": _hits(run_dir / f"eval-{split}", limit, samples)}
    record["wall_s"] = time.perf_counter() - t
    return record


# --------------------------------------------------------------------------------------------
# the experiment
# --------------------------------------------------------------------------------------------


@dataclass
class _Job:
    name: str
    cost: float  # a rough estimate in seconds: longest first
    deps: tuple[str, ...]
    make: Callable[[Mapping[str, Any]], tuple[Callable[..., Any], tuple[Any, ...]]]


def _schedule(jobs: Sequence[_Job], workers: int, say: Callable[[str], None]) -> dict[str, Any]:
    """Run ``jobs`` respecting ``deps``; returns their results by name.

    Among the ready jobs the one heading the costliest chain of dependents goes first (critical
    path: a dataset before the runs that wait for it, long trainings before short ones)."""
    done: dict[str, Any] = {}
    pending = {j.name: j for j in jobs}
    dependents: dict[str, list[str]] = {name: [] for name in pending}
    for j in jobs:
        for d in j.deps:
            dependents.setdefault(d, []).append(j.name)
    chain: dict[str, float] = {}

    def priority(name: str) -> float:
        if name not in chain:
            later = [priority(c) for c in dependents[name]]
            chain[name] = pending[name].cost + max(later, default=0.0)
        return chain[name]

    for name in pending:
        priority(name)
    running: dict[Future, str] = {}
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = get_context("spawn")
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_worker_init, initargs=(threads,)
    ) as pool:
        while pending or running:
            ready = sorted(
                (j for j in pending.values() if all(d in done for d in j.deps)),
                key=lambda j: -chain[j.name],
            )
            for j in ready[: workers - len(running)]:
                fn, args = j.make(done)
                running[pool.submit(fn, *args)] = j.name
                del pending[j.name]
            if not running:
                raise RuntimeError(f"jobs with unmet dependencies: {sorted(pending)}")
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                name = running.pop(fut)
                done[name] = fut.result()  # a failed job stops the experiment (resumable)
                say(f"{len(done)}/{len(jobs)} {name}")
    return done


def _key(payload: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:8]


def _slug(name: str) -> str:
    keep = "".join(c if c.isalnum() else "-" for c in name.lower())
    return "-".join(filter(None, keep.split("-")))


def run_toy_claims(
    cfg: ClaimsConfig, out_dir: str | os.PathLike[str], *, progress: bool = True
) -> dict[str, Any]:
    """Run (or resume) the experiment into ``out_dir``; returns ``results.json``'s dict. A
    second experiment into the same folder is refused while this one runs."""
    with run_lock(out_dir):
        return _run_toy_claims(cfg, out_dir, progress=progress)


def _run_toy_claims(
    cfg: ClaimsConfig, out_dir: str | os.PathLike[str], *, progress: bool = True
) -> dict[str, Any]:
    """The experiment: its job graph (:class:`_Plan`), scheduled on the workers, then the
    aggregation of what the jobs returned (:meth:`_Plan.results`)."""
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # what the shared artifacts depend on. Seeds, rates and variants may change on a rerun (each
    # run directory is keyed by its own training configuration, each dataset and evaluation
    # checks its own), and so may the number of workers.
    free = ("seeds", "policy_lrs", "epoch_grid", "variants", "workers", "knob_grid", "sweep_seeds",
            "budgets")  # fmt: skip
    free += ("horizon_prompts", "horizon_test_problems", "horizon_eval_samples")
    free += ("horizon_reference",)  # (the mixed π_ref's folder is keyed by it)
    shared = {k: v for k, v in asdict(cfg).items() if k not in free}
    check_run_identity(out / "experiment_config.json", {"config": _jsonable(shared)})

    def say(msg: str) -> None:
        if progress:
            print(f"[{time.perf_counter() - start:6.0f} s] {msg}", flush=True)

    plan = _Plan(cfg, out)
    jobs = plan.jobs()
    say(
        f"{len(jobs)} jobs on {cfg.workers} worker(s): {len(cfg.seeds)} seeds × "
        f"{len(plan.variants)} variants, tuning {len(plan.tuned)} methods × "
        f"{len(cfg.policy_lrs)} rates × {len(cfg.epoch_grid)} epoch counts"
    )
    done = _schedule(jobs, cfg.workers, say)
    payload = plan.results(done)
    payload["wall_s_this_run"] = time.perf_counter() - start
    _write_outputs(payload, out, progress=progress)
    return payload


def resummarize(out_dir: str | os.PathLike[str], *, progress: bool = True) -> dict[str, Any]:
    """``--resummarize``: recompute ``results.json``'s summary from its runs (their per-seed
    accuracies and per-problem hits; nothing is retrained or re-evaluated) and rewrite it with
    ``results.md`` and the plots. For a study written by an older aggregation."""
    path = Path(out_dir) / "results.json"
    if not path.is_file():
        raise DataError(f"--resummarize: no {path}; run the experiment into --out first")
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"--resummarize: {path} is not valid JSON ({err})") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("runs"), list):
        raise DataError(f"--resummarize: {path} has no list of runs")
    payload["summary"] = summarize_runs(payload["runs"])
    _write_outputs(payload, Path(out_dir), progress=progress)
    return payload


def _write_outputs(payload: dict[str, Any], out: Path, *, progress: bool) -> None:
    """``results.json``, ``results.md`` (the tables) and the plots of one experiment."""
    table = results_table(payload["summary"])
    budget = budget_table(payload["tuning"], payload["chosen"], payload["runs"])
    sweeps = {axis: sweep_table(payload["summary"], payload["runs"], axis) for axis in SWEEPS}
    sweeps = {axis: t for axis, t in sweeps.items() if t}
    text = "\n\n".join([table, budget, *sweeps.values()])
    (out / "results.md").write_text(text + "\n")
    plots = ["accuracy.png", "curves.png"]
    plot_accuracy(payload["summary"], payload["runs"], out / "accuracy.png")
    plot_curves(payload["runs"], payload["reference_curve_start"], out / "curves.png")
    if any(r["group"] == "λ-return" for r in payload["runs"]):
        plot_lambda(payload["summary"], out / "lambda.png")
        plots.append("lambda.png")
    for axis in sweeps:
        plot_sweep(payload["summary"], payload["runs"], axis, out / f"{_slug(axis)}.png")
        plots.append(f"{_slug(axis)}.png")
    atomic_write_json(out / "results.json", payload)
    if progress:
        print(text)
        print(
            f"wall time {payload['wall_s_this_run']:.0f} s; wrote {out}/results.{{json,md}}, "
            + ", ".join(plots)
        )


class _Plan:
    """The toy-claims experiment as a graph of resumable jobs (data, tuning, knob tuning, the
    mixed π_ref, test runs) and the rules that read the finished jobs (chosen budgets and knobs,
    the results)."""

    def __init__(self, cfg: ClaimsConfig, out: Path) -> None:
        self.cfg, self.out = cfg, out
        self.variants = cfg.selected
        self.tuned = sorted({v.method for v in self.variants} - {"reference"} - set(cfg.budgets))
        self.knob_methods = sorted({v.method for v in self.variants if v.tune_knobs})
        self.tune_seed = cfg.seeds[0]
        self.base_variant = {v.method: v for v in VARIANTS if v.group == "baselines"}
        self.default = _Setting(prompts=cfg.prompts)
        self.mixed_ref = str(out / f"reference-mixed-{_key(_jsonable(cfg.horizon_reference))}")

    def seeds_of(self, v: Variant) -> tuple[int, ...]:
        return self.cfg.sweep_seeds if v.sweep else self.cfg.seeds

    def setting(self, v: Variant) -> _Setting:
        if v.ops is not None:
            policy = str(Path(self.mixed_ref) / "policy")
            return _Setting(v.task, self.cfg.horizon_prompts, policy)
        return _Setting(prompts=max(1, round(v.data_scale * self.cfg.prompts)))

    def data_dir(self, seed: int, potentials: str = "exact", setting: _Setting | None = None):
        folder = (setting or self.default).folder(self.default)
        return str(self.out / "data" / folder / f"seed-{seed}" / potentials)

    def data_job(self, seed: int, setting: _Setting) -> str:
        folder = setting.folder(self.default)
        return f"data {folder} s{seed}" if folder else f"data s{seed}"

    def spec(
        self, v: Variant, seed: int, budget: Mapping[str, Any] | None, *, dev: bool, test: bool
    ) -> dict:
        """What one run job trains and evaluates, and its run directory (one per distinct
        training: the evaluations it gets may differ)."""
        from .train import TrainConfig

        cfg, setting = self.cfg, self.setting(v)
        horizon = v.ops is not None
        base = {
            "method": v.method,
            "rows": v.rows,
            "seed": seed,
            "label": v.name,
            "task": v.task,
            "reference": setting.reference,
            "positive_keep": cfg.positive_keep,
            "prompts": setting.prompts,
            "dev_problems": cfg.dev_problems if dev else 0,
            "test_problems": (cfg.horizon_test_problems if horizon else cfg.test_problems)
            if test
            else 0,
            "eval_samples": cfg.horizon_eval_samples if horizon else cfg.eval_samples,
            # π_ref's curve is one point: step 0 of every method's curve
            "curve_problems": cfg.curve_problems
            if (v.curve or v.method == "reference") and not (horizon or v.sweep)
            else 0,
            "curve_points": cfg.curve_points,
        }
        if v.method != "reference":
            assert budget is not None
            lr = budget["policy_lr"]
            value_lr = cfg.value_lr_ratio * lr * v.value_lr_scale
            # the value warm-up scales with the steps of an epoch (the data size)
            warmup = cfg.train.get("value_warmup_steps", 0) * v.warmup_scale
            warmup = max(1, round(warmup * setting.prompts / cfg.prompts)) if warmup else 0
            if cfg.train.get("max_steps"):  # (smoke sizes: the policy must train at all)
                warmup = min(warmup, cfg.train["max_steps"] - 1)
            values = {**cfg.train, "value_warmup_steps": warmup, "policy_lr": lr,
                      "value_lr": value_lr, "epochs": budget["epochs"], **v.train}  # fmt: skip
            tcfg = TrainConfig(
                method=v.method,
                model=setting.reference,
                task=v.task,
                seed=seed,
                data=self.data_dir(seed, v.potentials, setting),
                limit=setting.prompts,
                **values,
            )
            base |= {"train": tcfg.identity(), "data": tcfg.data}
        base["trained"] = {
            k: base.get(k)
            for k in ("method", "rows", "train", "positive_keep", "seed", "curve_problems")
        } | {"curve_points": cfg.curve_points}
        if horizon or v.data_scale != 1.0:  # (the default runs keep their directories)
            base["trained"] |= {"task": v.task, "reference": setting.reference,
                                "prompts": setting.prompts}  # fmt: skip
        key = _key(base["trained"])
        base["run_dir"] = str(self.out / "runs" / f"seed-{seed}" / f"{_slug(v.name)}-{key}")
        return base

    def trials(self) -> list[tuple[str, float, int]]:
        """Every tuning trial: (method, policy lr, epochs) — the same grid for every method."""
        return [
            (m, lr, e)
            for m in self.tuned
            for e in self.cfg.epoch_grid
            for lr in self.cfg.policy_lrs
        ]

    @staticmethod
    def trial(m: str, lr: float, e: int) -> str:
        return f"tune {m} lr={lr:g} ep={e}"

    def jobs(self) -> list[_Job]:
        """Every job with its dependencies; a job's arguments are built once its dependencies
        are done (the chosen budget of a test run comes from the finished tuning jobs)."""
        cfg, jobs = self.cfg, []
        needs_mc = any(v.potentials == "monte_carlo" for v in self.variants)
        needs_oracle = any(v.potentials == "oracle" for v in self.variants)
        data = self._data_jobs()
        horizon = any(v.ops is not None for v in self.variants)
        if horizon:
            jobs.append(
                _Job(
                    "π_ref mixed", 600, (), lambda d: (_job_mixed_reference, (cfg, self.mixed_ref))
                )
            )
        for name, (s, setting) in data.items():
            folder = str(Path(self.data_dir(s, setting=setting)).parent)
            deps = ("π_ref mixed",) if setting.reference != "toy" else ()
            cost = 30 * setting.prompts / cfg.prompts
            jobs.append(
                _Job(
                    name,
                    cost,
                    deps,
                    lambda d, f=folder, s=s, g=setting: (_job_data, (cfg, s, f, g)),
                )
            )
            if needs_mc and setting == self.default:
                jobs.append(
                    _Job(
                        f"mc s{s}",
                        100,
                        (name,),
                        lambda d, f=folder, s=s: (_job_monte_carlo, (cfg, s, f)),
                    )
                )
            if needs_oracle and setting == self.default:
                jobs.append(
                    _Job(
                        f"oracle s{s}",
                        100,
                        (name,),
                        lambda d, f=folder, s=s: (_job_oracle, (cfg, s, f)),
                    )
                )
        for m, lr, e in self.trials():
            v = self.base_variant[m]
            budget = {"policy_lr": lr, "epochs": e}
            jobs.append(
                _Job(
                    self.trial(m, lr, e),
                    _cost(m) * e,
                    (f"data s{self.tune_seed}",),
                    lambda d, v=v, b=budget: (
                        _job_run,
                        (self.spec(v, self.tune_seed, b, dev=True, test=False),),
                    ),
                )
            )
        trials = tuple(self.trial(*t) for t in self.trials())
        for m in self.knob_methods:
            if m not in cfg.knob_grid:
                raise ValueError(f"ClaimsConfig.knob_grid: no knob sets for {m!r}")
            for i, knobs in enumerate(cfg.knob_grid[m]):
                v = dataclasses.replace(self.base_variant[m], train=dict(knobs))
                jobs.append(
                    _Job(
                        f"knobs {m} {i}",
                        _cost(m),
                        trials,
                        lambda d, v=v: (
                            _job_run,
                            (
                                self.spec(
                                    v,
                                    self.tune_seed,
                                    self.chosen(d)[v.method],
                                    dev=True,
                                    test=False,
                                ),
                            ),
                        ),
                    )
                )
        jobs += self._test_jobs(trials, horizon)
        # π_ref on dev: the start of every learning curve and the tuning table's reference
        ref = _BY_NAME["π_ref"]
        jobs.append(
            _Job(
                "π_ref dev",
                5,
                (),
                lambda d: (_job_run, (self.spec(ref, self.tune_seed, None, dev=True, test=False),)),
            )
        )
        return jobs

    def _test_jobs(self, trials: tuple[str, ...], horizon: bool) -> list[_Job]:
        """Every variant × its seeds on the test split, after its data, tuning and knob jobs."""
        cfg, jobs = self.cfg, []
        for v in self.variants:
            for s in self.seeds_of(v):
                deps = [self.data_job(s, self.setting(v))]
                deps += [f"mc s{s}"] if v.potentials == "monte_carlo" else []
                deps += [f"oracle s{s}"] if v.potentials == "oracle" else []
                deps += ["π_ref mixed"] if v.ops is not None else []
                if v.tune_knobs:
                    deps += [f"knobs {v.method} {i}" for i in range(len(cfg.knob_grid[v.method]))]
                if v.method != "reference":
                    deps += [t for t in trials if t.split()[1] == v.method]
                scale = (v.ops or 3) / 3 * (cfg.horizon_prompts / cfg.prompts if v.ops else 1)
                jobs.append(
                    _Job(
                        f"{v.name} s{s}",
                        _cost(v.method) * scale * v.data_scale,
                        tuple(deps),
                        lambda d, v=v, s=s: (
                            _job_run,
                            (
                                self.spec(
                                    self.resolved(v, d),
                                    s,
                                    self.chosen(d).get(v.method),
                                    dev=False,
                                    test=True,
                                ),
                            ),
                        ),
                    )
                )
        return jobs

    def tuning(self, d: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The finished tuning trials: method, rate, epochs, dev accuracy and what they cost."""
        rows = []
        for m, lr, e in self.trials():
            rec = d.get(self.trial(m, lr, e))
            if rec is None:
                continue
            rows.append(
                {
                    "method": m,
                    "policy_lr": lr,
                    "epochs": e,
                    "value_lr": self.cfg.value_lr_ratio * lr if m in ("dro", "dqo") else None,
                    "dev": rec.get("dev", {}).get("greedy"),
                    "skipped": rec.get("skipped"),
                    "train": rec.get("train"),
                    "curve": rec.get("curve"),
                }
            )
        return rows

    def chosen(self, d: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """The (policy lr, epochs) each method chose on dev (:func:`choose_budgets`), or was
        given (:attr:`ClaimsConfig.budgets`)."""
        return choose_budgets(self.tuning(d)) | {m: dict(b) for m, b in self.cfg.budgets.items()}

    def knobs_of(self, d: Mapping[str, Any], m: str) -> tuple[int, Mapping[str, Any]]:
        """The winning knob set of ``m`` on dev (ties: the earlier set)."""
        grid = self.cfg.knob_grid[m]
        scores = [d[f"knobs {m} {i}"].get("dev", {}).get("greedy", -1.0) for i in range(len(grid))]
        best = max(range(len(scores)), key=lambda i: (scores[i], -i))
        return best, grid[best]

    def resolved(self, v: Variant, d: Mapping[str, Any]) -> Variant:
        if not v.tune_knobs:
            return v
        return dataclasses.replace(v, train={**self.knobs_of(d, v.method)[1], **v.train})

    def results(self, done: Mapping[str, Any]) -> dict[str, Any]:
        """``results.json`` (without its wall time) from the finished jobs."""
        cfg, budgets = self.cfg, self.chosen(done)
        knob_tuning = [
            {
                "method": m,
                "knobs": dict(knobs),
                "dev": done[f"knobs {m} {i}"].get("dev", {}).get("greedy"),
                "chosen": i == self.knobs_of(done, m)[0],
            }
            for m in self.knob_methods
            for i, knobs in enumerate(cfg.knob_grid[m])
        ]
        runs = []
        for v in self.variants:
            for s in self.seeds_of(v):
                rec = done[f"{v.name} s{s}"]
                v = self.resolved(v, done)
                runs.append(
                    {
                        "variant": v.name,
                        "group": v.group,
                        "method": v.method,
                        "anchor": v.anchor,
                        "seed": s,
                        "ops": v.ops,
                        "prompts": self.setting(v).prompts,
                        **({"budget": budgets[v.method]} if v.method in budgets else {}),
                        "overrides": dict(v.train),
                        "rows": v.rows,
                        "potentials": v.potentials,
                        **rec,
                    }
                )
        runs.sort(key=lambda r: (r["seed"], [v.name for v in self.variants].index(r["variant"])))
        data = {
            name: {
                "seed": s,
                "task": g.task,
                "prompts": g.prompts,
                "mixed_reference": g.reference != "toy",
                **done[name]["summary"],
            }
            for name, (s, g) in self._data_jobs().items()
        }
        return {
            "config": _jsonable(asdict(cfg)),
            "data": data,
            "mixed_reference": done.get("π_ref mixed"),
            "reference_dev_greedy": done["π_ref dev"]["dev"]["greedy"],
            "reference_curve_start": done["π_ref dev"]["curve"][0][1],
            "tuning": self.tuning(done),
            "chosen": budgets,
            "knob_tuning": knob_tuning,
            "runs": runs,
            "summary": summarize_runs(runs),
        }

    def _data_jobs(self) -> dict[str, tuple[int, _Setting]]:
        data = {self.data_job(s, self.default): (s, self.default) for s in self.cfg.seeds}
        for v in self.variants:
            for s in self.seeds_of(v):
                data.setdefault(self.data_job(s, self.setting(v)), (s, self.setting(v)))
        return data


def _cost(method: str) -> float:
    return {"reference": 10, "sft": 10, "rft": 20, "dpo": 25, "dro": 60, "dqo": 65}[method]


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=list))


# --------------------------------------------------------------------------------------------
# plots (bare Figures: no pyplot state, no backend switch)
# --------------------------------------------------------------------------------------------


def plot_accuracy(
    summary: Mapping[str, Any], runs: Sequence[Mapping[str, Any]], path: Path
) -> None:
    """Per variant: greedy and sampling accuracy, mean ± std over seeds, one dot per seed."""
    from matplotlib.figure import Figure

    names = [n for n, e in summary.items() if "greedy" in e]
    fig = Figure(figsize=(max(6.0, 0.55 * len(names) + 2), 4.8))
    ax = fig.subplots()
    width = 0.38
    for k, decoding in enumerate(("greedy", "sampling")):
        xs = [i + (k - 0.5) * width for i in range(len(names))]
        means = [summary[n][decoding]["mean"] for n in names]
        stds = [
            0.0 if math.isnan(summary[n][decoding]["std"]) else summary[n][decoding]["std"]
            for n in names
        ]
        ax.bar(xs, means, width, yerr=stds, capsize=2, label=f"{decoding} (mean ± std over seeds)")
        for x, n in zip(xs, names):
            seeds = [r["test"][decoding] for r in runs if r["variant"] == n and "test" in r]
            ax.plot([x] * len(seeds), seeds, "k.", markersize=3)
    ref = summary.get("π_ref", {}).get("greedy", {}).get("mean")
    if ref is not None:
        ax.axhline(ref, color="0.4", linestyle=":", linewidth=1, label="π_ref greedy")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("test accuracy (strict)")
    ax.set_ylim(0, 1)
    ax.legend(loc="upper right", fontsize=7)
    ax.set_title("Toy task: every variant, dots = seeds")
    save_figure_atomically(fig, path)


def plot_lambda(summary: Mapping[str, Any], path: Path) -> None:
    """DQO's accuracy against λ (λ = 1 is DQO itself), mean ± std over seeds."""
    from matplotlib.figure import Figure

    points = [
        (lam, name)
        for lam, name in ((0.0, "DQO, λ=0"), (0.95, "DQO, λ=0.95"), (1.0, "DQO"))
        if "greedy" in summary.get(name, {})
    ]
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.subplots()
    for decoding, marker in (("greedy", "o-"), ("sampling", "s--")):
        lams = [lam for lam, _ in points]
        means = [summary[n][decoding]["mean"] for _, n in points]
        stds = [
            0.0 if math.isnan(summary[n][decoding]["std"]) else summary[n][decoding]["std"]
            for _, n in points
        ]
        ax.errorbar(lams, means, yerr=stds, fmt=marker, capsize=3, label=f"DQO {decoding}")
    for name, style in (("π_ref", ":"), ("DRO", "-.")):
        if "greedy" in summary.get(name, {}):
            ax.axhline(
                summary[name]["greedy"]["mean"],
                color="0.4",
                linestyle=style,
                linewidth=1,
                label=f"{name} greedy",
            )
    ax.set_xlabel("λ of the λ-return")
    ax.set_ylabel("test accuracy (strict)")
    ax.set_title("DQO vs λ (mean ± std over seeds)")
    ax.legend(fontsize=7)
    save_figure_atomically(fig, path)


def plot_curves(runs: Sequence[Mapping[str, Any]], reference: float, path: Path) -> None:
    """Dev greedy accuracy during training, per method: mean over seeds, band = ± std."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4.0))
    ax = fig.subplots()
    by: dict[str, list[list[list[float]]]] = {}
    for r in runs:
        if r.get("curve") and r["method"] != "reference":
            by.setdefault(r["variant"], []).append(r["curve"])
    for name, curves in by.items():
        n = min(len(c) for c in curves)
        steps = [0] + [curves[0][i][0] for i in range(n)]
        vals = [[reference] + [c[i][1] for i in range(n)] for c in curves]
        mean = [statistics.fmean(col) for col in zip(*vals)]
        std = [statistics.stdev(col) if len(col) > 1 else 0.0 for col in zip(*vals)]
        (line,) = ax.plot(steps, mean, marker="o", markersize=3, label=name)
        ax.fill_between(
            steps,
            [m - s for m, s in zip(mean, std)],
            [m + s for m, s in zip(mean, std)],
            color=line.get_color(),
            alpha=0.15,
        )
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("dev greedy accuracy")
    ax.set_title("Learning curves (mean ± std over seeds; step 0 = π_ref)")
    ax.legend(fontsize=7)
    save_figure_atomically(fig, path)


def plot_sweep(
    summary: Mapping[str, Any], runs: Sequence[Mapping[str, Any]], axis: str, path: Path
) -> None:
    """A sweep (:data:`SWEEPS`): left, greedy accuracy per method against the swept quantity
    (mean ± std over seeds); right, the paired DQO − DRO and DQO − RFT differences with their
    95 % intervals (seeds × problems)."""
    from matplotlib.figure import Figure

    points = sweep_points(runs, axis)
    xs = list(points)
    fig = Figure(figsize=(10.5, 4.0))
    left, right = fig.subplots(1, 2)
    for name in _SWEEP_METHODS[axis]:
        have = [x for x in xs if "greedy" in points[x].get(name, {})]
        means = [points[x][name]["greedy"]["mean"] for x in have]
        stds = [points[x][name]["greedy"]["std"] for x in have]
        stds = [0.0 if math.isnan(v) else v for v in stds]
        left.errorbar(have, means, yerr=stds, marker="o", capsize=3, label=name)
    for k, other in enumerate(("DRO", "RFT")):
        have = [x for x in xs if "greedy" in points[x].get(other, {}).get("paired", {})]
        diffs = [_flip(points[x][other]["paired"]["greedy"]) for x in have]
        shift = (k - 0.5) * 0.02 * (max(xs) - min(xs) if len(xs) > 1 else 1)
        mean = [d["mean"] for d in diffs]
        low = [d["mean"] - d.get("ci95", [d["mean"]] * 2)[0] for d in diffs]
        high = [d.get("ci95", [d["mean"]] * 2)[1] - d["mean"] for d in diffs]
        right.errorbar([x + shift for x in have], mean, yerr=[low, high], marker="s", capsize=3,
                       label=f"DQO − {other} (95 % CI)")  # fmt: skip
    right.axhline(0, color="0.4", linewidth=1)
    x_label = "operations per problem" if axis == "horizon" else "training prompts (× 8 responses)"
    for ax in (left, right):
        ax.set_xlabel(x_label)
        ax.set_xticks(xs)
        ax.legend(fontsize=7)
        if axis != "horizon":
            ax.set_xscale("log")
            ax.set_xticks(xs, [str(x) for x in xs])
    left.set_ylabel("test greedy accuracy (strict)")
    right.set_ylabel("paired greedy difference")
    fig.suptitle(f"Toy {axis}: mean ± std over seeds; right: 95 % intervals, seeds × problems")
    save_figure_atomically(fig, path)
