r"""Monte-Carlo values of many states, with rollouts pooled along their prefix tree.

The oracle critic and the Monte-Carlo potentials estimate, for a set of states s (a prompt and a
response prefix), the success probability of the rollout process μ from s,

.. math::  V(s) = P_\mu(\text{correct} \mid s) \approx \hat V(s) = \frac{1}{n_s} \sum_{i=1}^{n_s}
           \mathbb 1[\text{correct}(c_i)], \qquad c_i \sim \mu(\cdot \mid s).

**Pooling.** The states of one prompt form a tree under "is a prefix of". A rollout drawn from s
that happens to write the tokens leading to a descendant s' (a longer state of the set) *is* a
rollout from s': sampling is autoregressive, so its continuation after s' is distributed as
μ(· | s') whatever came before, and it runs under the same total token budget. So each rollout
counts for its start state and for every state of the set it passes through, and a state is
topped up with rollouts of its own to ``k`` in all. States are rolled out in waves of tree depth
(parents first), so every state knows how many samples its ancestors left it. A rollout that
reaches s' passed through s''s parent, so s' inherits at most the parent's k: every state ends
with exactly k, as unpooled, for fewer drawn rollouts.

**Unbiased.** Whether a rollout passes through s' depends only on the tokens before s'; its
continuation after s' is a fresh draw from μ(· | s'). Given the number m ≤ k of rollouts that
reached s' from above, those m and the k − m of its own are i.i.d. Bernoulli(V(s')), so
V̂(s') = hits/k is unbiased (tests/test_rollouts.py checks it against an exact tabular V). A
state's estimate and its descendants' share rollouts, so their errors are correlated, which the
unpooled estimator's are not.

**What it saves.** Where the tokens between two states of a response are likely under μ (the
chained, near-certain tokens between the oracle's anchors), most of a parent's rollouts reach the
child: on the fork chains a state before a free choice of probability ½ passes, in expectation,
half of its rollouts to the next state (measured: 0.39× the rollouts of the unpooled oracle at
6 operations, 0.36× at 12; benchmarks/oracle_pooling.py, docs/measurements.md).

========  ========================  ====================================================
name      shape                     meaning
========  ========================  ====================================================
states    S × (prompt, prefix, g)   distinct states: prompt ids, response prefix ids, gold
budgets   (S,)                      tokens left after each state's prefix
returns   (S,) × (hits, n)          successes and rollouts counted for each state
========  ========================  ====================================================
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .decoding import Sampler

__all__ = ["prefix_parents", "pooled_rollout_counts"]

State = tuple[tuple[int, ...], tuple[int, ...], Any]
"""(prompt ids, response prefix ids, gold)."""


def prefix_parents(states: Sequence[State]) -> list[int]:
    """parent[u]: the longest state of the same prompt and gold whose prefix is a proper prefix
    of u's, or −1. Two children of one parent are never prefixes of each other (the shorter would
    be the longer's parent), so a rollout passes through at most one child of each state."""
    groups: dict[tuple[Any, Any], list[int]] = {}
    for u, (prompt, _, gold) in enumerate(states):
        groups.setdefault((prompt, gold), []).append(u)
    parent = [-1] * len(states)
    for members in groups.values():
        by_prefix = {states[u][1]: u for u in members}
        lengths = sorted({len(states[u][1]) for u in members})
        for u in members:
            prefix = states[u][1]
            for h in reversed([n for n in lengths if n < len(prefix)]):
                if (p := by_prefix.get(prefix[:h])) is not None:
                    parent[u] = p
                    break
    return parent


def _waves(states: Sequence[State], parent: Sequence[int]) -> list[list[int]]:
    """The states by tree depth (a parent's prefix is shorter, so shortest first is an order in
    which every parent comes before its children)."""
    depth = [0] * len(states)
    waves: list[list[int]] = []
    for u in sorted(range(len(states)), key=lambda u: len(states[u][1])):
        depth[u] = 0 if parent[u] < 0 else depth[parent[u]] + 1
        waves += [[] for _ in range(depth[u] + 1 - len(waves))]
        waves[depth[u]].append(u)
    return [sorted(w) for w in waves]


def _passes(u: int, tokens: Sequence[int], states: Sequence[State], children) -> list[int]:
    """The states below u that a rollout from u writing ``tokens`` (its whole response: u's
    prefix, then the completion) passes through, top down."""
    reached, cur = [], u
    while True:
        start = len(states[cur][1])
        nxt = next(
            (
                c
                for c in children[cur]
                if tuple(tokens[start : len(states[c][1])]) == states[c][1][start:]
            ),
            None,
        )
        if nxt is None:
            return reached
        reached.append(nxt)
        cur = nxt


def _draw(sampler: Sampler, prompts: list[list[int]], counts: list[int], **kw: Any) -> list:
    """``counts[i]`` samples of prompt i, prompt-major: one call of the engine's
    ``sample_counts`` where it has one, else one ``sample`` per distinct count."""
    if hasattr(sampler, "sample_counts"):
        return sampler.sample_counts(prompts, counts, **kw)
    streams, by_row = kw.pop("stream_ids"), {}
    for c in sorted(set(counts) - {0}):
        group = [i for i, ci in enumerate(counts) if ci == c]
        got = sampler.sample(
            [prompts[i] for i in group], num_samples=c, stream_ids=[streams[i] for i in group], **kw
        )
        by_row.update({(i, j): got[g * c + j] for g, i in enumerate(group) for j in range(c)})
    return [by_row[i, j] for i, c in enumerate(counts) for j in range(c)]


def pooled_rollout_counts(
    sampler: Sampler,
    states: Sequence[State],
    budgets: Sequence[int],
    grade: Callable[[State, Sequence[int]], bool],
    *,
    k: int,
    seed: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
) -> list[tuple[int, int]]:
    """(hits, n) of every state (module docstring; n = ``k``): rollouts of μ (``sampler`` at
    ``temperature``, ``top_p``) scored by ``grade(state, completion ids)``.
    State u's j-th own rollout is drawn from stream (``seed``, u, j): the same at any batching."""
    parent = prefix_parents(states)
    children: list[list[int]] = [[] for _ in states]
    for u, p in enumerate(parent):
        if p >= 0:
            children[p].append(u)
    hits, n = [0] * len(states), [0] * len(states)
    for wave in _waves(states, parent):
        wave = [u for u in wave if n[u] < k]
        need = [k - n[u] for u in wave]
        drawn = _draw(
            sampler,
            [list(states[u][0]) + list(states[u][1]) for u in wave],
            need,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            record_logps=False,
            max_new_tokens=[budgets[u] for u in wave],
            stream_ids=wave,
        )
        for u, gen in zip((u for u, c in zip(wave, need) for _ in range(c)), drawn, strict=True):
            won = int(bool(grade(states[u], gen.response_ids)))
            tokens = list(states[u][1]) + list(gen.response_ids)
            for v in (u, *_passes(u, tokens, states, children)):
                hits[v], n[v] = hits[v] + won, n[v] + 1
    return list(zip(hits, n))
