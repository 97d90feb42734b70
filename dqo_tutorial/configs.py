"""The configurations of the three jobs — sampling, training, evaluation — and how they are checked.

:class:`SamplingConfig`, :class:`TrainConfig` and :class:`EvalConfig` are documented (and
importable) where they are used: :mod:`~dqo_tutorial.sampling`, :mod:`~dqo_tutorial.train`,
:mod:`~dqo_tutorial.evaluate`. They live here, in a module that imports neither torch nor
transformers, so that the command line can build its flags from them in a fraction of a second.

Every value is checked when the config is built, whatever wrote it (Python, YAML, a flag):

1. :func:`coerce_fields` gives each field its declared type — YAML reads ``1e-4`` as the *string*
   ``"1e-4"``, which becomes the float 1e-4 —, or raises :class:`~dqo_tutorial.errors.ConfigError`
   naming the field and the type it wants;
2. each class's ``__post_init__`` checks ranges and choices; a refused value is named as
   ``TrainConfig.lam: must lie in [0, 1], got 1.5``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError
from .gsm8k import MODES
from .tasks import get_task

__all__ = [
    "METHODS",
    "LR_SCHEDULERS",
    "REPORT_TO",
    "CRITICS",
    "DTYPES",
    "SamplingConfig",
    "TrainConfig",
    "EvalConfig",
    "coerce_fields",
    "field_default",
    "run_manifest",
]

METHODS = ("sft", "rft", "dpo", "dro", "dqo")
"""The methods of the comparison (each a unit of :mod:`dqo_tutorial.methods`)."""

_METHOD_NAMES: list[str] = list(METHODS)


def register_method_name(name: str) -> None:
    """Let ``TrainConfig(method=name)`` pass (called by :func:`dqo_tutorial.methods.register`)."""
    if name not in _METHOD_NAMES:
        _METHOD_NAMES.append(name)


def unregister_method_name(name: str) -> None:
    if name in _METHOD_NAMES and name not in METHODS:
        _METHOD_NAMES.remove(name)


LR_SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
)
"""The ``transformers.get_scheduler`` schedules that need nothing but warm-up and total steps
(the trainer passes exactly those; tests/test_configs.py builds each one)."""

CRITICS = ("learned", "oracle", "flat", "oracle_dead_flat")
"""DQO's V(s_h): the learned V_φ (the method), or a fixed one read from the dataset's
``oracle_values`` column (:mod:`dqo_tutorial.oracle`): the oracle at every state, or *flat*,
its prompt value V(s_1) at every state — the critic ablation that bounds what token-level
credit buys."""

REPORT_TO = ("none", "tensorboard", "wandb")
"""Where training metrics go besides ``log.jsonl`` (Accelerate's trackers; ``tensorboard`` needs
the ``tensorboard`` package — the ``[tensorboard]`` extra —, ``wandb`` its own)."""

DTYPES = {
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp16": "float16",
    "float16": "float16",
    "half": "float16",
    "fp32": "float32",
    "float32": "float32",
    "float": "float32",
}
"""Accepted spellings of a parameter dtype → the ``torch`` attribute (``models.resolve_dtype``);
``"auto"`` (or None) chooses per device."""


# --------------------------------------------------------------------------------------------
# checking
# --------------------------------------------------------------------------------------------

_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _coerce(name: str, hint: Any, value: Any) -> Any:
    """``value`` as type ``hint`` (int, float, str, bool, or ``X | None``); others unchanged."""
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        if value is None and type(None) in args:
            return None
        kinds = [a for a in args if a is not type(None)]
        return _coerce(name, kinds[0], value) if len(kinds) == 1 else value
    want = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if hint not in want:
        return value
    if hint is str and isinstance(value, str):
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
    elif hint in (int, float) and not isinstance(value, bool):
        try:
            number = float(value) if isinstance(value, str) else value
        except ValueError:
            number = None
        if hint is float and isinstance(number, int | float):
            return float(number)
        if hint is int and isinstance(number, int):
            return number
        if hint is int and isinstance(number, float) and number.is_integer():
            return int(number)
    raise ConfigError(f"{name}: expected {want[hint]}, got {value!r}")


def run_manifest(cfg: SamplingConfig | EvalConfig, dataset_hash: str, num_problems: int) -> dict:
    """What every sampled dataset (``manifest.json``) and evaluation (``results.json``)
    records about itself: package version, model, task and prompt template, the decoding law,
    the problems (source, split, limit, count, content hash) and the whole config."""
    from . import __version__

    decoding = {
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "top_k": 0,
        "max_new_tokens": cfg.max_new_tokens,
        "num_samples": cfg.num_samples,
    }
    if isinstance(cfg, EvalConfig):
        decoding["greedy"] = cfg.greedy
    return {
        "package_version": __version__,
        "model": cfg.model,
        "task": cfg.task,
        "prompt_template_version": get_task(cfg.task).prompt_template_version,
        "decoding": decoding,
        "data": {
            "source": cfg.data_source,
            "split": cfg.split,
            "limit": cfg.limit,
            "num_problems": num_problems,
            "dataset_hash": dataset_hash,
        },
        "config": dataclasses.asdict(cfg),
    }


def field_default(cls: type, name: str) -> Any:
    """The default of field ``name`` of config class ``cls`` — for code that needs a default
    outside a config (the explorer's β slider): the dataclass stays its one source."""
    return {f.name: f for f in dataclasses.fields(cls)}[name].default


def coerce_fields(cfg: Any) -> None:
    """Give every field of the (frozen) dataclass instance ``cfg`` its declared type, in place;
    a value that has no such reading raises :class:`ConfigError` naming ``Class.field``."""
    cls = type(cfg)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        value = _coerce(f"{cls.__name__}.{f.name}", hints[f.name], getattr(cfg, f.name))
        object.__setattr__(cfg, f.name, value)


_DEVICE_HELP = "cpu, cuda or cuda:N (None: a GPU when there is one)"
_DTYPE_HELP = "parameter dtype (None: bf16 on a GPU that has it, else float32)"


def _field(default: Any, help: str) -> Any:
    """A config field with its one-line ``help`` (printed by ``--help``; TRL's pattern)."""
    return dataclasses.field(default=default, metadata={"help": help})


class _Checker:
    """``check(name, ok, rule)``: refuse field ``name`` of ``cfg`` unless ``ok``, saying why."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    @classmethod
    def of_job(cls, cfg: Any) -> _Checker:
        """Coerce ``cfg``'s fields, check what every job config shares (task, split, limit)."""
        coerce_fields(cfg)
        check = cls(cfg)
        check.task_and_split()
        check.limit()
        return check

    def __call__(self, name: str, ok: bool, rule: str) -> None:
        if not ok:
            value = getattr(self.cfg, name)
            raise ConfigError(f"{type(self.cfg).__name__}.{name}: {rule}, got {value!r}")

    def at_least(self, lo: int, *names: str) -> None:
        for n in names:
            self(n, getattr(self.cfg, n) >= lo, f"must be >= {lo}")

    def positive(self, *names: str, finite: bool = True) -> None:
        for n in names:
            v = getattr(self.cfg, n)
            self(n, v > 0 and (not finite or math.isfinite(v)), "must be a finite number > 0")

    def one_of(self, name: str, choices: Collection[Any]) -> None:
        self(name, getattr(self.cfg, name) in choices, f"must be one of {sorted(choices)}")

    def limit(self) -> None:
        v = self.cfg.limit
        self("limit", v is None or v >= 1, "must be >= 1 (or None for the whole split)")

    def task_and_split(self) -> None:
        try:
            task = get_task(self.cfg.task)
        except ValueError as err:
            raise ConfigError(f"{type(self.cfg).__name__}.task: {err}") from None
        self.one_of("split", task.splits)

    def dtype(self) -> None:
        v = self.cfg.dtype
        ok = v is None or v == "auto" or v.lower() in DTYPES
        self("dtype", ok, f"must be one of {sorted(DTYPES)}, 'auto' or None")


# --------------------------------------------------------------------------------------------
# the configs
# --------------------------------------------------------------------------------------------


_KV_CACHE_HELP = (
    "generate's KV cache: dynamic, or static (preallocated; on a GPU transformers then compiles "
    "the decode step — measure before choosing)"
)
KV_CACHES = ("dynamic", "static")
"""The KV caches of Hugging Face ``generate`` the samplers accept (``kv_cache`` fields)."""

_ENGINE_HELP = (
    "what draws the responses: decode (the package's decode loop: one prefill per prompt, "
    "finished rows dropped, per-row random streams) or generate (Hugging Face generate)"
)
ENGINES = ("decode", "generate")
"""The sampling engines (``engine`` fields): :class:`~dqo_tutorial.decoding.DecodeSampler` and
:class:`~dqo_tutorial.sampling.HFSampler`."""


@dataclass(frozen=True)
class SamplingConfig:
    """Everything that determines the sampled dataset (stored beside it; a resume must match).

    model: a spec for :func:`~dqo_tutorial.models.load_model_and_tokenizer` (or a label, when
        :func:`~dqo_tutorial.sampling.build_dataset` is handed a model). task: ``"gsm8k"``,
        ``"math"`` or ``"toy"`` (:mod:`dqo_tutorial.tasks`). data_source / split / limit: as in
        the task's loader (:func:`~dqo_tutorial.gsm8k.load_gsm8k`). num_samples responses per
        prompt at temperature τ and top_p (§8 default: 8 at τ = 1). batch_size: sequences per
        decode batch (at most one shard's prompts × num_samples) and per reference forward pass;
        engine: the sampler (:data:`ENGINES`; ``kv_cache`` applies to ``generate`` only).
        shard_size: prompts per shard (the unit of resume). reward_mode: answer extraction
        (``strict``/``flexible``) of the task's ``is_correct``. process_rewards / process_k:
        potentials Φ at step boundaries (§6): exact ones when the task has them (toy), else
        Monte-Carlo with k rollouts each (costly: about k × lines × the sampling cost).
    """

    model: str = _field(
        "smollm2", "π_ref to sample from: smollm2, toy, a .gguf file, a model directory or a hub id"
    )
    task: str = _field("gsm8k", "the problem set: gsm8k, math or toy")
    data_source: str | None = _field(
        None, "where the task's problems come from (embedded, hub, a directory or a .jsonl)"
    )
    split: str = _field("train", "the task's split to sample prompts from")
    limit: int | None = _field(None, "use only the first N problems (None: the whole split)")
    num_samples: int = _field(8, "responses per prompt (§8: 8)")
    temperature: float = _field(
        1.0, "sampling temperature τ of μ (> 0: importance weights need a stochastic μ)"
    )
    top_p: float = _field(1.0, "nucleus truncation of μ, in (0, 1]")
    max_new_tokens: int = _field(
        256, "length limit of a response (longer ones are cut and bootstrapped)"
    )
    batch_size: int = _field(16, "sequences per decode batch and per reference forward pass")
    shard_size: int = _field(8, "prompts per shard (the unit of resume)")
    seed: int = _field(0, "seed of the sampling streams")
    reward_mode: str = _field("strict", "answer extraction of the reward: strict or flexible")
    process_rewards: bool = _field(
        False, "also record step potentials Φ (exact for toy, Monte-Carlo otherwise)"
    )
    process_k: int = _field(4, "Monte-Carlo rollouts per step boundary")
    engine: str = _field("decode", _ENGINE_HELP)
    kv_cache: str = _field("dynamic", _KV_CACHE_HELP)
    device: str | None = _field(None, _DEVICE_HELP)
    dtype: str | None = _field(None, _DTYPE_HELP)

    def __post_init__(self) -> None:
        check = _Checker.of_job(self)
        check.positive("temperature")  # importance weights need a stochastic μ
        check("top_p", 0 < self.top_p <= 1, "must lie in (0, 1]")
        check.at_least(1, "num_samples", "max_new_tokens", "batch_size", "shard_size", "process_k")
        check.at_least(0, "seed")
        check.one_of("reward_mode", MODES)
        check.one_of("engine", ENGINES)
        check.one_of("kv_cache", KV_CACHES)
        check(
            "kv_cache",
            self.kv_cache == "dynamic" or self.engine == "generate",
            "a static cache is an option of engine: generate (decode keeps its own buffer)",
        )
        check.dtype()


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (stored beside it; a resume must match).

    What to train: ``method`` (one of :data:`METHODS`) starting from ``model`` (π_ref, a spec of
    :func:`~dqo_tutorial.models.load_model_and_tokenizer`); ``data``: the sampled dataset
    directory (``build_dataset``'s ``out_dir``; every method but SFT); SFT reads the gold
    solutions of ``task`` (``data_source`` / ``split`` / ``limit`` as in the task's loader).

    Optimisation: ``epochs`` passes over the data, or exactly ``max_steps`` optimiser steps;
    ``batch_size`` examples (DPO: pairs) per process and micro-batch, ``grad_accum``
    micro-batches per step — or, with ``micro_batch_tokens`` > 0, each process's share of a
    step (still ``batch_size × grad_accum`` examples) sorted by length and cut into
    micro-batches of at most that many tokens each (rows × longest row of the forward's input:
    the packed rows with ``packing``, the padded ones without; a DPO pair counts both its
    sequences; an example longer than the budget runs alone; the same gradient, see
    :mod:`dqo_tutorial.train`); AdamW with ``policy_lr`` / ``value_lr``, ``weight_decay``, a
    ``lr_scheduler`` of :data:`LR_SCHEDULERS` with ``warmup_ratio``, gradient clipping at
    ``max_grad_norm`` (per model). ``value_warmup_steps``: the first steps update only V_φ
    (dqo-method.md §8 practical notes); DRO and DQO only — the other methods have no V_φ and
    train the policy from the first step.

    DQO knobs (§8): ``critic`` (:data:`CRITICS`: the learned V_φ, or a fixed oracle / flat
    V read from the dataset, :mod:`dqo_tutorial.oracle`), ``beta``, ``lam``, ``is_mode``,
    ``is_clip`` (finite: an untruncated weight e^{Σ Δ} overflows), ``is_normalize``,
    ``detach_target``, ``value_model`` (``"separate"``: a copy of the trunk + scalar head;
    ``"shared"``: a head on the policy's trunk, fed detached hidden states;
    ``value_extra_layers`` / ``value_head_width`` make a separate one deeper / its head wider),
    ``process_reward_coef`` α ≥ 0 (needs a dataset sampled with process rewards). DPO:
    ``dpo_pairs_per_prompt``. DPO and DRO use ``beta`` too.

    Engine: ``mixed_precision`` (``"auto"``: bf16 on a GPU that has it, else off; or ``"no"``,
    ``"bf16"``, ``"fp16"``), ``dtype`` of the master weights, ``padding_side`` of training
    batches, ``gradient_checkpointing``, ``packing`` (micro-batches packed into fewer rows by
    :func:`~dqo_tutorial.modeling.pack_rows`), ``disable_dropout`` (every dropout of π_θ and
    V_φ off, :func:`~dqo_tutorial.modeling.disable_dropout`: with dropout on, log π_θ at step 0
    is not log π_ref and the IS weights of μ = π_ref data are not 1), ``checkpoint_every`` /
    ``keep_checkpoints``, ``seed``; ``report_to`` (:data:`REPORT_TO`: metrics to TensorBoard or
    W&B as well as ``log.jsonl``).
    """

    method: str = _field("dqo", "what to train: sft, rft, dpo, dro or dqo")
    model: str = _field("smollm2", "π_ref to start from (a spec as for sampling)")
    task: str = _field("gsm8k", "the problem set the data belong to")
    data: str | None = _field(
        None, "the sampled dataset folder (`dqo-tutorial sample --out`); all methods but sft"
    )
    data_source: str | None = _field(None, "sft only: where the gold solutions come from")
    split: str = _field("train", "sft only: the split of gold solutions")
    limit: int | None = _field(None, "sft only: the first N gold solutions (None: all)")
    epochs: int = _field(1, "passes over the examples")
    max_steps: int | None = _field(None, "exactly this many optimiser steps instead of epochs")
    batch_size: int = _field(8, "examples (DPO: pairs) per process and micro-batch")
    grad_accum: int = _field(1, "micro-batches per optimiser step")
    micro_batch_tokens: int = _field(
        0,
        "cut each step's examples into micro-batches of at most this many tokens (rows × "
        "longest row, after packing) instead of grad_accum of batch_size; 0: off",
    )
    policy_lr: float = _field(5e-6, "AdamW learning rate of π_θ")
    value_lr: float = _field(5e-5, "AdamW learning rate of V_φ (DRO, DQO)")
    weight_decay: float = _field(0.0, "AdamW weight decay (>= 0)")
    lr_scheduler: str = _field(
        "cosine",
        "learning-rate schedule: cosine, linear, constant, constant_with_warmup, polynomial, "
        "cosine_with_restarts or inverse_sqrt",
    )
    warmup_ratio: float = _field(
        0.05, "share of the steps spent warming the learning rate up, in [0, 1)"
    )
    max_grad_norm: float = _field(1.0, "gradient clipping, per model")
    value_warmup_steps: int = _field(0, "first steps that update only V_φ (DRO, DQO)")
    beta: float = _field(0.05, "KL strength β (§8: 0.05)")
    lam: float = _field(1.0, "λ of the λ-return, in [0, 1] (§8: 1)")
    is_mode: str = _field("prefix", "importance weights: prefix, sequence or none")
    is_clip: float = _field(2.0, "truncation c of the importance weights (finite, > 0)")
    is_normalize: bool = _field(
        False, "self-normalise the importance weights over each step's window"
    )
    detach_target: bool = _field(True, "treat the λ-return target as a constant")
    value_model: str = _field(
        "separate", "V_φ: separate (a trunk copy + head) or shared (a head on the policy)"
    )
    value_extra_layers: int = _field(
        0, "separate V_φ: decoder layers added on its trunk copy, starting as no-ops"
    )
    value_head_width: int = _field(0, "V_φ's head: hidden units before the scalar (0: linear)")
    critic: str = _field(
        "learned",
        "DQO's V(s_h): learned (V_φ, trained beside π_θ), oracle (the dataset's oracle_values "
        "column: π_ref's exact success probability, dqo_tutorial.oracle), flat (that column's "
        "prompt value V(s_1) at every state) or oracle_dead_flat (the oracle, but V(s_1) where "
        "it reads 0); the fixed ones train no V_φ",
    )
    critic_offset: float = _field(
        0.0,
        "a constant b added to a fixed critic's V(s_h) (oracle or flat): the critic-bias "
        "control, V + b",
    )
    process_reward_coef: float = _field(
        0.0, "α of the process rewards (needs a dataset with potentials)"
    )
    dpo_pairs_per_prompt: int = _field(4, "DPO: (correct, wrong) pairs per prompt at most")
    mixed_precision: str = _field("auto", "auto (bf16 on a GPU that has it), no, bf16 or fp16")
    dtype: str = _field("float32", "dtype of the master weights: float32 (see mixed_precision)")
    padding_side: str = _field("right", "padding side of training batches: left or right")
    gradient_checkpointing: bool = _field(
        False, "recompute activations in the backward pass (less memory)"
    )
    packing: bool = _field(
        True, "pack each micro-batch's sequences into fewer rows (no pads; the same numbers)"
    )
    disable_dropout: bool = _field(
        True,
        "set every dropout probability of π_θ and V_φ to 0 at training start (as TRL's "
        "trainers do); π_ref is re-scored in eval mode either way",
    )
    checkpoint_every: int = _field(200, "steps between checkpoints (the unit of resume)")
    keep_checkpoints: int = _field(2, "newest checkpoints kept")
    seed: int = _field(0, "seed of initialisation and data order")
    report_to: str = _field(
        "none", "also send the step metrics to Accelerate's trackers: none, tensorboard or wandb"
    )

    def identity(self) -> dict[str, Any]:
        """The fields that determine the run's results — all but how it reports
        (``report_to``): what a resume must match. ``micro_batch_tokens`` 0 (off) is left out,
        so that runs stored before the field existed still match."""
        return TrainConfig.identity_of(dataclasses.asdict(self))

    @staticmethod
    def identity_of(fields: dict[str, Any]) -> dict[str, Any]:
        """:meth:`identity` of a stored config dict (e.g. a ``train_summary.json``'s)."""
        off = {"micro_batch_tokens": 0, "value_extra_layers": 0, "value_head_width": 0}
        off |= {"disable_dropout": True, "critic": "learned", "critic_offset": 0.0}
        # (fields added later, at the value that trains as runs stored before them did:
        # disable_dropout changes nothing for models without dropout, as the toy and SmolLM2)
        return {k: v for k, v in fields.items() if k != "report_to" and off.get(k, ...) != v}

    def __post_init__(self) -> None:
        coerce_fields(self)
        check = _Checker(self)
        check.one_of("method", _METHOD_NAMES)
        check.task_and_split()
        check.limit()
        check.at_least(1, "batch_size", "grad_accum", "epochs", "checkpoint_every")
        check.at_least(1, "keep_checkpoints", "dpo_pairs_per_prompt")
        check.at_least(0, "value_warmup_steps", "seed", "micro_batch_tokens")
        check.at_least(0, "value_extra_layers", "value_head_width")
        check(
            "value_extra_layers",
            not self.value_extra_layers or self.value_model == "separate",
            "needs value_model: separate (a shared head has no trunk of its own)",
        )
        check("max_steps", self.max_steps is None or self.max_steps >= 1, "must be >= 1 or None")
        check.positive("policy_lr", "value_lr", "beta", "is_clip", "max_grad_norm")
        check("weight_decay", 0 <= self.weight_decay < math.inf, "must be a finite number >= 0")
        check("process_reward_coef", 0 <= self.process_reward_coef < math.inf, "must be >= 0")
        check("lam", 0 <= self.lam <= 1, "must lie in [0, 1]")
        check("warmup_ratio", 0 <= self.warmup_ratio < 1, "must lie in [0, 1)")
        check.one_of("lr_scheduler", LR_SCHEDULERS)
        check.one_of("is_mode", ("none", "sequence", "prefix"))
        check.one_of("value_model", ("separate", "shared"))
        check.one_of("critic", CRITICS)
        check(
            "critic",
            self.critic == "learned" or self.method == "dqo",
            "oracle and flat critics are DQO's (DRO's V(x) is learned; the others have none)",
        )
        check("critic_offset", math.isfinite(self.critic_offset), "must be a finite number")
        check(
            "critic_offset",
            not self.critic_offset or self.critic != "learned",
            "shifts a fixed critic (critic: oracle or flat), not the learned V_φ",
        )
        check.one_of("mixed_precision", ("auto", "no", "bf16", "fp16"))
        check.one_of("padding_side", ("left", "right"))
        check.one_of("report_to", REPORT_TO)
        check.dtype()
        check(
            "dtype",
            DTYPES.get(str(self.dtype).lower()) == "float32",
            "the master weights must be float32 (AdamW updates of ~1e-5 vanish in bf16/fp16: "
            "1 + 5e-6 rounds to 1); for bf16 compute keep dtype float32 and set "
            "mixed_precision: bf16",
        )


@dataclass(frozen=True)
class EvalConfig:
    """What determines an evaluation (stored beside its outputs; a resume must match).

    greedy: run the greedy pass. num_samples: k responses per problem at ``temperature`` and
    ``top_p`` for sampling accuracy (0 skips it). batch_size: problems per chunk written to
    ``outputs.jsonl`` (the unit of resume); generation batches hold ``batch_size`` sequences.
    """

    model: str = _field("smollm2", "the model to evaluate: a spec, or a training run's …/policy")
    task: str = _field("gsm8k", "the problem set: gsm8k, math or toy")
    data_source: str | None = _field(None, "where the test problems come from")
    split: str = _field("test", "the split to evaluate on")
    limit: int | None = _field(None, "the first N problems (None: the whole split)")
    greedy: bool = _field(True, "run the greedy pass")
    num_samples: int = _field(0, "sampled responses per problem for sampling accuracy (0: none)")
    temperature: float = _field(1.0, "temperature of the sampled responses")
    top_p: float = _field(1.0, "nucleus truncation of the sampled responses, in (0, 1]")
    max_new_tokens: int = _field(256, "length limit of a response")
    batch_size: int = _field(
        16, "problems per chunk of outputs.jsonl (the unit of resume) and per batch"
    )
    seed: int = _field(0, "seed of the sampled responses")
    engine: str = _field("decode", _ENGINE_HELP)
    kv_cache: str = _field("dynamic", _KV_CACHE_HELP)
    device: str | None = _field(None, _DEVICE_HELP)
    dtype: str | None = _field(None, _DTYPE_HELP)

    def __post_init__(self) -> None:
        check = _Checker.of_job(self)
        check.at_least(0, "num_samples", "seed")
        check(
            "greedy",
            self.greedy or self.num_samples >= 1,
            "nothing to evaluate with num_samples=0: keep greedy=True or set num_samples >= 1",
        )
        check.at_least(1, "max_new_tokens", "batch_size")
        check.positive("temperature")
        check("top_p", 0 < self.top_p <= 1, "must lie in (0, 1]")
        check.one_of("engine", ENGINES)
        check.one_of("kv_cache", KV_CACHES)
        check(
            "kv_cache",
            self.kv_cache == "dynamic" or self.engine == "generate",
            "a static cache is an option of engine: generate (decode keeps its own buffer)",
        )
        check.dtype()
