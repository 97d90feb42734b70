r"""The oracle critic: π_ref's success probability of every state, for the critic ablation.

DQO's policy gradient is a residual δ_h = V(s_h) + βρ_h − r_h − T_{h+1}: V(s_h) is a
state-dependent baseline, and *that* is how DQO assigns credit inside a response (with a flat V
its gradient is DRO's). To bound what a perfect critic buys we need the true value of each state
under the law that wrote the data (μ = π_ref at τ = 1; with π_θ ≈ π_ref the λ = 1 target is the
outcome),

.. math::  V^*(s_h) = P_{\pi_{\rm ref}}(\text{the response ends correct} \mid s_h).

**Why not the gold path.** On the toy, "the response has left the gold text" looks like V* = 0,
but the shipped π_ref drops carries *and* borrows, and the two slips cancel (``14+16=20``,
``20-16=14``): 6 of 99 correct samples of 20 train prompts left the gold text (measured
2026-12-07). Exact enumeration of π_ref's tree costs ~10⁴ forward passes for a 4-operation prompt
and still leaves 14 % of its mass unexplored at a 10⁻⁴ cut-off. So the oracle is Monte-Carlo, made
cheap by the structure of the data:

1. **Anchors.** At every state whose taken token is uncertain, 1 − π_ref(a_h|s_h) ≥ δ, and at the
   prompt state s_1, V̂(s_h) is the mean outcome of ``k`` rollouts of π_ref from s_h
   (:func:`~dqo_tutorial.sampling.monte_carlo_potentials` at those positions; standard error
   ≤ 1/(2√k)).
2. **Chaining.** Every other state copies the value after its action,
   V̂(s_h) = r_h + V̂(s_{h+1}) (r_h = R after the last action of a finished response). Since
   V(s_h) = Σ_a π(a|s_h)(r_h(a) + V(s_h a)) with outcomes in [0, 1], the copy errs by at most
   1 − π_ref(a_h|s_h) < δ per copied step; :func:`chained_values` returns the summed bound to the
   next anchor, and docs/credit-assignment.md reports it.

The *flat* critic is the oracle read at the prompt, V̂(s_1) at every state: the best a
prompt-level critic (DRO's V(x)) can do. *oracle − flat* is what token-level credit can buy.

Columns added to a sampled dataset by :func:`with_oracle_values` (read by
``TrainConfig(critic="oracle" | "flat")``):

====================  ======  ==========================================================
column                per     meaning
====================  ======  ==========================================================
``oracle_values``     token   V̂(s_h) at the column of action a_h (0 on the prompt)
``oracle_bootstrap``  row     V̂(s_{H+1}) after the last action: 0 for a finished response
``oracle_bound``      row     the largest chaining bound of the row's states
====================  ======  ==========================================================
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .decoding import Generation
from .sampling import monte_carlo_potentials

__all__ = ["ORACLE_DELTA", "anchor_positions", "chained_values", "oracle_values",
           "with_oracle_values"]  # fmt: skip

ORACLE_DELTA = 0.02
"""δ: a taken token with 1 − π_ref(a_h|s_h) ≥ δ gets Monte-Carlo rollouts; the others are chained
(each copy errs by < δ)."""


def anchor_positions(ref_logps: Sequence[float], terminal: bool, delta: float) -> list[int]:
    """The response positions h (0 = the state before the first action) that get rollouts:
    h = 0, every h whose taken token has 1 − π_ref(a_h|s_h) ≥ ``delta``, and h = H (the state
    after the last action) for a cut response, whose bootstrap needs it. ``ref_logps``: the
    response's log π_ref(a_h|s_h), (H,)."""
    h_len = len(ref_logps)
    uncertain = [h for h, lp in enumerate(ref_logps) if 1 - math.exp(lp) >= delta]
    return sorted({0, *uncertain} | (set() if terminal else {h_len}))


def chained_values(
    anchors: Mapping[int, float], ref_logps: Sequence[float], outcome: float, terminal: bool
) -> tuple[list[float], float, list[float]]:
    r"""V̂(s_h) for h < H from the anchors (module docstring, step 2), backwards:

    .. math::  \hat V(s_h) = \begin{cases} \text{anchors}[h] & h \in \text{anchors} \\
               r_h + \hat V(s_{h+1}) & \text{otherwise} \end{cases},\qquad
               r_{H-1} + \hat V(s_H) = R \text{ (finished) or anchors}[H] \text{ (cut)}

    ============  ======  ==============================================================
    argument      shape   meaning
    ============  ======  ==============================================================
    anchors       –       {h: V̂(s_h)} from rollouts (a cut response needs h = H)
    ref_logps     (H,)    log π_ref(a_h|s_h) of the taken tokens
    outcome       –       R of a finished response (ignored for a cut one)
    ============  ======  ==============================================================

    Returns ``(values (H,), bootstrap, bound (H,))``: bootstrap is V̂(s_{H+1}) (0 when
    ``terminal``), bound[h] = Σ (1 − π_ref(a_k|s_k)) over the copied steps from h to the next
    anchor (0 at an anchor), the largest error chaining can add."""
    h_len = len(ref_logps)
    after = float(outcome) if terminal else float(anchors[h_len])  # r_{H-1} + V̂(s_H)
    values, bound = [0.0] * h_len, [0.0] * h_len
    slack = 0.0
    for h in range(h_len - 1, -1, -1):
        if h in anchors:
            values[h], slack = float(anchors[h]), 0.0
        else:
            slack += 1 - math.exp(ref_logps[h])
            values[h] = after
        bound[h] = slack
        after = values[h]  # r_{h-1} = 0 before the last action (outcome rewards)
    bootstrap = 0.0 if terminal else float(anchors[h_len])
    return values, bootstrap, bound


def oracle_values(
    model: Any,
    tokenizer: Any,
    generations: Sequence[Generation],
    golds: Sequence[str],
    ref_logps: Sequence[Sequence[float]],
    outcomes: Sequence[float],
    *,
    grader: Callable[[str, str, str], bool],
    max_new_tokens: int,
    k: int = 16,
    delta: float = ORACLE_DELTA,
    seed: int = 0,
    batch_size: int = 256,
    pooled: bool = False,
) -> list[tuple[list[float], float, list[float]]]:
    """:func:`chained_values` of every generation: rollouts of π_ref (τ = 1) from its
    :func:`anchor_positions` (``ref_logps``: each response's log π_ref, (H,); ``outcomes``: its
    R), a state shared by several responses rolled out once; ``pooled``: rollouts pooled along
    the prefix tree (:mod:`dqo_tutorial.rollouts`)."""
    positions = [anchor_positions(lp, g.finished, delta) for g, lp in zip(generations, ref_logps)]
    anchors = monte_carlo_potentials(
        model, tokenizer, generations, golds, k=k, temperature=1.0, top_p=1.0,
        max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size, grader=grader,
        positions=positions, pooled=pooled,
    )  # fmt: skip
    return [
        chained_values(dict(a), lp, r, g.finished)
        for g, a, lp, r in zip(generations, anchors, ref_logps, outcomes)
    ]


def with_oracle_values(
    rows: Sequence[Mapping[str, Any]], model: Any, tokenizer: Any, *, task: Any, **kwargs: Any
) -> list[dict[str, Any]]:
    """A sampled dataset's ``rows`` (``build_dataset``'s columns; μ = π_ref, τ = 1) with the
    columns of the module table; ``task``: its :class:`~dqo_tutorial.tasks.Task` (grader and
    length limit); ``kwargs``: :func:`oracle_values`' ``k``, ``delta``, ``seed``,
    ``batch_size``."""
    gens, refs = [], []
    for r in rows:
        n = len(r["input_ids"]) - sum(r["action_mask"])
        gens.append(Generation(prompt_index=r["prompt_index"], sample_index=r["sample_index"],
                               prompt_ids=list(r["input_ids"][:n]),
                               response_ids=list(r["input_ids"][n:]), finished=r["terminal"],
                               text=r["response"], behavior_logps=None))  # fmt: skip
        refs.append(list(r["ref_logps"][n:]))
    found = oracle_values(model, tokenizer, gens, [r["gold"] for r in rows], refs,
                          [r["reward"] for r in rows], grader=task.is_correct,
                          max_new_tokens=task.max_new_tokens, **kwargs)  # fmt: skip
    out = []
    for r, g, (values, boot, bound) in zip(rows, gens, found):
        pad = [0.0] * len(g.prompt_ids)
        out.append({**r, "oracle_values": pad + values, "oracle_bootstrap": boot,
                    "oracle_bound": max(bound, default=0.0)})  # fmt: skip
    return out
