r"""Checkers of notebook 07: process rewards.

- ``check_shaped_rewards``: r'_h = r_h + α(Φ(s_{h+1}) − Φ(s_h)) of a batch, with left padding,
  empty rows and length-cut responses (no outcome, Φ held at the cut)
- ``check_mc_step_values``: the Monte-Carlo step value Φ̂(s) from k rollouts and its standard
  error, for a padded batch of boundary states
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .. import rewards
from ._core import N_INPUTS, Verdict, _garbage, _shape, check_function, edge_case_mask

__all__ = ["check_shaped_rewards", "check_mc_step_values"]


def _shaped_rewards_reference(
    phi: Tensor, outcome: Tensor, mask: Tensor, alpha: float, terminal: Tensor
) -> Tensor:
    """A naive loop: per row, the package's own one-response shaping
    (:func:`dqo_tutorial.rewards.process_rewards`, every action column a "boundary") with
    Φ_end = 0 for a terminal row, Φ_end = Φ(s_H) for a cut one, and the outcome on the last
    action of a terminal row only."""
    out = torch.zeros(mask.shape, dtype=torch.float64)
    for b in range(mask.shape[0]):
        cols = mask[b].nonzero().flatten().tolist()
        if not cols:
            continue
        p = [float(phi[b, c]) for c in cols]
        end = 0.0 if bool(terminal[b]) else p[-1]
        shaped = rewards.process_rewards(
            len(cols), list(enumerate(p[1:], start=1)), alpha, p[0], end
        )
        if bool(terminal[b]):
            shaped[-1] += float(outcome[b])
        out[b, cols] = torch.tensor(shaped, dtype=torch.float64)
    return out


def check_shaped_rewards(
    fn: Callable[..., Tensor], n: int = N_INPUTS, *, seed: int = 0, quiet: bool = False
) -> Verdict:
    """``fn(phi, outcome, mask, alpha, terminal) -> (B, T)``: r'_h = r_h + α(Φ(s_{h+1}) − Φ(s_h))
    on the action columns, with ``phi[b, j]`` = Φ of the state *before* the action in column j.
    After the last action: Φ(terminal) = 0 and the outcome ``outcome[b]`` on that action for a
    terminal row (``terminal[b]``); for a length-cut row Φ(s_{H+1}) = Φ(s_H) (no shaping at the
    cut) and no outcome (``outcome[b]`` is NaN there). 0 off the mask (``phi`` holds junk).

    Inputs: left- and right-padded batches, an all-masked batch, empty first rows, α = 0, rows
    of one action. Caught, among others: Φ(terminal) = R, a cut row shaped down to 0 or given
    its (NaN) outcome, the next column's junk read as Φ(s_{H+1}), NaN on an empty row."""

    def inputs(gen: torch.Generator, i: int):
        b, t = _shape(gen, i)
        mask = edge_case_mask(gen, i, b, t)
        phi = _garbage(torch.rand(b, t, generator=gen, dtype=torch.float64), mask, gen)
        terminal = torch.rand(b, generator=gen) < 0.6
        if i == 3:
            terminal[:] = False  # a batch of cut responses only
        outcome = (torch.rand(b, generator=gen) < 0.5).double()
        outcome = torch.where(terminal, outcome, math.nan)  # a cut response has no outcome
        alpha = 0.0 if i % 7 == 6 else float(torch.empty(()).uniform_(0.1, 2.0, generator=gen))
        return (phi, outcome, mask, alpha, terminal), {}

    return check_function(
        "shaped_rewards",
        fn,
        _shaped_rewards_reference,
        inputs,
        n=n,
        seed=seed,
        quiet=quiet,
        forbidden=(rewards.process_rewards, rewards.token_rewards),
    )


def _mc_reference(hits: Tensor, mask: Tensor) -> Tensor:
    """A naive loop over the states: Φ̂ = j/k and √(Φ̂(1 − Φ̂)/k); 0 off the mask."""
    b, n_states, k = hits.shape
    out = torch.zeros(b, n_states, 2, dtype=torch.float64)
    for i in range(b):
        for s in range(n_states):
            if mask[i, s]:
                p = sum(bool(x) for x in hits[i, s].tolist()) / k
                out[i, s, 0] = p
                out[i, s, 1] = math.sqrt(p * (1 - p) / k)
    return out


def check_mc_step_values(
    fn: Callable[..., Tensor], n: int = N_INPUTS, *, seed: int = 0, quiet: bool = False
) -> Verdict:
    """``fn(hits, mask) -> (B, L, 2)``: ``hits`` (B, L, k) bool, the graded outcomes of the k
    rollouts from each of the L step-boundary states of B responses (padded: ``mask`` (B, L)
    says which states exist); entry ``[..., 0]`` the Monte-Carlo step value Φ̂ = (1/k) Σ_i hits,
    ``[..., 1]`` its binomial standard error √(Φ̂(1 − Φ̂)/k); 0 (not NaN) off the mask, where
    ``hits`` holds junk. Inputs include k = 1, all-masked batches, rows with no boundary and
    states whose rollouts all agree (s.e. 0). Caught: the (k − 1) sample variance (NaN at
    k = 1), a standard deviation without the 1/√k, junk read off the mask."""

    def inputs(gen: torch.Generator, i: int):
        b, n_states = _shape(gen, i)
        k = 1 if i % 6 == 5 else int(torch.randint(2, 12, (), generator=gen))
        mask = edge_case_mask(gen, i, b, n_states)
        p = torch.rand(b, n_states, 1, generator=gen)
        if i % 4 == 2:
            p = (p > 0.5).float()  # every rollout agrees: Φ̂ ∈ {0, 1}, s.e. 0
        hits = torch.rand(b, n_states, k, generator=gen) < p
        return (hits, mask), {}

    return check_function(
        "mc_step_values",
        fn,
        _mc_reference,
        inputs,
        n=n,
        seed=seed,
        quiet=quiet,
    )
