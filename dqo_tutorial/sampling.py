r"""The offline DQO dataset: self-sampled responses with log μ, log π_ref and rewards.

DQO is offline (dqo-method.md §1, §5): the data are drawn **once** from a behaviour policy μ — here
the starting model π_ref at temperature τ with optional top-p — and every training step re-reads
them. Each sampled response therefore has to carry, token by token and action-aligned (§7):

- ``behavior_logps`` — log μ(a_h|s_h) of the law that was *actually* sampled,

  .. math::  \mu(a|s) = \frac{\exp(z_a/\tau)\,[a \in P_p(s)]}{\sum_{b \in P_p(s)} \exp(z_b/\tau)}

  where z are the reference logits and P_p(s) the top-p nucleus of softmax(z/τ) (all tokens when
  p = 1). The importance weights exp(Σ log π_θ − log μ) of §5 need exactly this quantity; with
  τ ≠ 1 or p < 1 it is **not** log π_ref;
- ``ref_logps`` — log π_ref(a_h|s_h) = log softmax(z)[a_h] (τ = 1), the anchor of the KL term and
  of the parameterisation Q = β log(π_θ/π_ref) + V. At τ = 1 and p = 1, μ = π_ref: the dataset
  then stores this one teacher-forced column as ``behavior_logps`` too (the sampler records
  nothing), so importance weights compare numbers of one numerics and start at exactly 1;
- ``reward`` — the outcome reward r_H = 1 if the final answer is correct, else 0
  (the task's ``is_correct``: :func:`dqo_tutorial.gsm8k.is_correct`, for MATH
  :func:`dqo_tutorial.math_problems.is_correct`), and ``terminal`` — whether the response ended
  with EOS
  (a response cut by the length limit is not terminal and is bootstrapped, §4);
- optionally the potentials Φ of §6 at the step boundaries (process rewards).

Pieces: :func:`generate` (batched sampling that records log μ), :func:`reference_logprobs`,
:func:`step_boundaries` / :func:`monte_carlo_potentials` / :func:`process_rewards` (§6), and
:func:`build_dataset`, which ties them together into a resumable, sharded dataset on disk with a
manifest, and :func:`summarize` for its statistics.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, Features, List, Value, concatenate_datasets, load_from_disk
from tqdm.auto import tqdm
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)

from .artifacts import atomic_write_json, check_run_identity, run_lock, save_dataset_atomically
from .collate import DQOCollator, example_from_ids
from .configs import ENGINES, SamplingConfig, run_manifest
from .decoding import DecodeSampler, Generation, Sampler, check_sampling_law, derive_seed
from .errors import DataError
from .gsm8k import dataset_hash, is_correct
from .modeling import per_token_logprobs
from .models import (
    check_reads_task,
    load_model_and_tokenizer,
    load_tokenizer,
    tokenizer_fingerprint,
)
from .processes import Processes
from .rewards import process_rewards  # noqa: F401  (documented here since round 1)
from .rollouts import pooled_rollout_counts
from .tasks import get_task
from .tokenization import step_boundaries

__all__ = [
    "Generation",
    "generate",
    "Sampler",
    "HFSampler",
    "DecodeSampler",
    "make_sampler",
    "reference_logprobs",
    "step_boundaries",
    "monte_carlo_potentials",
    "with_monte_carlo_potentials",
    "process_rewards",
    "SamplingConfig",
    "build_dataset",
    "summarize",
]

# Knobs of `generate` that reshape the next-token law, pinned to neutral values. generate() fills
# every knob left at None from the checkpoint's generation_config.json and then from global
# defaults — among them top_k = 50 — so leaving one unset silently changes μ.
_NEUTRAL_PROCESSORS = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "min_new_tokens": 0}
_NEUTRAL_WARPERS = {
    "top_k": 0,
    "min_p": 0.0,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
}


# --------------------------------------------------------------------------------------------
# sampling
# --------------------------------------------------------------------------------------------


class _LogMuRecorder(LogitsProcessor):
    """The last logits processor of a sampling ``generate``: it receives the very scores that are
    softmaxed and sampled (after our τ and top-p warpers) and keeps log μ of each sampled token.

    At step t it learns token t − 1 (the last column of ``input_ids``) and gathers its log μ from
    the previous step's log-softmax; :meth:`finish` gathers the last token. Memory: one (B, V)
    buffer plus (B, steps) floats — never the (steps, B, V) scores of ``output_scores``."""

    def __init__(self) -> None:
        self.previous: torch.Tensor | None = None
        self.columns: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.previous is not None:
            self.columns.append(self.previous.gather(1, input_ids[:, -1:]))
        self.previous = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, new_tokens: torch.Tensor) -> torch.Tensor:
        """log μ of every new token, (B, steps) float32."""
        last = self.previous.gather(1, new_tokens[:, -1:])
        return torch.cat([*self.columns, last], dim=1)[:, : new_tokens.shape[1]]


def _decoding(temperature: float, top_p: float, record: bool) -> tuple[dict, LogitsProcessorList]:
    """GenerationConfig fields and logits processors for one decoding law.

    Sampling with log μ recorded: τ and top-p run as *our* processors, then the recorder, and
    ``generate`` is told τ = 1, top-p = 1 so that it appends no warper of its own after them
    (custom processors run before generate's warpers: a recorder placed among them would see the
    untempered scores). What the recorder sees is then exactly what is sampled from."""
    if temperature == 0:
        return {"do_sample": False}, LogitsProcessorList()
    if not record:
        law = {"temperature": temperature, "top_p": top_p}
        return {"do_sample": True, **law, **_NEUTRAL_WARPERS}, LogitsProcessorList()
    processors = LogitsProcessorList()
    if temperature != 1.0:
        processors.append(TemperatureLogitsWarper(temperature))
    if top_p < 1.0:
        processors.append(TopPLogitsWarper(top_p))
    processors.append(_LogMuRecorder())
    return {"do_sample": True, "temperature": 1.0, "top_p": 1.0, **_NEUTRAL_WARPERS}, processors


def _sample(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: Sequence[Sequence[int]],
    *,
    num_samples: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int | Sequence[int],
    seed: int,
    batch_size: int,
    record_logps: bool = True,
    kv_cache: str = "dynamic",
    stream_ids: Sequence[int] | None = None,
) -> list[Generation]:
    """:func:`generate` on token-id prompts; ``max_new_tokens`` may be one budget per prompt.

    The rows (prompt i, sample j), prompt-major, are cut into batches of ``batch_size``; batch b
    is drawn under ``torch.manual_seed(derive_seed(seed, b))`` in a forked RNG (the caller's
    global RNG state is left untouched) — with ``stream_ids``, ``derive_seed(seed, s)``, s the
    entry of the batch's first prompt. ``generate`` draws one stream per batch, so what a row draws
    still depends on the batch it lands in: only the decode loop gives the same responses at
    any batch size.
    """
    check_sampling_law(temperature, top_p)
    budgets = (
        [max_new_tokens] * len(prompt_ids)
        if isinstance(max_new_tokens, int)
        else list(max_new_tokens)
    )
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    collate = DQOCollator(pad_token_id=pad, padding_side="left")  # new tokens go on the right
    rows = [(i, j) for i in range(len(prompt_ids)) for j in range(num_samples)]
    device = model.device
    out: list[Generation] = []
    for b, start in enumerate(range(0, len(rows), batch_size)):
        chunk = rows[start : start + batch_size]
        batch = collate([example_from_ids(prompt_ids[i], []) for i, _ in chunk])
        law, processors = _decoding(temperature, top_p, record_logps)
        config = GenerationConfig(
            max_new_tokens=max(budgets[i] for i, _ in chunk),
            eos_token_id=eos,
            pad_token_id=pad,
            return_dict_in_generate=True,
            cache_implementation=None if kv_cache == "dynamic" else kv_cache,
            **_NEUTRAL_PROCESSORS,
            **law,
        )
        named = None if stream_ids is None else stream_ids[chunk[0][0]]
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(derive_seed(seed, b) if named is None else derive_seed(seed, named))
            result = model.generate(
                input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
                generation_config=config,
                logits_processor=processors,
            )
        new = result.sequences[:, batch["input_ids"].shape[1] :]
        recorder = processors[-1] if processors else None
        logps = recorder.finish(new).cpu() if isinstance(recorder, _LogMuRecorder) else None
        out += _generations(tokenizer, prompt_ids, chunk, budgets, new.cpu(), logps)
    return out


def _generations(
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: Sequence[Sequence[int]],
    chunk: Sequence[tuple[int, int]],
    budgets: Sequence[int],
    new: torch.Tensor,
    logps: torch.Tensor | None,
) -> list[Generation]:
    """One batch's rows as :class:`Generation` records, each cut after its first EOS or at its
    own budget."""
    eos, out = tokenizer.eos_token_id, []
    for r, (i, j) in enumerate(chunk):
        ids = new[r, : budgets[i]].tolist()
        finished = eos in ids
        n = ids.index(eos) + 1 if finished else len(ids)
        out.append(
            Generation(
                prompt_index=i,
                sample_index=j,
                prompt_ids=[int(t) for t in prompt_ids[i]],
                response_ids=ids[:n],
                finished=finished,
                text=tokenizer.decode(ids[:n], skip_special_tokens=True),
                behavior_logps=None if logps is None else logps[r, :n].tolist(),
            )
        )
    return out


@dataclass
class HFSampler:
    """:class:`Sampler` by Hugging Face ``generate`` (:func:`_sample`): batches of
    ``batch_size`` sequences, left-padded, one derived seed per batch; ``kv_cache``: one of
    :data:`~dqo_tutorial.configs.KV_CACHES` (``"static"`` lets transformers compile the decode
    step on a GPU; on a CPU it draws the same responses at the same speed, measured)."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    batch_size: int = 16
    kv_cache: str = "dynamic"

    def sample(self, prompt_ids: Sequence[Sequence[int]], **law: Any) -> list[Generation]:
        return _sample(self.model, self.tokenizer, prompt_ids, batch_size=self.batch_size,
                       kv_cache=self.kv_cache, **law)  # fmt: skip


def make_sampler(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    batch_size: int,
    engine: str = "decode",
    kv_cache: str = "dynamic",
) -> Sampler:
    """The :class:`Sampler` a config names: ``engine`` ``"decode"`` →
    :class:`~dqo_tutorial.decoding.DecodeSampler`, ``"generate"`` → :class:`HFSampler` (with its
    ``kv_cache``); ``batch_size`` sequences per batch either way."""
    if engine == "generate":
        return HFSampler(model, tokenizer, batch_size, kv_cache)
    if engine == "decode":
        return DecodeSampler(model, tokenizer, batch_size)
    raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")


def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    *,
    num_samples: int = 1,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 256,
    seed: int = 0,
    batch_size: int = 16,
    record_logps: bool = True,
    sampler: Sampler | None = None,
    stream_ids: Sequence[int] | None = None,
) -> list[Generation]:
    """Sample ``num_samples`` responses per prompt, recording log μ: by default with the
    package's decode loop (:class:`~dqo_tutorial.decoding.DecodeSampler`), or with ``sampler``,
    any :class:`Sampler` (e.g. :class:`HFSampler`, Hugging Face ``generate``; ``model`` is then
    unused).

    ``temperature > 0`` samples from μ = softmax(z/τ) restricted to the top-p nucleus and
    renormalised (module docstring); ``temperature == 0`` decodes greedily (``behavior_logps`` is
    then None: a deterministic μ has no use as a behaviour law). log μ is gathered at every step
    from the very law the token is drawn from; the tests check, for both engines, that it equals
    a fresh forward pass's tempered, top-p-renormalised log-probs. Nothing else reshapes the law
    (with ``generate``, every knob that could — the default ``top_k = 50``, a checkpoint's
    repetition penalty, ... — is pinned to its neutral value).

    Prompts are final strings (chat template applied) tokenised without added special tokens;
    a batch holds about ``batch_size`` sequences (each prompt counts ``num_samples`` times).
    Memory: recording log μ holds one batch_size × vocab buffer (float32: 100 MB for 512 ×
    49,152), not every step's scores (51 GB at 512 new tokens); ``record_logps=False``
    (evaluation) records nothing and leaves ``behavior_logps`` None. Sampling is reproducible:
    with the decode loop each row (i, j) has its own stream derived from ``(seed, i, j)`` (i:
    the prompt's entry of ``stream_ids``, default its position), so the batch size changes
    nothing; with ``generate``, batch b uses the seed derived from ``(seed, b)``.

    Returns:
        ``len(prompts) * num_samples`` generations, prompt-major: entry ``i * num_samples + j`` is
        sample j of prompt i.
    """
    prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    sampler = sampler or DecodeSampler(model, tokenizer, batch_size)
    return sampler.sample(
        prompt_ids,
        num_samples=num_samples,
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        seed=seed,
        record_logps=record_logps,
        stream_ids=stream_ids,
    )


@torch.inference_mode()
def reference_logprobs(
    model: PreTrainedModel, examples: Sequence[Mapping[str, Any]], batch_size: int = 8
) -> list[list[float]]:
    """log π_ref(a_j|s_j) (τ = 1) of each example, action-aligned, 0 off the action mask.

    ``examples`` carry ``input_ids`` (prompt + response) and ``action_mask`` (e.g. from
    :func:`~dqo_tutorial.collate.example_from_ids`). The numbers come from the one log-prob path,
    :func:`~dqo_tutorial.modeling.per_token_logprobs`; examples are batched by length to waste
    little compute on padding, and returned in input order as lists of ``len(input_ids)`` floats.
    """
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    collate = DQOCollator(pad_token_id=0)  # any id: pads are excluded by the attention mask
    result: list[list[float]] = [[] for _ in examples]
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = collate([{k: examples[i][k] for k in ("input_ids", "action_mask")} for i in idx])
        mask = batch["action_mask"].to(model.device)
        logps = per_token_logprobs(
            model,
            batch["input_ids"].to(model.device),
            batch["attention_mask"].to(model.device),
            score_mask=mask,
        )
        logps = torch.where(mask, logps, 0.0).float().cpu()
        for row, i in enumerate(idx):
            result[i] = logps[row, : len(examples[i]["input_ids"])].tolist()
    return result


# --------------------------------------------------------------------------------------------
# process rewards (§6)
# --------------------------------------------------------------------------------------------


def monte_carlo_potentials(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    generations: Sequence[Generation],
    golds: Sequence[str],
    *,
    k: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    seed: int,
    batch_size: int,
    mode: str = "strict",
    grader: Callable[[str, str, str], bool] | None = None,
    sampler: Sampler | None = None,
    positions: Sequence[Sequence[int]] | None = None,
    pooled: bool = False,
) -> list[list[tuple[int, float]]]:
    r"""Φ at every step boundary of every response (or at the response positions h of
    ``positions``, one list per generation), by Monte-Carlo rollouts of μ (Math-Shepherd),
    drawn by ``sampler`` (default: :class:`~dqo_tutorial.decoding.DecodeSampler` of ``model``:
    each distinct state is prefilled once for its k rollouts).

    .. math::  \hat\Phi(s) = \frac1k \sum_{i=1}^{k} \mathbb 1[\text{is\_correct}(
               \text{prefix}(s) \circ c_i,\ \text{gold})], \qquad c_i \sim \mu(\cdot \mid s)

    From the boundary state s = (x, a_1 … a_h), k completions c_i are sampled with the same τ and
    top-p as the data, each with the **remaining budget** ``max_new_tokens − h``, and the full
    response text (prefix tokens + completion, decoded together) is graded by ``grader`` in
    ``mode`` (the task's ``is_correct``; default :func:`dqo_tutorial.gsm8k.is_correct`). Φ̂ thus
    estimates the success probability of the same length-limited process that produced the data,
    so the final state's potential is exactly the observed reward R. Continuations start from the
    sampled token ids (no re-tokenisation of the prefix). A state reached by several responses
    (same prompt, same prefix — common for the first lines) is rolled out once and all of them get
    its estimate: on the toy task this cuts the rollouts 2.5-fold. ``pooled``: a rollout also
    counts for every later state it passes through, and each state is topped up to ``k``
    (:mod:`dqo_tutorial.rollouts`; unbiased, fewer rollouts, estimates of one path correlated).

    Returns:
        per generation, the list of ``(h, Φ̂)`` pairs in the order of :func:`step_boundaries`
        (of ``positions``).
    """
    # one estimate per distinct state: responses of one prompt often share their first lines,
    # and a state's rollouts do not depend on which response reached it
    unique: dict[tuple[Any, ...], int] = {}
    located: list[list[tuple[int, int]]] = [[] for _ in generations]  # (h, unique state)
    for g, gen in enumerate(generations):
        at = step_boundaries(tokenizer, gen.response_ids) if positions is None else positions[g]
        for h in at:
            key = (tuple(gen.prompt_ids), tuple(gen.response_ids[:h]), golds[g])
            located[g].append((h, unique.setdefault(key, len(unique))))
    states = list(unique)
    sampler = sampler or DecodeSampler(model, tokenizer, batch_size)
    budgets = [max_new_tokens - len(prefix) for _, prefix, _ in states]
    grader = grader or is_correct

    def grade(state: tuple[Any, ...], completion: Sequence[int]) -> bool:
        text = tokenizer.decode(list(state[1]) + list(completion), skip_special_tokens=True)
        return bool(grader(text, state[2], mode))

    if pooled:
        counts = pooled_rollout_counts(sampler, states, budgets, grade, k=k, seed=seed,
                                       temperature=temperature, top_p=top_p)  # fmt: skip
        estimates = [hits / n for hits, n in counts]
    else:
        completions = sampler.sample(
            [prompt + prefix for prompt, prefix, _ in states], num_samples=k,
            temperature=temperature, top_p=top_p, max_new_tokens=budgets, seed=seed,
            record_logps=False,
        )  # fmt: skip
        estimates = [
            sum(grade(state, c.response_ids) for c in completions[s * k : (s + 1) * k]) / k
            for s, state in enumerate(states)
        ]
    potentials = [[(h, estimates[u]) for h, u in states_of] for states_of in located]
    return potentials


# --------------------------------------------------------------------------------------------
# the dataset
# --------------------------------------------------------------------------------------------


def _features(with_process: bool) -> Features:
    """Explicit column types: every shard must have the same schema (an empty list infers none)."""
    ints, floats = List(Value("int32")), List(Value("float32"))
    columns = {
        "prompt_index": Value("int32"),
        "problem_index": Value("int32"),
        "sample_index": Value("int32"),
        "prompt": Value("string"),
        "response": Value("string"),
        "gold": Value("string"),
        "input_ids": ints,
        "action_mask": List(Value("int8")),
        "behavior_logps": floats,
        "ref_logps": floats,
        "reward": Value("float32"),
        "terminal": Value("bool"),
        "response_length": Value("int32"),
    }
    if with_process:
        columns |= {"step_boundaries": ints, "step_phi": floats, "phi_start": Value("float32")}
    return Features(columns)


def _build_shard(
    cfg: SamplingConfig,
    shard: int,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    problems: Sequence[Any],
    first: int,
    sampler: Sampler | None = None,
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Rows and timings of one shard: sample (``sampler``, default: the one ``cfg.engine``
    names, of ``model``), label, log π_ref (teacher-forced by ``model``), optional potentials."""
    timing = {}
    t = time.perf_counter()
    task = get_task(cfg.task)
    prompts = [task.format_prompt(p.question, tokenizer) for p in problems]
    mu_is_ref = cfg.temperature == 1.0 and cfg.top_p == 1.0  # μ = π_ref: one column, below
    sampler = sampler or make_sampler(model, tokenizer, cfg.batch_size, cfg.engine, cfg.kv_cache)
    gens = generate(
        model,
        tokenizer,
        prompts,
        num_samples=cfg.num_samples,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        max_new_tokens=cfg.max_new_tokens,
        seed=derive_seed(cfg.seed, shard),
        batch_size=cfg.batch_size,
        sampler=sampler,
        record_logps=not mu_is_ref,
    )
    timing["sampling_s"] = time.perf_counter() - t

    t = time.perf_counter()
    examples = [example_from_ids(g.prompt_ids, g.response_ids) for g in gens]
    ref = reference_logprobs(model, examples, cfg.batch_size)
    timing["reference_s"] = time.perf_counter() - t

    golds = [problems[g.prompt_index].gold for g in gens]
    rewards = [
        float(task.is_correct(g.text, gold, cfg.reward_mode)) for g, gold in zip(gens, golds)
    ]
    rows = []
    for g, ex, ref_logps, reward, gold in zip(gens, examples, ref, rewards, golds):
        n_prompt = len(g.prompt_ids)
        rows.append(
            {
                "prompt_index": first + g.prompt_index,
                "problem_index": problems[g.prompt_index].index,
                "sample_index": g.sample_index,
                "prompt": prompts[g.prompt_index],
                "response": g.text,
                "gold": gold,
                "input_ids": ex["input_ids"],
                "action_mask": ex["action_mask"],
                "behavior_logps": ref_logps if mu_is_ref else [0.0] * n_prompt + g.behavior_logps,
                "ref_logps": ref_logps,
                "reward": reward,
                "terminal": g.finished,
                "response_length": len(g.response_ids),
            }
        )

    if cfg.process_rewards and task.exact_potentials is not None:
        for row, g in zip(rows, gens):
            question = problems[g.prompt_index].question
            pairs = task.exact_potentials(tokenizer, question, g.response_ids)
            row["step_boundaries"] = [h for h, _ in pairs]
            row["step_phi"] = [phi for _, phi in pairs]
            row["phi_start"] = 1.0  # exact: the faithful continuation of the prompt is correct
    elif cfg.process_rewards:
        t = time.perf_counter()
        columns = _monte_carlo_columns(
            cfg,
            model,
            tokenizer,
            gens,
            golds,
            [g.prompt_index for g in gens],
            rewards,
            seed=derive_seed(cfg.seed, shard, "process"),
            sampler=sampler,
        )
        for row, extra in zip(rows, columns):
            row.update(extra)
        timing["process_s"] = time.perf_counter() - t
    return rows, timing


def _monte_carlo_columns(
    cfg: SamplingConfig,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    gens: Sequence[Generation],
    golds: Sequence[str],
    prompt_keys: Sequence[int],
    rewards: Sequence[float],
    seed: int,
    sampler: Sampler | None = None,
) -> list[dict[str, Any]]:
    """The process columns of Monte-Carlo Φ: ``step_boundaries``, ``step_phi`` and ``phi_start``.

    Φ(s_1) is the mean reward of the prompt's own responses (those sharing its ``prompt_keys``
    entry) — itself a Monte-Carlo estimate from s_1, at no extra cost."""
    potentials = monte_carlo_potentials(
        model,
        tokenizer,
        gens,
        golds,
        k=cfg.process_k,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        max_new_tokens=cfg.max_new_tokens,
        seed=seed,
        batch_size=cfg.batch_size,
        mode=cfg.reward_mode,
        grader=get_task(cfg.task).is_correct,
        sampler=sampler,
    )
    by_prompt: dict[int, list[float]] = {}
    for key, reward in zip(prompt_keys, rewards):
        by_prompt.setdefault(key, []).append(reward)
    return [
        {
            "step_boundaries": [h for h, _ in pairs],
            "step_phi": [phi for _, phi in pairs],
            "phi_start": sum(by_prompt[key]) / len(by_prompt[key]),
        }
        for key, pairs in zip(prompt_keys, potentials)
    ]


def with_monte_carlo_potentials(
    dataset: Dataset,
    cfg: SamplingConfig,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
) -> Dataset:
    """The same rows with **Monte-Carlo** potentials (``process_k`` rollouts per state, §6).

    Use it to compare Φ estimators on identical responses: e.g. the toy task's exact Φ (what
    :func:`build_dataset` stores for it) against rollouts of μ, as GSM8K must estimate it.
    ``cfg`` gives the rollout law (``temperature``, ``top_p``, ``max_new_tokens``, ``seed``,
    ``process_k``, ``batch_size``, ``reward_mode``, ``task``): that of the data. Existing process
    columns are replaced; every other column is kept as it is.
    """
    rows = [dict(r) for r in dataset]
    gens = []
    for r in rows:
        n_prompt = len(r["input_ids"]) - sum(r["action_mask"])
        gens.append(
            Generation(
                prompt_index=r["prompt_index"],
                sample_index=r["sample_index"],
                prompt_ids=list(r["input_ids"][:n_prompt]),
                response_ids=list(r["input_ids"][n_prompt:]),
                finished=r["terminal"],
                text=r["response"],
                behavior_logps=None,
            )
        )
    columns = _monte_carlo_columns(
        cfg,
        model,
        tokenizer,
        gens,
        [r["gold"] for r in rows],
        [r["prompt_index"] for r in rows],
        [r["reward"] for r in rows],
        seed=derive_seed(cfg.seed, "relabel"),
    )
    return Dataset.from_list(
        [{**r, **extra} for r, extra in zip(rows, columns)], features=_features(True)
    )


def summarize(dataset: Dataset, seconds: float | None = None) -> dict[str, Any]:
    """Statistics of a sampled dataset (and throughput when the sampling time is given).

    ``positive_rate``: mean reward; ``prompts_with_positive``: share of prompts with at least one
    reward-1 sample (pass@num_samples); ``mean_response_tokens`` (EOS included);
    ``length_cut_share``: share of responses that hit the token budget (not terminal);
    ``samples_per_s`` / ``tokens_per_s``: responses and response tokens per second of sampling.
    """
    rewards = dataset["reward"]
    lengths = dataset["response_length"]
    n = len(rewards)
    best: dict[int, float] = {}
    for p, r in zip(dataset["prompt_index"], rewards):
        best[p] = max(best.get(p, 0.0), r)
    stats: dict[str, Any] = {
        "num_prompts": len(best),
        "num_samples": n,
        "positive_rate": sum(rewards) / max(n, 1),
        "prompts_with_positive": sum(v > 0 for v in best.values()) / max(len(best), 1),
        "mean_response_tokens": sum(lengths) / max(n, 1),
        "length_cut_share": sum(not t for t in dataset["terminal"]) / max(n, 1),
    }
    if seconds:
        stats |= {"samples_per_s": n / seconds, "tokens_per_s": sum(lengths) / seconds}
    return stats


def build_dataset(
    cfg: SamplingConfig,
    out_dir: str | os.PathLike[str],
    *,
    model: PreTrainedModel | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    progress: bool = True,
    sampler: Sampler | None = None,
) -> Dataset:
    """Sample, label and store the offline DQO dataset; resumable.

    Layout of ``out_dir``: ``sampling_config.json`` (the config, the problems' ``dataset_hash`` and
    the prompt template version, written on the first run), ``shards/shard-NNNNN`` (``shard_size``
    prompts each, ``Dataset.save_to_disk`` into a temporary directory renamed when complete, with
    its ``timing.json``), then ``dataset`` (all shards concatenated) and ``manifest.json``.

    Resume: rerunning with the same configuration skips finished shards. Shard s is sampled with
    the seed derived from ``(cfg.seed, s)`` (and each batch from that), so the final dataset is
    identical to an uninterrupted run's. A different configuration raises ValueError naming the
    differing fields.

    Rows (one per response): ``prompt_index`` (position in the loaded problems),
    ``problem_index`` (position in the GSM8K split), ``sample_index``, ``prompt``, ``response``,
    ``gold``, ``input_ids`` (prompt + response ids as sampled), ``action_mask``,
    ``behavior_logps`` (log μ) and ``ref_logps`` (log π_ref) — both action-aligned, 0 off the
    action mask —, ``reward`` (1.0 correct / 0.0), ``terminal`` (ended with EOS),
    ``response_length``; with process rewards also ``step_boundaries`` / ``step_phi`` (the
    ``(h, Φ)`` pairs of :func:`monte_carlo_potentials`) and ``phi_start`` (Φ(s_1), the mean reward
    of the prompt's samples); turn them into rewards with :func:`process_rewards`.

    ``model`` / ``tokenizer``: an already loaded pair (``cfg.model`` then only labels it); by
    default ``cfg.model`` is loaded, and only if some shard is still missing. ``sampler``: the
    :class:`Sampler` that draws the responses (default: the one ``cfg.engine`` names); the
    model still scores log π_ref, teacher-forced.
    """
    start = time.perf_counter()
    out = Path(out_dir)
    task = get_task(cfg.task)
    problems = task.load(cfg.split, cfg.data_source, cfg.limit)
    if not problems:
        raise DataError(
            f"SamplingConfig: the {cfg.task} {cfg.split} split (data_source "
            f"{cfg.data_source!r}) holds no problems: nothing to sample"
        )
    if model is None:
        check_reads_task(cfg.model, cfg.task)
    procs = Processes.current()
    with run_lock(out) if procs.main else contextlib.nullcontext():
        return _build_dataset(cfg, out, problems, model, tokenizer, progress, start, sampler)


def _tokenizer_record(out: Path, cfg: SamplingConfig, tokenizer: Any) -> dict[str, Any]:
    """What the dataset's token ids must be read with (training compares it with its own)."""
    if tokenizer is None:  # every shard was done by an earlier run
        old = out / "manifest.json"
        if old.is_file() and "tokenizer" in (stored := json.loads(old.read_text())):
            return stored["tokenizer"]
        tokenizer = load_tokenizer(cfg.model)
    return {
        "fingerprint": tokenizer_fingerprint(tokenizer),
        "vocab_size": len(tokenizer),
        "name_or_path": str(getattr(tokenizer, "name_or_path", "")),
    }


def _build_dataset(
    cfg: SamplingConfig,
    out: Path,
    problems: list[Any],
    model: Any,
    tokenizer: Any,
    progress: bool,
    start: float,
    sampler: Sampler | None = None,
) -> Any:
    """:func:`build_dataset` once the problems have loaded, inside the folder's lock."""
    task = get_task(cfg.task)
    shard_dir = out / "shards"
    data_hash = dataset_hash(problems)
    identity = {
        "config": asdict(cfg),
        "dataset_hash": data_hash,
        "prompt_template_version": task.prompt_template_version,
    }
    n_shards = math.ceil(len(problems) / cfg.shard_size)
    paths = [shard_dir / f"shard-{s:05d}" for s in range(n_shards)]
    missing = [s for s in range(n_shards) if not paths[s].is_dir()]
    procs = Processes.current()
    procs.barrier()  # every process has seen what is missing before any shard is written
    mine = missing[procs.rank :: procs.world]
    if mine and model is None:
        device = cfg.device if procs.world == 1 else procs.device
        model, tokenizer = load_model_and_tokenizer(cfg.model, device=device, dtype=cfg.dtype)
    if mine and tokenizer is None:
        raise ValueError("pass the tokenizer together with the model")
    # the inputs have loaded: store or check the identity (once, on the main process)
    procs.main_first(lambda: check_run_identity(out / "sampling_config.json", identity))

    def chunk(s: int) -> list[Any]:
        return problems[s * cfg.shard_size : (s + 1) * cfg.shard_size]

    done = len(problems) - sum(len(chunk(s)) for s in missing)
    new_samples, new_sampling_s = 0, 0.0
    bar = tqdm(
        total=len(problems),
        initial=done,
        unit="prompt",
        desc="sample",
        disable=not (progress and procs.main),
    )
    with bar:
        for s in mine:
            rows, timing = _build_shard(
                cfg, s, model, tokenizer, chunk(s), s * cfg.shard_size, sampler=sampler
            )
            shard = Dataset.from_list(rows, features=_features(cfg.process_rewards))
            shard_dir.mkdir(parents=True, exist_ok=True)
            save_dataset_atomically(shard, paths[s], extra=timing)
            new_samples += len(rows)
            new_sampling_s += timing["sampling_s"]
            # the other processes advance alike: count their shards too, within the total
            bar.update(min(len(chunk(s)) * procs.world, bar.total - bar.n))
            bar.set_postfix(samples_per_s=f"{new_samples / new_sampling_s:.2f}")
    procs.barrier()  # every shard is on disk
    procs.main_first(lambda: _write_dataset(cfg, out, paths, data_hash, problems, tokenizer, start))
    return load_from_disk(str(out / "dataset"))


def _write_dataset(cfg, out, paths, data_hash, problems, tokenizer, start) -> None:
    """The shards concatenated into ``dataset``, and ``manifest.json``."""
    n_shards = len(paths)
    dataset = concatenate_datasets([load_from_disk(str(p)) for p in paths])
    save_dataset_atomically(dataset, out / "dataset")
    dataset = load_from_disk(str(out / "dataset"))

    timings = [json.loads((p / "timing.json").read_text()) for p in paths]
    totals = {
        k: sum(t.get(k, 0.0) for t in timings) for k in ("sampling_s", "reference_s", "process_s")
    }
    atomic_write_json(
        out / "manifest.json",
        {
            **run_manifest(cfg, data_hash, len(problems)),
            "tokenizer": _tokenizer_record(out, cfg, tokenizer),
            "seed": cfg.seed,
            "counts": {"prompts": len(problems), "samples": len(dataset), "shards": n_shards},
            "timing": {**totals, "wall_time_s_this_run": time.perf_counter() - start},
            "summary": summarize(dataset, totals["sampling_s"]),
        },
    )
