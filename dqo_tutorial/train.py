r"""One trainer for DQO and its baselines: same data path, same loop, only the loss differs.

=========  ===================================  =============================================
method     data                                 loss (dqo-method.md)
=========  ===================================  =============================================
``sft``    gold solutions (or given pairs)      −mean log π_θ(a_h|s_h) over response tokens
``rft``    the sampled responses with outcome 1 the same, on the model's own correct answers
``dpo``    (correct, wrong) pairs of one prompt :func:`~dqo_tutorial.kernels.dpo_loss` (§9)
``dro``    the responses that have an outcome   :func:`~dqo_tutorial.kernels.dro_loss`, V(x)
``dqo``    every sampled response               :func:`~dqo_tutorial.kernels.dqo_loss` (§3–§6)
=========  ===================================  =============================================

A length-cut response has no outcome (:mod:`dqo_tutorial.rewards`: one rule every method reads).

Every method reads the offline dataset of :func:`dqo_tutorial.sampling.build_dataset` (SFT reads
the task's gold solutions), every log-probability comes from the one path
:func:`dqo_tutorial.modeling.per_token_logprobs`, and π_ref's log-probs are re-scored once, before
the first step, by the starting policy under the training numerics (:func:`score_reference`; no
reference model stays in memory).

**Engine.** The loop runs on 🤗 Accelerate: the same script runs on a CPU, one GPU (bf16 autocast
with ``mixed_precision="auto"``), or several processes under ``accelerate launch`` / ``torchrun``
(DDP or FSDP; ``configs/accelerate/``).

**Batches and exact accumulation.** One optimiser step consumes a *window* of
``batch_size × grad_accum × processes`` examples. Its order is a seeded permutation per epoch, so
the data order depends only on ``seed`` — never on the number of processes — and a resumed run
sees exactly what the uninterrupted run saw. Each process takes its contiguous share of the
window and splits it into ``grad_accum`` micro-batches. Every loss is a *sum* over the window's
items divided by the window's item count N (tokens for SFT/RFT/DQO, pairs for DPO, responses for
DRO; all-reduced over processes), so 1 × 4, 4 × 1 and 2 processes × 2 give the same gradient.
The examples are tensorised once, when loaded (:func:`tensorise_examples`): collating a
micro-batch only pads and stacks.

With ``micro_batch_tokens`` = M > 0 the window and the share are the same, but the share is
sorted by length and cut into micro-batches by *tokens* (:func:`token_budget_split`): each
forward's input, rows × longest row (the packed rows with ``packing``, the padded rows without;
a DPO pair brings its chosen and its rejected sequence), holds at most M tokens, pads
included — an example longer than M runs alone. Similar lengths share a micro-batch, so few
tokens are pads. The processes then agree on the count (one all-reduce, max; FSDP all-gathers
in every forward, so unequal counts would hang) and a process below it halves its largest
micro-batches. The sum / N argument holds for any cut: the gradient is the fixed-size one.

The logged statistics are means weighted by each micro-batch's item count, over the window and
every process (they were one vote per micro-batch, then per process). For a statistic whose
denominator is the method's item — the per-token ones of SFT/RFT/DQO, DPO's per-pair margin and
accuracy, DRO's per-response value error — that is the window's own value, however it is cut;
the others (DPO/DRO's per-token ratio statistics, ``delta_std``) are item-weighted means of
micro-batch values. ``*_max`` statistics are maxima over the window.

**Checkpoints.** Every ``checkpoint_every`` steps (and at the end) ``checkpoints/step-NNNNNN``
holds models, optimisers, schedulers and RNG states (``Accelerator.save_state``) plus
``trainer_state.json``; it is written under a temporary name and renamed when complete. A rerun
with the same ``out_dir`` and configuration resumes from the newest checkpoint.

**Outputs.** ``policy/`` (a Hugging Face model directory with the tokenizer: ``--model`` for
:mod:`dqo_tutorial.evaluate`), ``value_model.safetensors`` (DRO/DQO), ``log.jsonl`` (one line
per step: losses, learning rates, δ statistics, value error, KL to π_ref, importance-weight mean,
max and clip rate, tokens/s; ``micro_batches`` per process with a token budget) and
``train_summary.json``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from . import __version__
from .artifacts import atomic_write_json, check_run_identity, run_lock
from .collate import DQOCollator
from .configs import METHODS, TrainConfig
from .decoding import sampling_law
from .errors import ConfigError, DataError, MismatchError, MissingDataError
from .methods import ExampleContext, Forward, dpo_pairs, get_method, trains_value_model
from .modeling import disable_dropout, pack_rows, per_token_logprobs, value_model_for
from .models import load_model_and_tokenizer, model_identity, tokenizer_fingerprint
from .rewards import token_rewards
from .tasks import get_task

__all__ = [
    "METHODS",
    "BehaviorLaw",
    "NotEnoughDataError",
    "TrainConfig",
    "load_rows",
    "check_dataset_matches",
    "token_rewards",
    "build_examples",
    "dpo_pairs",
    "behavior_law_of",
    "score_reference",
    "item_count",
    "micro_batch_cost",
    "token_budget_split",
    "tensorise_examples",
    "compute_losses",
    "finished_summary",
    "optimizer_step",
    "train",
]


class NotEnoughDataError(DataError):
    """The data of a method do not fill one optimiser step (e.g. RFT or DPO when π_ref never
    answers correctly: no correct samples, no pairs). The facts are attributes: ``method``,
    ``examples`` (how many it built), ``window`` (examples per step); ``reason`` says it in
    words, the message adds the way out."""

    def __init__(self, method: str, examples: int, window: int) -> None:
        self.method, self.examples, self.window = method, examples, window
        self.reason = (
            f"{examples} {method} examples do not fill one step of {window} "
            "(batch_size × grad_accum × processes)"
        )
        super().__init__(f"{self.reason}: lower TrainConfig.batch_size or add data")

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across worker processes
        return (type(self), (self.method, self.examples, self.window))


# --------------------------------------------------------------------------------------------
# data: one example format per method, all collated by DQOCollator
# --------------------------------------------------------------------------------------------


def _dataset_path(data: str | os.PathLike[str]) -> Path:
    """The saved 🤗 Dataset of ``data`` (a ``build_dataset`` directory, or its ``dataset``)."""
    path = Path(data)
    if (path / "dataset").is_dir():
        path = path / "dataset"
    if not (path / "dataset_info.json").is_file():
        raise MissingDataError(
            f"no sampled dataset at {data}: create one with `dqo-tutorial sample --out {data}` "
            "(or let it finish: the dataset is written after the last shard)"
        )
    return path


def load_rows(data: str | os.PathLike[str]) -> Any:
    """The sampled dataset at ``data`` (a ``build_dataset`` directory, or its ``dataset``)."""
    from datasets import load_from_disk

    return load_from_disk(str(_dataset_path(data)))


def _dataset_dir(data: str | os.PathLike[str]) -> Path:
    path = Path(data)
    return path.parent if path.name == "dataset" else path


def check_dataset_matches(
    cfg: TrainConfig, tokenizer: Any = None, *, model_given: bool = False
) -> None:
    """Refuse to train ``cfg`` on ``cfg.data`` when the dataset was sampled for something else.

    Its ``manifest.json`` names the task, the prompt template, the model and the tokenizer it
    was made with; token ids read with another tokenizer are noise that trains without error (a
    toy dataset under SmolLM2 does), so each must match: the task and template by name, the
    model by what it loads (:func:`~dqo_tutorial.models.model_identity`; skipped when the caller
    hands ``train`` its own policy, ``cfg.model`` then being a label) and the tokenizer by
    :func:`~dqo_tutorial.models.tokenizer_fingerprint` (when ``tokenizer`` is given). A dataset
    without a manifest (saved by hand) is taken as it is. Raises
    :class:`~dqo_tutorial.errors.MismatchError` naming both sides and the way out.
    """
    _dataset_path(cfg.data or "")  # there at all?
    folder = _dataset_dir(cfg.data or "")
    path = folder / "manifest.json"
    if not path.is_file():
        return
    manifest = json.loads(path.read_text())
    task = get_task(cfg.task)
    diffs = []
    if manifest.get("task") != cfg.task:
        diffs.append(f"task {manifest.get('task')!r} ≠ {cfg.task!r}")
    elif manifest.get("prompt_template_version") != task.prompt_template_version:
        diffs.append(
            f"prompt template {manifest.get('prompt_template_version')!r} ≠ "
            f"{task.prompt_template_version!r} (resample with this package version)"
        )
    if not model_given and model_identity(str(manifest.get("model"))) != model_identity(cfg.model):
        diffs.append(f"model {manifest.get('model')!r} ≠ {cfg.model!r}")
    fingerprint = manifest.get("tokenizer", {}).get("fingerprint")
    if tokenizer is not None and fingerprint not in (None, tokenizer_fingerprint(tokenizer)):
        diffs.append(
            f"tokenizer {manifest['tokenizer'].get('vocab_size')} tokens ≠ this model's "
            f"{len(tokenizer)} tokens"
        )
    if diffs:
        raise MismatchError(
            f"{folder} was sampled for another run ({'; '.join(diffs)}; dataset ≠ requested): "
            f"train with --task {manifest.get('task')} --model {manifest.get('model')}, or "
            "sample a dataset for this model with `dqo-tutorial sample`"
        )


def build_examples(
    method: str,
    rows: Sequence[Mapping[str, Any]] | Any,
    *,
    tokenizer: Any = None,
    process_reward_coef: float = 0.0,
    pairs_per_prompt: int = 4,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """The training examples of ``method`` (its :class:`~dqo_tutorial.methods.Method`
    ``examples``): dicts that :class:`DQOCollator` pads.

    - ``sft``: ``rows`` are ``{"prompt", "response"}`` texts, tokenised jointly with EOS
      (:func:`~dqo_tutorial.collate.tokenize_example`; needs ``tokenizer``);
    - ``rft``: the sampled rows whose :func:`~dqo_tutorial.rewards.outcome` is 1 (their sampled
      ids, no re-tokenisation; a length-cut response is never a positive);
    - ``dpo``: for each prompt, up to ``pairs_per_prompt`` (correct, wrong) pairs, each response
      used at most once per side (a seeded shuffle); ``{"chosen": ex, "rejected": ex}``;
    - ``dro`` / ``dqo``: the sampled rows with ``ref_logps``, ``behavior_logps``, per-token
      ``rewards`` (outcome + α-shaping), ``reward`` and ``terminal`` — every row for DQO (a cut
      row is bootstrapped), the rows with an outcome for DRO (rewards.py: one rule).
    """
    ctx = ExampleContext(tokenizer, process_reward_coef, pairs_per_prompt, seed)
    return get_method(method).examples(rows, ctx)


def item_count(method: str, batch: Mapping[str, Any]) -> Tensor:
    """N contributed by one collated batch: action tokens (SFT/RFT/DQO), pairs (DPO) or
    responses (DRO) — the denominator of the loss over a whole window."""
    return get_method(method).count(batch)


def tensorise_examples(examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``examples`` with every list field turned into a 1-D tensor, once, in place (ids and
    masks long, log-probs and rewards float32: the dtypes :class:`DQOCollator` gives them), so
    collating a micro-batch only pads and stacks. Scalars and strings stay; a DPO pair's two
    sides are tensorised. Returns ``examples``."""

    def convert(ex: dict[str, Any]) -> None:
        for key, value in ex.items():
            if isinstance(value, dict):
                convert(value)
            elif isinstance(value, list | tuple):
                ex[key] = torch.as_tensor(value)
                if ex[key].is_floating_point():
                    ex[key] = ex[key].float()

    for ex in examples:
        convert(ex)
    return examples


def _packed_rows(lengths: Sequence[int], width: int) -> int:
    """Rows of width ``width`` that :func:`~dqo_tutorial.modeling.pack_rows` fills with these
    sequences: first-fit decreasing, as it packs (at least one row)."""
    free: list[int] = []
    for n in sorted(lengths, reverse=True):
        if n:
            r = next((r for r, f in enumerate(free) if f >= n), len(free))
            free += [width] * (r == len(free))
            free[r] -= n
    return max(1, len(free))


def micro_batch_cost(lengths: Sequence[int], packed: bool = False) -> int:
    """Tokens of the forward's input for sequences of these lengths: rows × longest row, the
    rows being the sequences (padded) or the packed rows (``packed``); pads count."""
    longest = max(lengths)
    return (_packed_rows(lengths, longest) if packed else len(lengths)) * longest


def token_budget_split(
    lengths: Sequence[int | Sequence[int]], budget: int, *, packed: bool = False, count: int = 0
) -> list[list[int]]:
    """Indices of ``lengths`` cut into micro-batches of at most ``budget`` tokens.

    ``lengths[i]``: example i's sequence length, or the lengths of its sequences (a DPO pair:
    chosen, rejected — both go into the forward). The examples are sorted by their longest
    sequence (then total, then index) and cut greedily into consecutive groups, each as long as
    its :func:`micro_batch_cost` stays ≤ ``budget``; an example that alone costs more is a group
    of its own. ``count`` larger than the number of groups (another process needs more): the
    group with the most examples is halved until there are ``count`` (≤ ``len(lengths)``); a
    half never costs more than its group (padded: fewer rows, no longer; packed: checked on
    random lengths in the tests).
    """
    seqs = [(n,) if isinstance(n, int) else tuple(n) for n in lengths]
    order = sorted(range(len(seqs)), key=lambda i: (max(seqs[i]), sum(seqs[i]), i))

    def fits(group: Sequence[int]) -> bool:
        return micro_batch_cost([n for i in group for n in seqs[i]], packed) <= budget

    groups, start = [], 0
    while start < len(order):
        lo, hi = start + 1, len(order)  # the largest end whose group fits (bisection)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if fits(order[start:mid]) else (lo, mid - 1)
        groups.append(order[start:lo])
        start = lo
    if count > len(order):
        raise ValueError(f"cannot cut {len(order)} examples into {count} micro-batches")
    while len(groups) < count:
        j = max(range(len(groups)), key=lambda g: len(groups[g]))  # the first largest
        half = len(groups[j]) // 2
        groups[j : j + 1] = [groups[j][:half], groups[j][half:]]
    return groups


def _collate(method: str, collator: DQOCollator, examples: Sequence[Mapping[str, Any]]) -> dict:
    if get_method(method).paired:  # chosen rows first, then rejected: one forward pass for both
        examples = [e["chosen"] for e in examples] + [e["rejected"] for e in examples]
    return collator(examples)


# --------------------------------------------------------------------------------------------
# losses: one log-prob path feeds every method
# --------------------------------------------------------------------------------------------


def compute_losses(
    method: str,
    batch: Mapping[str, Tensor],
    policy: nn.Module,
    value_model: nn.Module | None,
    cfg: TrainConfig,
    num_items: Tensor | float,
    *,
    policy_grad: bool = True,
) -> tuple[Tensor, Tensor | None, dict[str, Tensor]]:
    """``(policy_loss, value_loss or None, stats)`` of one micro-batch.

    Losses are sums over the micro-batch divided by ``num_items`` (the whole window's N), so the
    micro-batch losses of a window add up to the window's mean. ``policy_grad=False`` runs the
    policy forward without a graph (the value warm-up steps). With ``cfg.is_normalize`` the
    DQO losses here use the *unnormalised* weights and ``stats["is_weight_sum"]`` carries Σ w:
    self-normalised IS divides by the mean weight of the whole window, which no micro-batch
    knows, so :func:`train` applies it to the accumulated gradients (one scalar per window).
    """
    ids, att = batch["input_ids"], batch["attention_mask"]
    shared = value_model is not None and cfg.value_model == "shared"
    packed = batch.get("packing", True) if cfg.packing else False
    with torch.set_grad_enabled(policy_grad and torch.is_grad_enabled()):
        out = per_token_logprobs(policy, ids, att, output_hidden=shared,
                                 score_mask=batch["action_mask"], packed=packed)  # fmt: skip
        # every loss reads log π at actions only (the fused head scores nothing else)
    logps, hidden = out if shared else (out, None)
    n = torch.as_tensor(num_items, dtype=torch.float32, device=logps.device).clamp(min=1)

    def values(mask: Tensor | None = None) -> Any:
        if value_model is None:
            raise ValueError(f"method {method!r} reads V_φ but trains without a value model")
        m, p = (att, packed) if mask is None else (mask, cfg.packing)  # another mask: repack
        return value_model(hidden, m) if shared else value_model(ids, m, packed=p)

    return get_method(method).loss(batch, Forward(logps, values), cfg, n)


# --------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------


class BehaviorLaw(NamedTuple):
    """The law μ the offline data were sampled from: π_ref's logits at ``temperature`` τ,
    renormalised over the ``top_p`` nucleus (dqo-method.md §5); τ = 1, top-p = 1 is μ = π_ref."""

    temperature: float = 1.0
    top_p: float = 1.0


def behavior_law_of(data: str | os.PathLike[str]) -> BehaviorLaw | None:
    """The sampling law recorded in a ``build_dataset`` directory (None if it holds no record)."""
    path = Path(data) / "sampling_config.json"
    if not path.exists():
        return None
    config = json.loads(path.read_text())["config"]
    return BehaviorLaw(float(config["temperature"]), float(config["top_p"]))


@torch.no_grad()
def score_reference(
    accelerator: Any,
    policy: nn.Module,
    sequences: Sequence[dict[str, Any]],
    *,
    batch_size: int,
    behavior: BehaviorLaw | None,
    packed: bool = False,
) -> dict[str, Any]:
    """Re-score log π_ref — and log μ where μ is a function of π_ref's logits — with the very
    policy training starts from, under the training numerics (docs/implementation-notes.md 13).

    The stored columns were computed by the sampler: on a GPU with bf16 *weights*, while training
    runs fp32 weights under bf16 autocast. Those numerics differ by ~0.04 nats per token on
    SmolLM2 (up to 0.28, the review's measurement), so ρ = log π_θ − log π_ref ≠ 0 and the prefix
    importance weights drift from 1 before any update. After this pass, at step 0
    log π_θ = log π_ref up to the batch-shape noise of one forward pass (≤ 3e-5 measured under
    bf16 autocast on CPU) and, when μ = π_ref, w = 1.

    ``sequences``: example dicts (``input_ids``, ``action_mask``, ``ref_logps``,
    ``behavior_logps``), updated in place; ``packed``: as the training forward passes (the same
    numerics on both sides of ρ). The policy is scored in eval mode (no dropout: π_ref is the
    model, not a dropout sample of it); its mode is restored afterwards. ``behavior``:
    μ = π_ref (τ = 1, top-p = 1) → log μ is the re-scored log π_ref; top-p = 1, τ ≠ 1 → the
    tempered log-softmax, re-scored; top-p < 1 → the nucleus law of the re-scored logits
    (:func:`~dqo_tutorial.decoding.sampling_law`, the sampler's own rule), except for a token
    outside the re-scored nucleus (its boundary moved with the numerics), which keeps its
    stored log μ and is counted (``behavior_outside_nucleus``); unknown (None) → the stored
    log μ is kept. Each process scores every W-th length-sorted batch (all processes run the
    same number of forward passes, as FSDP needs) and the results are gathered. Returns how far
    the stored columns were off.
    """
    training = policy.training
    policy.eval()
    try:
        return _score_reference(accelerator, policy, sequences, batch_size, behavior, packed)
    finally:
        policy.train(training)


def _score_reference(accelerator, policy, sequences, batch_size, behavior, packed) -> dict:
    """:func:`score_reference`'s passes, with the policy in eval mode."""
    from accelerate.utils import gather_object

    tau = None if behavior is None else behavior.temperature
    nucleus = None
    if behavior is not None and behavior.top_p < 1:
        nucleus = partial(sampling_law, temperature=tau, top_p=behavior.top_p)
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]["input_ids"]))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    world, rank = accelerator.num_processes, accelerator.process_index
    mine = batches[rank::world]
    mine += mine[-1:] * (math.ceil(len(batches) / world) - len(mine))  # equal pass counts
    collator = DQOCollator(pad_token_id=0)  # pads are excluded by the attention mask
    scored = []
    for idx in mine:
        batch = collator([{k: sequences[i][k] for k in ("input_ids", "action_mask")} for i in idx])
        ids, att = batch["input_ids"].to(accelerator.device), batch["attention_mask"]
        att, mask = att.to(ids.device), batch["action_mask"].to(ids.device)
        score = {"score_mask": mask, "packed": packed}
        columns = [per_token_logprobs(policy, ids, att, **score)]
        if nucleus is not None:
            columns.append(per_token_logprobs(policy, ids, att, law=nucleus, **score))
        elif tau is not None and tau != 1.0:
            columns.append(per_token_logprobs(policy, ids, att, tau, **score))
        columns = [torch.where(mask, c, 0.0).float().cpu() for c in columns]
        for row, i in enumerate(idx):
            n = len(sequences[i]["input_ids"])
            scored.append((i, *(c[row, :n].tolist() for c in columns)))
    drift, outside = _write_rescored(sequences, gather_object(scored), rescore_mu=tau is not None)
    drift_sum, n_tokens = drift.sum().item(), len(drift)
    drift_max = drift.max().item() if n_tokens else 0.0
    report = {
        "stored_ref_abs_diff_mean": drift_sum / max(n_tokens, 1),
        "stored_ref_abs_diff_max": drift_max,
        "behavior_logps": _behavior_rule(behavior),
    }
    if nucleus is not None:
        report["behavior_outside_nucleus"] = outside
    return report


def _behavior_rule(behavior: BehaviorLaw | None) -> str:
    """How :func:`score_reference` obtains log μ, in words (logged in the train summary)."""
    if behavior is None:
        return "stored (law unknown)"
    if behavior.top_p < 1:
        return f"re-scored nucleus (τ = {behavior.temperature}, top-p = {behavior.top_p})"
    if behavior.temperature == 1.0:
        return "= re-scored log π_ref"
    return f"re-scored at τ = {behavior.temperature}"


def _write_rescored(
    sequences: Sequence[dict[str, Any]], scored: Sequence[tuple], *, rescore_mu: bool
) -> Tensor:
    """Write :func:`score_reference`'s ``(index, log π_ref, [log μ])`` results into the
    sequences, each column in its stored form (a list, or a float32 tensor of a
    :func:`tensorise_examples` example); a −inf log μ (outside the re-scored nucleus) keeps the
    stored value. Returns |new − stored log π_ref| at every action and the count of those
    kept log μ."""

    def like(stored: Any, values: Tensor) -> Any:
        return values.float() if isinstance(stored, Tensor) else values.tolist()

    drifts, outside = [torch.zeros(0, dtype=torch.float64)], 0
    for i, ref, *mu in dict((x[0], x) for x in scored).values():  # one per sequence
        seq = sequences[i]
        stored = torch.as_tensor(seq["ref_logps"], dtype=torch.float64)
        actions = torch.as_tensor(seq["action_mask"]).bool()
        ref = torch.tensor(ref, dtype=torch.float64)
        drifts.append((ref - stored)[actions].abs())
        seq["ref_logps"] = like(seq["ref_logps"], ref)
        if rescore_mu:
            new = torch.tensor(mu[0], dtype=torch.float64) if mu else ref
            kept = torch.isneginf(new) & actions
            outside += int(kept.sum())
            old = torch.as_tensor(seq["behavior_logps"], dtype=torch.float64)
            seq["behavior_logps"] = like(seq["behavior_logps"], torch.where(kept, old, new))
    return torch.cat(drifts), outside


def optimizer_step(
    accelerator: Any, updates: Sequence[tuple[nn.Module, Any, Any]], max_grad_norm: float
) -> tuple[list[float], bool]:
    """One optimiser step of one or more ``(model, optimizer, scheduler)`` under one loss scale.

    The order ``torch.amp.GradScaler`` documents for several optimisers (fp16): unscale each
    optimiser **once**, clip each model by the norm of its true gradient, step each optimiser
    through the scaler, then update the scale **once**. (Accelerate's ``clip_grad_norm_``
    unscales every optimiser and its optimiser ``step`` updates the scale, so two models stepped
    one after the other had the second model's gradients unscaled twice: ×1/65,536.)

    Returns the gradient norms before clipping (one per model) and whether the step was skipped.
    A non-finite gradient anywhere (an fp16 overflow; in fp32/bf16 a divergence) skips the
    *whole* step — every optimiser and every schedule, as one step of one objective — and under
    fp16 backs the scale off once. Without a scaler (fp32, bf16) it is clip and step.
    """
    scaler = accelerator.scaler
    raw = [_unwrap_optimizer(opt) for _, opt, _ in updates]
    if scaler is not None:
        for opt in raw:
            scaler.unscale_(opt)
    norms = [_clip_grad_norm(model, max_grad_norm) for model, _, _ in updates]
    skipped = not all(math.isfinite(n) for n in norms)
    if not skipped:
        for opt in raw:
            if scaler is not None:
                scaler.step(opt)
            else:
                opt.step()
        for _, _, sched in updates:
            sched.step()
    if scaler is not None:
        scaler.update()  # from the inf checks unscale_ recorded: backs off after an overflow
    return norms, skipped


def _scale_gradients(models: Sequence[nn.Module | None], factor: float) -> None:
    for model in models:
        if model is not None:
            for p in model.parameters():
                if p.grad is not None:
                    p.grad.mul_(factor)


def _unwrap_optimizer(opt: Any) -> torch.optim.Optimizer:
    while hasattr(opt, "optimizer"):  # accelerate's AcceleratedOptimizer
        opt = opt.optimizer
    return opt


def _clip_grad_norm(model: nn.Module, max_norm: float) -> float:
    """Clip already-unscaled gradients; FSDP (v1) computes the norm over its shards."""
    if hasattr(model, "clip_grad_norm_"):
        norm = model.clip_grad_norm_(max_norm)
    else:
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)  # FSDP2: DTensor


def _window_order(n: int, window: int, epoch: int, seed: int) -> list[list[int]]:
    """The epoch's windows: a seeded permutation cut into full windows (the tail is dropped)."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    perm = torch.randperm(n, generator=g).tolist()
    return [perm[i : i + window] for i in range(0, n - window + 1, window)]


def _latest_checkpoint(out: Path) -> Path | None:
    found = sorted((out / "checkpoints").glob("step-*"))
    return found[-1] if found else None


def _mixed_precision(choice: str) -> str:
    if choice != "auto":
        return choice
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def _sft_rows(cfg: TrainConfig, tokenizer: Any) -> list[dict[str, str]]:
    task = get_task(cfg.task)
    return [
        {"prompt": task.format_prompt(p.question, tokenizer), "response": task.gold_solution(p)}
        for p in task.load(cfg.split, cfg.data_source, cfg.limit)
    ]


def load_starting_point(cfg: TrainConfig) -> tuple[nn.Module, Any]:
    """π_ref and its tokenizer as training starts from it: ``cfg.model`` in ``cfg.dtype`` on the
    CPU (Accelerate moves it to the device)."""
    return load_model_and_tokenizer(cfg.model, device="cpu", dtype=cfg.dtype)


def finished_summary(cfg: TrainConfig, out_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``train_summary.json`` of a run of ``cfg`` that already finished in ``out_dir``, else
    None — callers skip the (cheap but not free) reload-and-rewrite of a finished :func:`train`."""
    path = Path(out_dir) / "train_summary.json"
    if not path.exists():
        return None
    summary = json.loads(path.read_text())
    return summary if TrainConfig.identity_of(summary["config"]) == cfg.identity() else None


def train(
    cfg: TrainConfig,
    out_dir: str | os.PathLike[str],
    *,
    policy: nn.Module | None = None,
    tokenizer: Any = None,
    rows: Sequence[Mapping[str, Any]] | Any = None,
    progress: bool = True,
    callback: Callable[[int, dict[str, float]], None] | None = None,
    probe: Callable[[nn.Module], Mapping[str, float]] | None = None,
    probe_every: int = 0,
    behavior: BehaviorLaw | None = None,
) -> dict[str, Any]:
    """Train ``cfg.method`` and write the outputs of the module docstring into ``out_dir``.

    ``policy`` / ``tokenizer``: an already loaded π_ref to start from (``cfg.model`` then only
    labels the run); ``rows``: the data instead of ``cfg.data`` (sampled rows, or for SFT
    ``{"prompt", "response"}`` texts). ``callback(step, stats)`` runs after every optimiser step
    on the main process (live plots; an exception there interrupts the run like Ctrl-C would, and
    a rerun resumes from the last checkpoint). ``probe(policy)``: every ``probe_every`` steps
    and after the last, on the main process, the policy in eval mode without gradients — e.g. a
    dev-set accuracy for learning curves; its values join that step's line of ``log.jsonl``
    (single process or DDP; not under FSDP, whose forward needs every process). ``behavior``:
    the law the rows were sampled from (read from ``cfg.data`` when the rows come from there);
    DPO, DRO and DQO re-score log π_ref (and log μ where it follows from π_ref's logits) with the
    starting policy under the training numerics before the first step (:func:`score_reference`).
    Returns the training summary.
    """
    from accelerate import Accelerator

    start = time.perf_counter()
    out = Path(out_dir)
    if rows is None and cfg.method != "sft" and cfg.data is None:
        raise ConfigError(
            f"TrainConfig.data: method {cfg.method!r} trains on a sampled dataset: pass --data "
            "DIR (a folder made by `dqo-tutorial sample --out DIR`); only sft needs none"
        )
    # cpu=True without a GPU: only then does Accelerate treat torchrun's processes as MULTI_CPU
    trackers = None if cfg.report_to == "none" else cfg.report_to
    accelerator = Accelerator(
        mixed_precision=_mixed_precision(cfg.mixed_precision),
        cpu=not torch.cuda.is_available(),
        log_with=trackers,
        project_dir=str(out / "trackers") if trackers else None,
    )
    if accelerator.distributed_type.value == "DEEPSPEED":
        raise ConfigError(
            "DeepSpeed is not supported: it ties one engine to one model, and DRO/DQO train two; "
            "use FSDP (configs/accelerate/fsdp.yaml) or DDP"
        )
    if probe is not None and accelerator.distributed_type.value == "FSDP":
        raise ValueError(
            "train(probe=...) runs the policy on the main process only: not under FSDP"
        )
    if probe is not None and probe_every < 1:
        raise ValueError(f"probe_every must be >= 1 with a probe, got {probe_every}")
    main = accelerator.is_main_process
    locked = ExitStack()
    if main:  # one run at a time in `out` (the other processes write only where rank 0 says)
        locked.enter_context(run_lock(out))
    with locked:
        return _train(
            cfg, out, accelerator, start, policy=policy, tokenizer=tokenizer, rows=rows,
            progress=progress, callback=callback, probe=probe, probe_every=probe_every,
            behavior=behavior,
        )  # fmt: skip


class _Plan(NamedTuple):
    """How the examples are cut into steps: each process takes ``share`` examples of every
    ``window`` (``share × processes``), ``steps_per_epoch`` windows per pass."""

    share: int
    window: int
    steps_per_epoch: int
    total_steps: int
    value_warmup: int


class _Models(NamedTuple):
    """The prepared models, optimisers and schedules (the value ones None without V_φ)."""

    policy: nn.Module
    opt_p: Any
    sched_p: Any
    value: nn.Module | None
    opt_v: Any
    sched_v: Any


def _train(
    cfg: TrainConfig,
    out: Path,
    accelerator: Any,
    start: float,
    *,
    policy: nn.Module | None,
    tokenizer: Any,
    rows: Sequence[Mapping[str, Any]] | Any,
    progress: bool,
    callback: Callable[[int, dict[str, float]], None] | None,
    probe: Callable[[nn.Module], Mapping[str, float]] | None,
    probe_every: int,
    behavior: BehaviorLaw | None,
) -> dict[str, Any]:
    """:func:`train` once the accelerator is up and the output folder locked: set-up, the
    reference pass, resume, the loop of :func:`_train_step`, the final save."""
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    main = accelerator.is_main_process
    set_seed(cfg.seed)
    rows_given = rows is not None
    policy, tokenizer, examples = _load_inputs(cfg, policy, tokenizer, rows)
    plan = _plan(cfg, len(examples), accelerator.num_processes)
    if main:  # the inputs have loaded: this folder now holds this configuration's run
        check_run_identity(out / "train_config.json", {"config": cfg.identity()})
    accelerator.wait_for_everyone()
    models = _prepare_models(cfg, accelerator, policy, plan)
    # Before any checkpoint is loaded the policy is π_ref: score the reference with it, under
    # the numerics training will use (a resumed run redoes this pass and gets the same numbers).
    reference: dict[str, Any] = {}
    if get_method(cfg.method).reference:
        if behavior is None and not rows_given:
            behavior = behavior_law_of(cfg.data or "")
        reference = _reference_pass(cfg, accelerator, models.policy, examples, behavior)
    step = _resume(accelerator, out)
    if step and main and progress:
        print(f"resuming from step {step} of {plan.total_steps} ({out / 'checkpoints'})")
    if cfg.report_to != "none":  # TensorBoard / W&B beside log.jsonl (out/trackers/<method>)
        scalars = {k: v for k, v in asdict(cfg).items() if isinstance(v, int | float | str)}
        accelerator.init_trackers(cfg.method, config=scalars)
    collator = DQOCollator(tokenizer.pad_token_id, padding_side=cfg.padding_side)
    bar = tqdm(
        total=plan.total_steps,
        initial=step,
        unit="step",
        desc=f"train {cfg.method}",
        disable=not (progress and main),
    )
    tokens_seen, loop_start = 0, time.perf_counter()
    last: dict[str, float] = {}
    while step < plan.total_steps:
        last, tokens = _train_step(cfg, accelerator, models, plan, examples, collator, step)
        step, tokens_seen = step + 1, tokens_seen + tokens
        last["tokens"] = tokens
        skipped = last.pop("skipped_step", None)  # (the log's key order: rate, then the flag)
        last["tokens_per_s"] = tokens_seen / (time.perf_counter() - loop_start)
        if skipped is not None:
            last["skipped_step"] = skipped
        if probe is not None and main and (step % probe_every == 0 or step == plan.total_steps):
            last |= _probe(accelerator, models.policy, probe)
        if cfg.report_to != "none":
            accelerator.log({k: v for k, v in last.items() if k != "step"}, step=step)
        if main:
            with (out / "log.jsonl").open("a") as f:
                f.write(json.dumps(last) + "\n")
            bar.update(1)
            bar.set_postfix(loss=f"{last['policy_loss']:.4g}")
        if step % cfg.checkpoint_every == 0 or step == plan.total_steps:
            _save_checkpoint(accelerator, out, step, cfg)
        if callback is not None and main:
            callback(step, last)
    bar.close()
    if cfg.report_to != "none":
        accelerator.end_training()
    summary = {
        "package_version": __version__,
        "method": cfg.method,
        "model": cfg.model,
        "config": asdict(cfg),
        "num_examples": len(examples),
        "steps": plan.total_steps,
        "steps_per_epoch": plan.steps_per_epoch,
        "processes": accelerator.num_processes,
        "mixed_precision": accelerator.mixed_precision,
        "reference": reference,
        "last": last,
        "wall_s_this_run": time.perf_counter() - start,
    }
    _save_final(accelerator, out, models, tokenizer, summary)
    return summary


def _load_inputs(
    cfg: TrainConfig, policy: nn.Module | None, tokenizer: Any, rows: Any
) -> tuple[nn.Module, Any, list[dict[str, Any]]]:
    """π_ref and its tokenizer (loaded unless given), and the method's training examples."""
    policy_given = policy is not None
    if policy_given and tokenizer is None:
        raise ValueError("pass the tokenizer together with the policy")
    method = get_method(cfg.method)
    from_disk = rows is None and not method.gold
    if from_disk:  # before the (slow) model load: the dataset was made for this task and model
        check_dataset_matches(cfg, tokenizer, model_given=policy_given)
    if not policy_given:
        policy, tokenizer = load_starting_point(cfg)
        if from_disk:  # and its token ids are this tokenizer's
            check_dataset_matches(cfg, tokenizer, model_given=True)
    if rows is None:
        rows = _sft_rows(cfg, tokenizer) if method.gold else load_rows(cfg.data or "")
    examples = build_examples(
        cfg.method,
        rows,
        tokenizer=tokenizer,
        process_reward_coef=cfg.process_reward_coef,
        pairs_per_prompt=cfg.dpo_pairs_per_prompt,
        seed=cfg.seed,
    )
    return policy, tokenizer, tensorise_examples(examples)  # once: collation pads and stacks


def _plan(cfg: TrainConfig, n_examples: int, world: int) -> _Plan:
    """Steps of the run; refuses data that fill no step and a warm-up that never ends."""
    share = cfg.batch_size * cfg.grad_accum
    window = share * world
    steps_per_epoch = n_examples // window
    if steps_per_epoch == 0:
        raise NotEnoughDataError(cfg.method, n_examples, window)
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
    # value warm-up exists only where there is a value model (SFT/RFT/DPO train from step 0)
    value_warmup = cfg.value_warmup_steps if trains_value_model(cfg) else 0
    if value_warmup >= total_steps:
        raise ConfigError(
            f"TrainConfig.value_warmup_steps: {value_warmup} warm-up steps of {total_steps} in "
            f"all would never train the policy; lower it below {total_steps}"
        )
    return _Plan(share, window, steps_per_epoch, total_steps, value_warmup)


def _prepare_models(cfg: TrainConfig, accelerator: Any, policy: nn.Module, plan: _Plan) -> _Models:
    """The policy, V_φ (DRO/DQO), their AdamW optimisers and schedules, through Accelerate."""
    from transformers import get_scheduler

    policy.train()
    if cfg.disable_dropout:  # before V_φ copies the trunk: the copy has none either
        disable_dropout(policy)
    if cfg.gradient_checkpointing:
        policy.gradient_checkpointing_enable()
    value_model: nn.Module | None = None
    if trains_value_model(cfg):
        value_model = value_model_for(
            policy,
            cfg.value_model,
            extra_layers=cfg.value_extra_layers,
            head_width=cfg.value_head_width,
        )
        if cfg.disable_dropout:  # (its extra layers, head)
            disable_dropout(value_model)
        value_model.train()

    def optimiser(model: nn.Module, lr: float, steps: int) -> tuple[Any, Any]:
        fused = accelerator.device.type == "cuda"  # one kernel for all parameters on a GPU
        opt = torch.optim.AdamW(
            model.parameters(), lr=lr, weight_decay=cfg.weight_decay, fused=fused or None
        )
        sched = get_scheduler(
            cfg.lr_scheduler, opt, int(cfg.warmup_ratio * steps), num_training_steps=steps
        )
        return opt, sched

    # The schedulers are not handed to accelerator.prepare: its wrapper steps a scheduler once
    # per *process* per optimiser step (it assumes each process adds a batch), but our windows
    # are fixed in examples, so the schedule must advance once per step whatever the process
    # count (tests/test_distributed.py). They are registered for checkpointing instead.
    opt_p, sched_p = optimiser(policy, cfg.policy_lr, plan.total_steps - plan.value_warmup)
    if value_model is None:
        policy, opt_p = accelerator.prepare(policy, opt_p)
        accelerator.register_for_checkpointing(sched_p)
        return _Models(policy, opt_p, sched_p, None, None, None)
    opt_v, sched_v = optimiser(value_model, cfg.value_lr, plan.total_steps)
    policy, value_model, opt_p, opt_v = accelerator.prepare(policy, value_model, opt_p, opt_v)
    accelerator.register_for_checkpointing(sched_p, sched_v)
    return _Models(policy, opt_p, sched_p, value_model, opt_v, sched_v)


def _reference_pass(
    cfg: TrainConfig,
    accelerator: Any,
    policy: nn.Module,
    examples: Sequence[Mapping[str, Any]],
    behavior: BehaviorLaw | None,
) -> dict[str, Any]:
    """:func:`score_reference` over every sequence the method trains on, timed."""
    sequences = list(examples)
    if get_method(cfg.method).paired:
        sequences = [e for ex in examples for e in (ex["chosen"], ex["rejected"])]
    t = time.perf_counter()
    reference = score_reference(accelerator, policy, sequences, batch_size=cfg.batch_size,
                                behavior=behavior, packed=cfg.packing)  # fmt: skip
    reference["seconds"] = time.perf_counter() - t
    return reference


def _resume(accelerator: Any, out: Path) -> int:
    """Load the latest checkpoint (if any) and drop the log lines of later steps (they will be
    redone); returns the step to continue from."""
    step = 0
    ckpt = _latest_checkpoint(out)
    if ckpt is not None:
        accelerator.load_state(str(ckpt))
        step = json.loads((ckpt / "trainer_state.json").read_text())["step"]
    log_path = out / "log.jsonl"
    if accelerator.is_main_process:
        kept = []
        if log_path.exists() and step:
            kept = [
                ln for ln in log_path.read_text().splitlines() if json.loads(ln)["step"] <= step
            ]
        log_path.write_text("".join(ln + "\n" for ln in kept))
    return step


def _window(
    cfg: TrainConfig,
    accelerator: Any,
    plan: _Plan,
    examples: Sequence[Any],
    collator: Any,
    step: int,
) -> list[dict[str, Any]]:
    """This process's micro-batches of the window of ``step`` (on its device)."""
    epoch, k = divmod(step, plan.steps_per_epoch)
    order = _window_order(len(examples), plan.window, epoch, cfg.seed)[k]
    mine = [examples[i] for i in order[accelerator.process_index * plan.share :][: plan.share]]
    groups = _micro_groups(cfg, accelerator, mine)
    micro = [_collate(cfg.method, collator, group) for group in groups]
    if cfg.packing:  # the packed layout, found on the CPU: no device sync in the forward
        for b in micro:
            b["packing"] = pack_rows(b["input_ids"], b["attention_mask"])
    device = accelerator.device
    return [{k2: v.to(device) if hasattr(v, "to") else v for k2, v in b.items()} for b in micro]


def _micro_groups(cfg: TrainConfig, accelerator: Any, share: list[Any]) -> list[list[Any]]:
    """A process's share of a window cut into micro-batches: ``grad_accum`` of ``batch_size``
    in window order, or (``micro_batch_tokens``) by :func:`token_budget_split`, as many on
    every process."""
    if not cfg.micro_batch_tokens:
        return [share[j : j + cfg.batch_size] for j in range(0, len(share), cfg.batch_size)]
    if get_method(cfg.method).paired:  # both sequences of a pair go into the forward
        lengths: list[Any] = [(len(e["chosen"]["input_ids"]), len(e["rejected"]["input_ids"]))
                              for e in share]  # fmt: skip
    else:
        lengths = [len(e["input_ids"]) for e in share]
    groups = token_budget_split(lengths, cfg.micro_batch_tokens, packed=cfg.packing)
    count = _agreed_count(accelerator, len(groups))
    if count > len(groups):  # another process needs more: the same number everywhere
        groups = token_budget_split(lengths, cfg.micro_batch_tokens, packed=cfg.packing,
                                    count=count)  # fmt: skip
    return [[share[i] for i in group] for group in groups]


def _agreed_count(accelerator: Any, count: int) -> int:
    """The largest micro-batch count of all processes (one all-reduce; FSDP all-gathers in
    every forward, so every process must run as many)."""
    if accelerator.num_processes == 1:
        return count
    agreed = torch.tensor(count, device=accelerator.device)
    torch.distributed.all_reduce(agreed, op=torch.distributed.ReduceOp.MAX)
    return int(agreed)


def _train_step(
    cfg: TrainConfig,
    accelerator: Any,
    models: _Models,
    plan: _Plan,
    examples: Sequence[Any],
    collator: Any,
    step: int,
) -> tuple[dict[str, float], int]:
    """One optimiser step on one window: the losses of every micro-batch accumulated into the
    window's mean (the algorithm), then the engine's update. Returns the step's log line and the
    tokens it saw (all processes)."""
    device, world = accelerator.device, accelerator.num_processes
    micro = _window(cfg, accelerator, plan, examples, collator, step)
    counts = [item_count(cfg.method, b).to(device).float() for b in micro]
    num_items = accelerator.reduce(torch.stack(counts).sum(), reduction="sum")
    policy_active = step >= plan.value_warmup
    zero = torch.zeros((), device=device)
    sums: dict[str, Tensor] = {}  # on the device: one host sync per step, in _reduce_stats
    maxima: dict[str, Tensor] = {}
    totals = {"policy_loss": zero, "value_loss": zero}
    weight_sum, normalize = zero, False
    for j, b in enumerate(micro):
        with ExitStack() as no_sync:  # all-reduce gradients once, after the last micro-batch
            if j < len(micro) - 1:
                for m in (models.policy, models.value):
                    if m is not None:
                        no_sync.enter_context(accelerator.no_sync(m))
            pl, vl, stats = compute_losses(
                cfg.method, b, models.policy, models.value, cfg, num_items,
                policy_grad=policy_active,
            )  # fmt: skip
            # DDP/FSDP average gradients over processes: × world keeps the window's sum / N.
            loss = (pl if policy_active else pl.detach()) + (vl if vl is not None else 0.0)
            if loss.requires_grad:
                accelerator.backward(loss * world)
        totals["policy_loss"] = totals["policy_loss"] + pl.detach().float()
        if vl is not None:
            totals["value_loss"] = totals["value_loss"] + vl.detach().float()
        if "is_weight_sum" in stats:  # a method with self-normalised importance weights
            weight_sum = weight_sum + stats.pop("is_weight_sum")
            normalize = True
        _accumulate_stats(stats, counts[j], sums, maxima)
    if normalize:
        # self-normalised IS over the window: w / mean_window(w), the same for 1 × 4, 4 × 1
        # and any process count; the losses are linear in w, so it scales the gradients
        mean_w = float(accelerator.reduce(weight_sum, reduction="sum") / num_items)
        _scale_gradients([models.policy, models.value], 1.0 / mean_w)
        totals = {k: v / mean_w for k, v in totals.items()}
    updates = {}
    if policy_active:
        updates["policy"] = (models.policy, models.opt_p, models.sched_p)
    if models.value is not None:
        updates["value"] = (models.value, models.opt_v, models.sched_v)
    lrs = {f"{k}_lr": u[1].param_groups[0]["lr"] for k, u in updates.items()}  # this step's
    norms, skipped = optimizer_step(accelerator, list(updates.values()), cfg.max_grad_norm)
    for opt in (models.opt_p, models.opt_v):
        if opt is not None:
            opt.zero_grad(set_to_none=True)
    tokens = sum(b["attention_mask"].sum() for b in micro).to(device)
    line = {
        "step": step + 1,
        "epoch": step // plan.steps_per_epoch,
        **_reduce_stats(
            accelerator, totals, sums, maxima, num_items, has_value=models.value is not None
        ),
        **{f"{k}_grad_norm": n for k, n in zip(updates, norms)},
        "policy_lr": 0.0,
        **lrs,
        "num_items": float(num_items),
    }
    if cfg.micro_batch_tokens:
        line["micro_batches"] = float(len(micro))  # per process, the count they agreed on
    if skipped:
        line["skipped_step"] = 1.0  # fp16 overflow: no parameter and no schedule moved
    return line, int(accelerator.reduce(tokens, reduction="sum"))


def _accumulate_stats(
    stats: Mapping[str, Any], weight: Tensor, sums: dict[str, Tensor], maxima: dict[str, Tensor]
) -> None:
    """Add one micro-batch's statistics: a ``*_max`` stays a maximum; a mean enters × its
    micro-batch's item count ``weight`` (tokens, pairs or responses), so that
    :func:`_reduce_stats` can divide by the window's N — micro-batches of different sizes
    (token budget) then weigh what they hold instead of one vote each."""
    for name, val in stats.items():
        val = torch.as_tensor(val, device=weight.device).detach().float()
        if name.endswith("_max"):
            maxima[name] = torch.maximum(maxima[name], val) if name in maxima else val
        else:
            sums[name] = sums[name] + val * weight if name in sums else val * weight


def _reduce_stats(
    accelerator: Any,
    totals: Mapping[str, Tensor],
    sums: Mapping[str, Tensor],
    maxima: Mapping[str, Tensor],
    num_items: Tensor,
    *,
    has_value: bool,
) -> dict[str, float]:
    """Each process holds its share of the window's losses and of its item-weighted statistics
    (both summed over processes; the statistics then / N: the window's item-weighted mean) and
    maxima (the largest of all), as device scalars: one all-reduce, one gather and one host
    transfer for the whole step."""
    added = [*totals, *sums]
    vector = torch.stack([*totals.values(), *sums.values()])
    vector = accelerator.reduce(vector, reduction="sum")
    vector[len(totals) :] /= num_items.clamp(min=1)  # statistics: the mean over the window
    values = dict(zip(added, vector.tolist()))
    if maxima:
        top = accelerator.gather(torch.stack(list(maxima.values()))[None]).max(dim=0).values
        values |= dict(zip(maxima, top.tolist()))
    if not has_value:
        values.pop("value_loss", None)
    return values


def _probe(
    accelerator: Any, policy: nn.Module, probe: Callable[[nn.Module], Mapping[str, float]]
) -> dict[str, float]:
    probed = accelerator.unwrap_model(policy)
    probed.eval()
    with torch.no_grad():
        values = {k: float(v) for k, v in probe(probed).items()}
    probed.train()
    return values


def _save_checkpoint(accelerator: Any, out: Path, step: int, cfg: TrainConfig) -> None:
    """Every rank's state into a temporary folder, renamed ``checkpoints/step-N`` when complete;
    only the newest ``keep_checkpoints`` stay."""
    main = accelerator.is_main_process
    final = out / "checkpoints" / f"step-{step:06d}"
    tmp = out / "checkpoints" / f".tmp-step-{step:06d}"
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=False)  # every rank: its RNG state
    accelerator.wait_for_everyone()
    if main:
        atomic_write_json(tmp / "trainer_state.json", {"step": step, "config": asdict(cfg)})
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in sorted((out / "checkpoints").glob("step-*"))[: -cfg.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def _save_final(
    accelerator: Any, out: Path, models: _Models, tokenizer: Any, summary: Mapping[str, Any]
) -> None:
    """The trained policy (with its tokenizer), V_φ's weights and the summary."""
    from safetensors.torch import save_file

    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(models.policy)
    state = accelerator.get_state_dict(models.policy)
    value_state = accelerator.get_state_dict(models.value) if models.value is not None else None
    if accelerator.is_main_process:
        unwrapped.save_pretrained(str(out / "policy"), state_dict=state, safe_serialization=True)
        tokenizer.save_pretrained(str(out / "policy"))
        if value_state is not None:
            value_state = {k: v.contiguous() for k, v in value_state.items()}
            save_file(value_state, str(out / "value_model.safetensors"))
        atomic_write_json(out / "train_summary.json", summary)
    accelerator.wait_for_everyone()
    accelerator.free_memory()
