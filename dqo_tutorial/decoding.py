r"""The package's own decode loop (:class:`DecodeSampler`): a :class:`Sampler` in which every row
draws from its own random stream.

**The law.** At each step the next token of a row is drawn from

.. math::  \mu(a|s) = \frac{\exp(z_a/\tau)\,[a \in P_p(s)]}{\sum_{b \in P_p(s)} \exp(z_b/\tau)}

(z: the model's logits, P_p: the top-p nucleus of softmax(z/τ), the same keep-rule as the
``generate`` path, transformers' ``TopPLogitsWarper``) by **inverse transform sampling**: with
u ~ U[0, 1) the row's next uniform, the token is the first a whose cumulative probability
F(a) = Σ_{b ≤ a} μ(b|s) exceeds u (:func:`draw`, in float64). log μ(a|s) of the drawn token is
gathered from the same float32 log-softmax (:func:`sampling_law`), so what is recorded is the
law that was sampled. τ = 0 is greedy (argmax, nothing recorded).

**Per-row random streams.** Row (prompt i, sample j) reads its uniforms from a counter-based
generator keyed by a 63-bit key derived from ``(seed, i, j)`` (:func:`row_uniforms`), one
uniform per step; ``stream_ids`` names the prompts instead of their positions. Which
batch a row lands in, and how large batches are, therefore change nothing it draws: the same
seed gives the same responses at any batch size (tested; up to float rounding in the logits,
which moves a token only if u falls within ~1e-7 of a boundary of F).

**The loop** (:func:`_decode_batch`): prompts are ordered by length and grouped so that a batch
holds about ``batch_size`` rows; each distinct prompt is **prefilled once** and its KV cache
repeated for its ``num_samples`` rows (Monte-Carlo potentials send each distinct state once,
with k samples); then one token per step for every live row. A row ends at its first EOS or at
its own budget. Rows that have ended are **dropped from the batch** (the cache, mask and
positions are compacted) once they are at least half of it, so the step works on live rows
only; the host checks for ended rows every few steps, not at every token. The KV cache of a
full-attention model is a preallocated buffer per layer (no concatenation per step); models
with sliding-window layers use transformers' ``DynamicCache``.

Shapes: B rows in a batch, V vocabulary, T = the batch's largest budget.

============================  ==============  ===========================================
tensor                        shape           meaning
============================  ==============  ===========================================
``logits``                    (B, V)          z at the last position of each row
``log_mu``                    (B, V) float32  log μ(·|s) after τ and top-p
``u``                         (B,) float64    each row's uniform of this step
``tokens``, ``log_mu_taken``  (B, T)          drawn tokens and their log μ
============================  ==============  ===========================================
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor
from transformers import DynamicCache, TopPLogitsWarper

from .errors import ConfigError

try:  # per-layer caches (transformers >= 4.56); older versions decode with a DynamicCache
    from transformers.cache_utils import Cache, DynamicLayer
except ImportError:  # pragma: no cover
    Cache = DynamicLayer = None

__all__ = [
    "Generation",
    "Sampler",
    "DecodeSampler",
    "derive_seed",
    "row_uniforms",
    "sampling_law",
    "draw",
    "check_sampling_law",
]


def derive_seed(*parts: int | str) -> int:
    """An independent 63-bit seed for a named sub-stream (e.g. ``(seed, shard, batch)``).

    Seeding every stream from its own coordinates, not from one running RNG, makes what it
    draws independent of what ran before it: a resumed run redraws exactly the same.
    """
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass
class Generation:
    """One sampled response.

    ``response_ids`` stops right after the first EOS (then ``finished`` is True and EOS is the last
    action) or at the token budget (``finished`` False: not a terminal state); it never holds pads.
    ``text`` is the decoded response without EOS or other special tokens. ``behavior_logps`` holds
    log μ(a_h|s_h), one per response token, or None for greedy decoding.
    """

    prompt_index: int
    sample_index: int
    prompt_ids: list[int]
    response_ids: list[int]
    finished: bool
    text: str
    behavior_logps: list[float] | None


class Sampler(Protocol):
    """The generation seam: token-id prompts and a decoding law in, responses with log μ out.

    ``sample(prompt_ids, num_samples=, temperature=, top_p=, max_new_tokens=, seed=, record_logps=,
    stream_ids=)`` returns ``len(prompt_ids) * num_samples`` :class:`Generation` records,
    prompt-major, each response cut after its first EOS or at its budget (``max_new_tokens``: one
    int, or one per prompt), with log μ of every sampled token under the law actually sampled (τ,
    top-p) when ``record_logps`` and ``temperature > 0``. ``stream_ids`` (one int per prompt,
    default its position) names each prompt's random streams: evaluation passes the problem index,
    so a problem draws the same responses in any chunk. Sampling, evaluation and Monte-Carlo
    potentials go through it; :class:`DecodeSampler` (default) and
    :class:`~dqo_tutorial.sampling.HFSampler` implement it.
    The teacher-forced scorer (log π_ref, :func:`~dqo_tutorial.sampling.reference_logprobs`)
    is apart from it: a faster engine replaces the sampler and keeps the one log-prob path for
    π_ref.
    """

    def sample(
        self,
        prompt_ids: Sequence[Sequence[int]],
        *,
        num_samples: int,
        temperature: float,
        top_p: float,
        max_new_tokens: int | Sequence[int],
        seed: int,
        record_logps: bool = True,
        stream_ids: Sequence[int] | None = None,
    ) -> list[Generation]: ...


# --------------------------------------------------------------------------------------------
# the law and the draw: pure functions
# --------------------------------------------------------------------------------------------


def row_uniforms(keys: Sequence[int], steps: int, device: Any = "cpu") -> Tensor:
    """(B, steps) float64 uniforms in [0, 1): row r is the counter-based Philox4x64 stream keyed
    by all 64 bits of ``keys[r]`` (NumPy's ``Philox``; torch's CPU generator keeps only the low
    32 bits of a seed, so 63-bit keys that differ above bit 32 would collide).

    Row r's numbers depend on its key alone — not on the other rows, nor on the batch size."""
    out = np.empty((len(keys), steps), dtype=np.float64)
    for r, key in enumerate(keys):
        out[r] = np.random.Generator(np.random.Philox(key=int(key))).random(steps)
    return torch.from_numpy(out).to(device)


def sampling_law(logits: Tensor, temperature: float, top_p: float) -> Tensor:
    """log μ(·|s) = log-softmax of z/τ restricted to the top-p nucleus, (B, V) float32.

    Tokens outside the nucleus get −inf. The keep-rule is transformers' ``TopPLogitsWarper``
    (the one :class:`~dqo_tutorial.sampling.HFSampler` samples with)."""
    z = logits.float()
    if temperature != 1.0:
        z = z / temperature
    if top_p < 1.0:
        z = TopPLogitsWarper(top_p)(None, z)
    return torch.log_softmax(z, dim=-1)


def draw(log_mu: Tensor, u: Tensor) -> Tensor:
    """Inverse transform sampling: the first token a with F(a) > u·F(V), (B,) long.

    F is the cumulative sum of exp(log μ) in float64 (scaled by its total, so rounding in
    log μ's normalisation does not bias the draw); a token of probability 0 has an empty
    interval of F and is never drawn. A target at or past F(V) (u = 1, or u·F(V) rounded up)
    takes the last token of positive probability, the first a with F(a) = F(V)."""
    cdf = log_mu.double().exp().cumsum(dim=-1)
    total = cdf[:, -1:]
    taken = torch.searchsorted(cdf, u.double()[:, None] * total, right=True).squeeze(1)
    return torch.minimum(taken, (cdf < total).sum(dim=-1))


def check_sampling_law(temperature: float, top_p: float) -> None:
    """τ ≥ 0 (0: greedy; τ < 0 would favour the least likely tokens) and top-p in (0, 1]."""
    if not (temperature >= 0 and 0 < top_p <= 1):  # `not >=`: NaN is refused too
        raise ConfigError(
            f"sampling needs temperature >= 0 (0 = greedy) and 0 < top_p <= 1, got "
            f"temperature={temperature}, top_p={top_p}: set them in the sampling/eval config"
        )


def _next_tokens(
    logits: Tensor, u: Tensor, temperature: float, top_p: float
) -> tuple[Tensor, Tensor | None]:
    """The drawn tokens (B,) and their log μ (B,) — or the argmax and None at τ = 0."""
    if temperature == 0:
        return logits.argmax(dim=-1), None
    log_mu = sampling_law(logits, temperature, top_p)
    taken = draw(log_mu, u)
    return taken, log_mu.gather(1, taken[:, None]).squeeze(1)


# --------------------------------------------------------------------------------------------
# the KV cache: one preallocated buffer per layer
# --------------------------------------------------------------------------------------------


class _BufferLayer(DynamicLayer or object):  # type: ignore[misc]
    """A full-attention cache layer written in place into a (B, H, capacity, D) buffer.

    ``update`` copies the new keys/values into the next free slots and returns views of the
    filled part, so a decode step copies one token per row instead of the whole cache (the
    ``torch.cat`` of ``DynamicLayer``). Batch compaction and repetition act on the buffers."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity, self.length = capacity, 0

    def lazy_initialization(self, key_states: Tensor, value_states: Tensor, *_: Any) -> None:
        b, h, _, d = key_states.shape
        self.device = key_states.device
        self.key_buffer = key_states.new_empty(b, h, self.capacity, d)
        self.value_buffer = value_states.new_empty(b, h, self.capacity, value_states.shape[-1])
        self.is_initialized = True

    def update(self, key_states: Tensor, value_states: Tensor, *_: Any, **__: Any):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            raise RuntimeError(f"KV buffer of {self.capacity} positions is full")
        self.key_buffer[:, :, self.length : end] = key_states
        self.value_buffer[:, :, self.length : end] = value_states
        self.length = end
        self.keys = self.key_buffer[:, :, :end]
        self.values = self.value_buffer[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def batch_repeat_interleave(self, repeats: int) -> None:
        self.key_buffer = self.key_buffer.repeat_interleave(repeats, dim=0)
        self.value_buffer = self.value_buffer.repeat_interleave(repeats, dim=0)

    def batch_select_indices(self, indices: Tensor) -> None:
        self.key_buffer = self.key_buffer[indices]
        self.value_buffer = self.value_buffer[indices]


def _new_cache(model: Any, capacity: int) -> Cache:
    """Buffer layers for a model whose layers all attend to every position, else a
    ``DynamicCache`` (sliding-window or other layer kinds keep transformers' own logic)."""
    config = model.config.get_text_config(decoder=True)
    kinds = set(getattr(config, "layer_types", None) or ["full_attention"])
    if (
        DynamicLayer is None
        or kinds != {"full_attention"}
        or getattr(config, "sliding_window", None)
    ):
        return DynamicCache(config=model.config)
    return Cache(layers=[_BufferLayer(capacity) for _ in range(config.num_hidden_layers)])


# --------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------

_CHECK_EVERY = 4
"""Steps between the host's looks at which rows have ended (each look is a device sync)."""
_COMPACT_BELOW = 0.5
"""Rows are dropped from the batch once the live ones are at most this share of it."""


def _cache_argument(model: Any) -> str:
    """The forward's name for the KV cache: ``cache`` where it has one (recent transformers
    deprecate ``past_key_values``), else ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _prefill(model: Any, prompts: Sequence[Sequence[int]], pad: int, capacity: int):
    """One forward over the left-padded distinct prompts: (cache, last logits (P, V), mask
    (P, L), position of each prompt's last token (P,))."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, p in enumerate(prompts):
        if p:
            ids[r, width - len(p) :] = torch.as_tensor(p)
            mask[r, width - len(p) :] = 1
    ids, mask = ids.to(model.device), mask.to(model.device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = _new_cache(model, capacity)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                logits_to_keep=1, **{_cache_argument(model): cache})  # fmt: skip
    return cache, out.logits[:, -1], mask, positions[:, -1]


@dataclass
class _Drawn:
    """One batch's rows after decoding (on the CPU): tokens and log μ (B, T), lengths and
    whether each row ended with EOS (B,)."""

    tokens: Tensor
    log_mu: Tensor | None
    lengths: Tensor
    finished: Tensor


@torch.inference_mode()
def _decode_batch(model, prompts, budgets, keys, counts, temperature, top_p, eos, pad) -> _Drawn:
    """Decode ``counts[i]`` rows of prompt i (prompt-major) until every row has ended."""
    steps, device = max(budgets), model.device
    cache, logits, mask, position = _prefill(model, prompts, pad, _mask_width(prompts) + steps)
    rep = torch.repeat_interleave(torch.arange(len(prompts)), torch.as_tensor(counts)).to(device)
    cache.batch_select_indices(rep)  # one prefill per prompt, counts[i] rows each
    grow = torch.ones(len(prompts), steps, dtype=mask.dtype, device=device)
    mask = torch.cat([mask, grow], dim=1)[rep]
    logits, position = logits[rep], position[rep]
    budget = torch.as_tensor(budgets, device=device)[rep]
    u = row_uniforms(keys, steps, device)
    rows = len(keys)
    tokens = torch.full((rows, steps), pad, dtype=torch.long, device=device)
    taken_log_mu = torch.zeros(rows, steps, device=device)
    lengths, ended = budget.clone(), budget == 0
    finished = torch.zeros_like(ended)
    live = torch.arange(rows, device=device)  # the global row of each batch row
    width, name = mask.shape[1] - steps, _cache_argument(model)
    for t in range(steps):
        taken, log_mu = _next_tokens(logits, u[live, t], temperature, top_p)
        tokens[live, t] = taken
        if log_mu is not None:
            taken_log_mu[live, t] = log_mu
        was_ended = ended[live]
        stop = ((taken == eos) | (budget[live] <= t + 1)) & ~was_ended
        lengths[live] = torch.where(stop, t + 1, lengths[live])
        finished[live] = finished[live] | (stop & (taken == eos))
        ended[live] = was_ended | stop
        if t + 1 == steps:
            break
        if t % _CHECK_EVERY == _CHECK_EVERY - 1:
            alive = ~ended[live]
            n_alive = int(alive.sum())
            if n_alive == 0:
                break
            if n_alive <= _COMPACT_BELOW * len(live):  # drop the ended rows
                keep = alive.nonzero().squeeze(1)
                cache.batch_select_indices(keep)
                live, mask, position, taken = live[keep], mask[keep], position[keep], taken[keep]
        position = position + 1
        out = model(input_ids=taken[:, None], attention_mask=mask[:, : width + t + 1],
                    position_ids=position[:, None], use_cache=True, **{name: cache})  # fmt: skip
        logits = out.logits[:, -1]
    log_mu_cpu = None if temperature == 0 else taken_log_mu.cpu()
    return _Drawn(tokens.cpu(), log_mu_cpu, lengths.cpu(), finished.cpu())


def _mask_width(prompts: Sequence[Sequence[int]]) -> int:
    """The left-padded width of a batch of prompts (its longest prompt)."""
    return max(len(p) for p in prompts)


def _batches(
    prompt_ids: Sequence[Sequence[int]],
    budgets: Sequence[int],
    counts: Sequence[int],
    batch_size: int,
) -> list[list[int]]:
    """Prompt indices, longest prompt first, in groups of at most ``batch_size`` rows (a prompt
    of more rows alone): rows of similar length share a batch, so little of a step is spent on
    padding. With k rows per prompt, groups of ⌊batch_size / k⌋ prompts."""
    order = sorted(range(len(prompt_ids)), key=lambda i: (-len(prompt_ids[i]), -budgets[i], i))
    groups: list[list[int]] = []
    rows = 0
    for i in order:
        if not groups or rows + counts[i] > batch_size:
            groups.append([])
            rows = 0
        groups[-1].append(i)
        rows += counts[i]
    return groups


@dataclass
class DecodeSampler:
    """:class:`Sampler` by the package's decode loop (module docstring): batches of about
    ``batch_size`` rows (prompts × samples), ordered by prompt length, one prefill per prompt,
    ended rows dropped, each row drawn from its own stream (same seed → same responses at any
    ``batch_size``)."""

    model: Any
    tokenizer: Any
    batch_size: int = 256

    def sample(
        self,
        prompt_ids: Sequence[Sequence[int]],
        *,
        num_samples: int,
        temperature: float,
        top_p: float,
        max_new_tokens: int | Sequence[int],
        seed: int,
        record_logps: bool = True,
        stream_ids: Sequence[int] | None = None,
    ) -> list[Generation]:
        return self.sample_counts(
            prompt_ids, [num_samples] * len(prompt_ids), temperature=temperature, top_p=top_p,
            max_new_tokens=max_new_tokens, seed=seed, record_logps=record_logps,
            stream_ids=stream_ids,
        )  # fmt: skip

    def sample_counts(
        self,
        prompt_ids: Sequence[Sequence[int]],
        counts: Sequence[int],
        *,
        temperature: float,
        top_p: float,
        max_new_tokens: int | Sequence[int],
        seed: int,
        record_logps: bool = True,
        stream_ids: Sequence[int] | None = None,
    ) -> list[Generation]:
        """:meth:`sample` with ``counts[i]`` samples of prompt i (prompt-major; sample j of
        prompt i reads stream (``seed``, i or ``stream_ids[i]``, j), as in :meth:`sample`)."""
        check_sampling_law(temperature, top_p)
        n = len(prompt_ids)
        names = list(range(n)) if stream_ids is None else list(stream_ids)
        budgets = [max_new_tokens] * n if isinstance(max_new_tokens, int) else list(max_new_tokens)
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        start = np.concatenate([[0], np.cumsum(counts)]).astype(int).tolist()
        out: list[Generation | None] = [None] * start[-1]
        for group in _batches(prompt_ids, budgets, counts, self.batch_size):
            rows = [(i, j) for i in group for j in range(counts[i])]
            if not rows:
                continue
            keys = [derive_seed(seed, "row", names[i], j) for i, j in rows]
            drawn = _decode_batch(
                self.model, [prompt_ids[i] for i in group], [budgets[i] for i in group], keys,
                [counts[i] for i in group], temperature, top_p, eos, eos if pad is None else pad,
            )  # fmt: skip
            for r, (i, j) in enumerate(rows):
                out[start[i] + j] = self._generation(prompt_ids[i], i, j, drawn, r, record_logps)
        return out  # type: ignore[return-value]

    def _generation(self, prompt, i, j, drawn: _Drawn, r: int, record: bool) -> Generation:
        n = int(drawn.lengths[r])
        ids = drawn.tokens[r, :n].tolist()
        log_mu = drawn.log_mu[r, :n].tolist() if record and drawn.log_mu is not None else None
        return Generation(
            prompt_index=i,
            sample_index=j,
            prompt_ids=[int(t) for t in prompt],
            response_ids=ids,
            finished=bool(drawn.finished[r]),
            text=self.tokenizer.decode(ids, skip_special_tokens=True),
            behavior_logps=log_mu,
        )
