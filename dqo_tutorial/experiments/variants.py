"""The rows of the toy-claims comparison: :class:`Variant`, every variant (:data:`VARIANTS`),
the named sets of ``--variants`` and the generated horizon and data-size sweep variants."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "GROUPS",
    "VARIANT_SETS",
    "Variant",
    "VARIANTS",
    "VARIANTS_BY_NAME",
    "ROW_SELECTIONS",
    "HORIZON_OPS",
    "FORK_OPS",
    "FAMILY_OPS",
    "FORK_METHOD_NAMES",
    "CRITIC_OFFSETS",
    "BIASED_FLAT",
    "DEAD_FLAT",
    "FORK_DATA_OPS",
    "FORK_COMPARISON_NAMES",
    "PRECISE_ORACLE_K",
    "LONG_FORK_OPS",
    "LONGEST_FORK_OPS",
    "POOLED_NAMES",
    "RAISED_FLAT_AT_095",
    "PRECISE_NAMES",
    "FORK_DATA_SCALES",
    "DATA_SCALES",
    "expand_variants",
    "oracle_folder",
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
    "forks",
    "forks data size",
    "forks comparison",
    "forks oracle precision",
    "forks long",
    "forks 12 ops",
    "forks comparison long",
)


VARIANT_SETS: dict[str, tuple[str, ...]] = {
    "ablations": ("importance sampling", "λ-return", "process rewards", "imbalance", "data size"),
    "diagnostics": ("diagnostics",),
    "knobs tuned": ("knobs tuned",),
    "horizon": ("horizon",),
    "data-size sweep": ("data-size sweep",),
    "critic": ("critic",),
    "credit": ("credit",),
    "forks": ("forks",),
    "forks-data": ("forks data size",),
    "forks-compare": ("forks comparison",),
    "forks-oracle": ("forks oracle precision",),
    "forks-long": ("forks long",),
    "forks-12": ("forks 12 ops",),
    "forks-compare-long": ("forks comparison long",),
}
"""Named sets of ``--variants``: the baselines plus these groups (each a run of its own; the
``forks`` set without the toy baselines: its task is another)."""

_WITHOUT_BASELINES = ("forks", "forks-data", "forks-compare", "forks-oracle", "forks-long",
                      "forks-12", "forks-compare-long")  # fmt: skip


@dataclass(frozen=True)
class Variant:
    """One row of the comparison.

    ``method``: ``"reference"`` (π_ref, not trained) or a :data:`~dqo_tutorial.train.METHODS`
    entry; ``train``: :class:`~dqo_tutorial.train.TrainConfig` fields on top of the experiment's
    (after tuning); ``rows``: which sampled rows it trains on (:func:`~.config.select_rows`);
    ``potentials``: the Φ of its process rewards (``"exact"`` or ``"monte_carlo"``); ``curve``:
    record a dev learning curve; ``default``: part of the default grid; ``value_lr_scale``:
    multiplies the value learning rate its method was tuned with; ``tune_knobs``: train with
    the knob set of :attr:`~.config.ClaimsConfig.knob_grid` that won on dev for its method.

    Sweeps: ``ops`` — chains of exactly that many operations (task ``<family>-<ops>ops``) from
    the family's mixed-length π_ref (``family`` ``"toy"``:
    :attr:`~.config.ClaimsConfig.horizon_reference`; ``"forks"``, the fork chains of
    :mod:`dqo_tutorial.forks`: :attr:`~.config.ClaimsConfig.forks_reference`); ``data_scale`` — that
    multiple of :attr:`~.config.ClaimsConfig.prompts` training prompts; ``sweep`` — run on
    :attr:`~.config.ClaimsConfig.sweep_seeds` only; ``warmup_scale`` — multiplies the value
    warm-up; ``fixed_steps`` — train the optimiser steps (and value warm-up) its budget gives at
    ``data_scale`` 1, whatever its data size (the data-size sweep without the step confound);
    ``oracle_k`` — its oracle labels from that many rollouts per anchor instead of
    :attr:`~.config.ClaimsConfig.oracle_k` (``potentials`` ``"oracle"`` only);
    ``oracle_pooled`` — its oracle's rollouts pooled along the prefix tree
    (:mod:`dqo_tutorial.rollouts`: the same k per state, ~0.4× the rollouts).
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
    family: str = "toy"
    fixed_steps: bool = False
    oracle_k: int | None = None
    oracle_pooled: bool = False

    @property
    def data_kind(self) -> str:
        """The folder of its rows beside ``exact``: its potentials, with an own ``oracle_k`` or
        a pooled oracle :func:`oracle_folder`'s."""
        if self.potentials != "oracle":
            return self.potentials
        return oracle_folder(self.oracle_k, self.oracle_pooled)

    @property
    def task(self) -> str:
        return "toy" if self.ops is None else f"{self.family}-{self.ops}ops"

    @property
    def anchor(self) -> str:
        """The DQO run its paired differences are taken against (same sweep point, same seed)."""
        if self.family == "forks":
            scale = f", data ×{self.data_scale:g}" if self.data_scale != 1.0 else ""
            return f"DQO, forks {self.ops} ops{scale}"
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
        lengths = FAMILY_OPS.get(self.family)
        if lengths is None or (self.family != "toy" and self.ops is None):
            raise ValueError(f"Variant {self.name}: family {self.family!r} needs ops; "
                             f"families: {sorted(FAMILY_OPS)}")  # fmt: skip
        if self.ops is not None and self.ops not in lengths:
            raise ValueError(f"Variant {self.name}: ops must lie in {lengths.start}.."
                             f"{lengths.stop - 1} ({self.family}-<n>ops tasks)")  # fmt: skip
        if self.oracle_k is not None and (self.potentials != "oracle" or self.oracle_k < 1):
            raise ValueError(f"Variant {self.name}: oracle_k needs potentials oracle, k >= 1")
        if self.oracle_pooled and self.potentials != "oracle":
            raise ValueError(f"Variant {self.name}: oracle_pooled needs potentials oracle")
        if self.data_scale <= 0 or self.warmup_scale <= 0:
            raise ValueError(f"Variant {self.name}: data_scale and warmup_scale must be > 0")


ROW_SELECTIONS = ("all", "few_positives", "negatives_only", "dpo_responses")


def oracle_folder(k: int | None, pooled: bool = False) -> str:
    """The folder of a dataset's oracle labels: ``oracle`` (the experiment's ``oracle_k``
    rollouts per anchor) or ``oracle-k<k>``, with ``-pooled`` for pooled rollouts."""
    return ("oracle" if k is None else f"oracle-k{k}") + ("-pooled" if pooled else "")


_PR = {"process_reward_coef": 0.5}


HORIZON_OPS = (2, 4, 6, 8)


DATA_SCALES = (0.25, 4.0)


FAMILY_OPS = {"toy": range(2, 9), "forks": range(2, 13)}
"""The chain lengths of each task family (tasks ``toy-<n>ops``, ``forks-<n>ops``)."""


FORK_OPS = (2, 6)
"""The fork chains' lengths in the ``forks`` set (2 and 3 forks). Longer chains cost too much
oracle on the 2-core CPU box for the whole set: 6 operations need about 8.5 min per seed for 800
responses, unpooled; 8 and 12 operations run the bound alone (``forks-long``, ``forks-12``; at
12 the pooled oracle takes ~10 min per seed; docs/forks.md)."""


CRITIC_OFFSETS = (0.2, -0.2)
"""The flat critic's shifts b in the ``forks`` set (``critic_offset``): +0.2 is about the bias
DQO's V_φ shows against its own target in the fork runs (logged δ mean +0.15 at 6 operations,
+0.20 at 2, second half of training, 5 seeds), −0.2 its mirror."""

BIASED_FLAT = tuple(
    f"DQO, flat critic {'raised' if b > 0 else 'lowered'} {abs(b):g}" for b in CRITIC_OFFSETS
)
"""The names of the shifted flat critics, in :data:`CRITIC_OFFSETS` order."""

RAISED_FLAT_AT_095 = f"DQO, λ=0.95, {BIASED_FLAT[0].removeprefix('DQO, ')}"
"""The flat critic raised by :data:`CRITIC_OFFSETS` [0] at λ = 0.95 (the ``forks`` set)."""

DEAD_FLAT = "DQO, oracle critic, flat where dead"
"""The oracle critic with the flat value V*(s_1) where the oracle reads 0 (``critic``
``oracle_dead_flat``): after a fork chain's first wrong step only the flat critic pushes the
continuation down (R − V*(s_1) < 0 where the oracle's R − V* = 0). Does that push explain the
flat critic's edge over the oracle on sampled accuracy at 2 and 6 operations (docs/forks.md §3)?"""


_FORK_METHODS = (
    ("π_ref", "reference", {}, {}),
    ("DRO", "dro", {}, {}),
    ("DQO", "dqo", {}, {}),
    ("DQO, value warm-up ×5", "dqo", {}, {"warmup_scale": 5.0}),
    ("DQO, λ=0", "dqo", {"lam": 0.0}, {}),
    ("DQO, flat critic", "dqo", {"critic": "flat"}, {"potentials": "oracle"}),
    ("DQO, oracle critic", "dqo", {"critic": "oracle"}, {"potentials": "oracle"}),
    ("DQO, λ=0, oracle critic", "dqo", {"critic": "oracle", "lam": 0.0}, {"potentials": "oracle"}),
    (DEAD_FLAT, "dqo", {"critic": "oracle_dead_flat"}, {"potentials": "oracle"}),
    *(
        (name, "dqo", {"critic": "flat", "critic_offset": b}, {"potentials": "oracle"})
        for name, b in zip(BIASED_FLAT, CRITIC_OFFSETS)
    ),
    ("DQO, λ=0.95", "dqo", {"lam": 0.95}, {}),
    ("DQO, λ=0.95, flat critic", "dqo", {"critic": "flat", "lam": 0.95}, {"potentials": "oracle"}),
    (
        RAISED_FLAT_AT_095,
        "dqo",
        {"critic": "flat", "critic_offset": CRITIC_OFFSETS[0], "lam": 0.95},
        {"potentials": "oracle"},
    ),
)
"""The ``forks`` set at each length: the bound (oracle / flat / learned critic at λ = 1 and
λ = 0) beside DRO and π_ref, the oracle with the flat value on dead states (:data:`DEAD_FLAT`),
and DQO with the value warm-up the toy's 400 prompts get (10 steps;
it scales with the data: 2 steps at 100 prompts), and the flat critic shifted by each of
:data:`CRITIC_OFFSETS` (the bias control: is it V_φ's bias that hurts?), and at λ = 0.95 DQO,
the flat critic and the flat critic raised 0.2 (does λ < 1 undo a known bias? A critic shifted
by b shifts the λ-return G_h by b(1 − λ^{H−h}), so the policy's residual keeps b·λ^{H−h}: all
of it at the last action, little far from it). The flat critic at λ = 0 is left out: its
advantage is 0 on every token but the last (docs/credit-assignment.md)."""


FORK_METHOD_NAMES = tuple(name for name, *_ in _FORK_METHODS)

LONG_FORK_OPS = (8,)
"""The ``forks-long`` set's lengths: the bound alone (π_ref, DRO, DQO and the flat, oracle and
λ = 0 oracle critics) on the sweep seeds only — the (unpooled) oracle costs ~7.5 min per seed at
8 operations (docs/forks.md)."""

_LONG_METHODS = ("π_ref", "DRO", "DQO", "DQO, flat critic", "DQO, oracle critic",
                 "DQO, λ=0, oracle critic")  # fmt: skip

_LONGEST_METHODS = (*_LONG_METHODS, "DQO, λ=0", "DQO, λ=0.95")
"""The ``forks-12`` set's methods: the bound of ``forks-long`` and DQO's learned critic at λ = 0
and λ = 0.95 — does it capture the λ = 0 oracle's replicated headroom at 12 operations?
(docs/forks/learned-critic-12ops.md, fixed before those runs)."""

LONGEST_FORK_OPS = (12,)
"""The ``forks-12`` set's length: the bound of ``forks-long`` and the learned critics of
:data:`_LONGEST_METHODS`, with the oracle's rollouts pooled (:mod:`dqo_tutorial.rollouts`; 0.36×
the rollouts of the unpooled oracle on 5 prompts of 12 operations, benchmarks/oracle_pooling.py),
on the sweep seeds."""


SWEEP_SEED_GROUPS = ("forks long", "forks 12 ops", "forks comparison long")
"""The fork groups that run on the sweep seeds (the longer chains, whose data and oracle are
per sweep seed)."""


def _forks(
    group: str = "forks",
    lengths: tuple[int, ...] = FORK_OPS,
    only: tuple[str, ...] = (),
    pooled: bool = False,
) -> tuple[Variant, ...]:
    """The ``forks`` set's methods at ``lengths`` (``only``: those names), in ``group``; the
    longer chains' groups run on the sweep seeds, ``pooled``: with a pooled oracle."""
    return tuple(
        Variant(
            f"{name}, forks {n} ops",
            m,
            group,
            dict(t),
            default=False,
            ops=n,
            family="forks",
            sweep=group in SWEEP_SEED_GROUPS,
            **kw,
            **({"oracle_pooled": True} if pooled and kw.get("potentials") == "oracle" else {}),
        )  # fmt: skip
        for n in lengths
        for name, m, t, kw in _FORK_METHODS
        if not only or name in only
    )


FORK_DATA_OPS = 2
"""The fork chains' length of the ``forks-data`` set (its oracle took ~30 s per seed at 100
prompts and ~75 s at 400; at 6 operations it took ~8.5 min at 100 prompts, so 400 was not
tried)."""

FORK_DATA_SCALES = (0.25, 4.0)
"""The ``forks-data`` set's multiples of ``forks_prompts`` (25 and 400 prompts; the middle
point, 100, is the ``forks`` set's runs, which train the same 48 steps)."""

_FORK_DATA_METHODS = (
    ("DRO", "dro", {}, {}),
    ("DQO", "dqo", {}, {}),
    ("DQO, flat critic", "dqo", {"critic": "flat"}, {"potentials": "oracle"}),
    ("DQO, oracle critic", "dqo", {"critic": "oracle"}, {"potentials": "oracle"}),
)


def _forks_data() -> tuple[Variant, ...]:
    def one(name: str, m: str, train: Mapping[str, Any], k: float, **kw: Any) -> Variant:
        return Variant(f"{name}, forks {FORK_DATA_OPS} ops, data ×{k:g}", m, "forks data size",
                       dict(train), default=False, ops=FORK_DATA_OPS, family="forks",
                       data_scale=k, fixed_steps=True, **kw)  # fmt: skip

    runs = [one(n, m, t, k, **kw) for k in FORK_DATA_SCALES for n, m, t, kw in _FORK_DATA_METHODS]
    return (*runs, one("DQO, no IS", "dqo", {"is_mode": "none"}, max(FORK_DATA_SCALES)))


_FORK_COMPARISON = (
    ("RFT", "rft", {}, {}),
    ("DPO", "dpo", {}, {}),
    ("DQO, α=0.5 exact Φ", "dqo", _PR, {}),
    ("DRO, knobs tuned", "dro", {}, {"tune_knobs": True}),
    ("DQO, knobs tuned", "dqo", {}, {"tune_knobs": True}),
)
"""The ``forks-compare`` set at each of :data:`FORK_OPS`: the other methods beside the ``forks``
set's π_ref, DRO and DQO, with the same lr × epochs budget, and DRO and DQO each given four
knob sets chosen on dev (:attr:`~.config.ClaimsConfig.forks_knob_grid`)."""

FORK_COMPARISON_NAMES = tuple(name for name, *_ in _FORK_COMPARISON)

LONG_COMPARISON_OPS = (*LONG_FORK_OPS, *LONGEST_FORK_OPS)
"""The ``forks-compare-long`` set's lengths: the comparison of ``forks-compare`` on the longer
chains, beside the π_ref, DRO and DQO runs of ``forks-long`` and ``forks-12`` (sweep seeds)."""


def _forks_comparison(
    group: str = "forks comparison", lengths: tuple[int, ...] = FORK_OPS
) -> tuple[Variant, ...]:
    return tuple(
        Variant(
            f"{name}, forks {n} ops",
            m,
            group,
            dict(t),
            default=False,
            ops=n,
            family="forks",
            sweep=group in SWEEP_SEED_GROUPS,
            **kw,
        )  # fmt: skip
        for n in lengths
        for name, m, t, kw in _FORK_COMPARISON
    )


PRECISE_ORACLE_K = 64
"""Rollouts per anchor of the ``forks-oracle`` set's oracle (8× the forks set's 8: its standard
error ≤ 1/(2√64) = 0.0625 instead of 0.18), at :data:`FORK_DATA_OPS` operations, where it costs
~140 s per seed (measured, two at a time): is the oracle's own noise what keeps it from
beating the flat critic?"""

_PRECISE = (
    ("DQO, flat critic", {"critic": "flat"}),
    ("DQO, oracle critic", {"critic": "oracle"}),
    ("DQO, λ=0, oracle critic", {"critic": "oracle", "lam": 0.0}),
)

PRECISE_NAMES = tuple(f"{name}, k={PRECISE_ORACLE_K}" for name, _ in _PRECISE)

POOLED_NAMES = tuple(f"{name}, pooled" for name, _ in _PRECISE[1:])
"""The oracle critics of the ``forks-oracle`` set from the pooled oracle at the experiment's
``oracle_k`` (:mod:`dqo_tutorial.rollouts`): does pooling change what training makes of the
oracle? (The flat critic reads the prompt state, whose rollouts pooling leaves unchanged.)"""


def _forks_precise() -> tuple[Variant, ...]:
    def one(name: str, train: Mapping[str, Any], k: int | None, pooled: bool) -> Variant:
        return Variant(f"{name}, forks {FORK_DATA_OPS} ops", "dqo", "forks oracle precision",
                       dict(train), potentials="oracle", default=False, ops=FORK_DATA_OPS,
                       family="forks", oracle_k=k, oracle_pooled=pooled)  # fmt: skip

    precise = [one(n, t, PRECISE_ORACLE_K, False) for n, (_, t) in zip(PRECISE_NAMES, _PRECISE)]
    pooled = [one(n, t, None, True) for n, (_, t) in zip(POOLED_NAMES, _PRECISE[1:])]
    return (*precise, *pooled)


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
    *_forks(),
    *_forks_data(),
    *_forks_comparison(),
    *_forks_precise(),
    *_forks("forks long", LONG_FORK_OPS, _LONG_METHODS),
    *_forks("forks 12 ops", LONGEST_FORK_OPS, _LONGEST_METHODS, pooled=True),
    *_forks_comparison("forks comparison long", LONG_COMPARISON_OPS),
)
"""Every variant; those with ``default=False`` run only when named (``variants``)."""


VARIANTS_BY_NAME = {v.name: v for v in VARIANTS}


def expand_variants(names: Sequence[str]) -> tuple[str, ...]:
    """``--variants``: variant names, ``"all"``, or names of :data:`VARIANT_SETS` (each adds
    its groups and, but for ``forks``, the baselines), in :data:`VARIANTS` order for the sets."""
    names = [n for n in names if n]
    if names == ["all"]:
        return tuple(v.name for v in VARIANTS)
    base = {n: () if n in _WITHOUT_BASELINES else ("baselines",) for n in VARIANT_SETS}
    groups = {g for n in names if n in VARIANT_SETS for g in (*base[n], *VARIANT_SETS[n])}
    picked = [v.name for v in VARIANTS if v.group in groups]
    return tuple(dict.fromkeys(picked + [n for n in names if n not in VARIANT_SETS]))
