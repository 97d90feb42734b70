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
from ._core import (
    N_INPUTS,
    Slip,
    Verdict,
    _garbage,
    _shape,
    check_function,
    edge_case_mask,
)

__all__ = ["check_shaped_rewards", "check_mc_step_values"]


def _shaped_rewards_reference(
    phi: Tensor, outcome: Tensor, mask: Tensor, alpha: float, terminal: Tensor
) -> Tensor:
    """A naive loop: per row, the package's own one-response shaping
    (:func:`dqo_tutorial.rewards.process_rewards`, every action column a "boundary") with
    Φ_end = 0 for a terminal row, Φ_end = Φ(s_H) for a cut one, and the outcome on the last
    action of a terminal row only."""

    def row(b: int, cols: list[int], p: list[float]) -> list[float]:
        end = 0.0 if bool(terminal[b]) else p[-1]
        shaped = rewards.process_rewards(
            len(cols), list(enumerate(p[1:], start=1)), alpha, p[0], end
        )
        if bool(terminal[b]):
            shaped[-1] += float(outcome[b])
        return shaped

    return _row_by_row(phi, mask, row)


def _row_by_row(phi: Tensor, mask: Tensor, row: Callable[..., list[float]]) -> Tensor:
    """(B, T) float64, 0 off the mask; on row b's action columns ``cols``,
    ``row(b, cols, [Φ of each])`` (rows without an action are left 0)."""
    out = torch.zeros(mask.shape, dtype=torch.float64)
    for b in range(mask.shape[0]):
        cols = mask[b].nonzero().flatten().tolist()
        if cols:
            values = row(b, cols, [float(phi[b, c]) for c in cols])
            out[b, cols] = torch.tensor(values, dtype=torch.float64)
    return out


def _shaped_slip(end: str = "spec", leak: bool = False, junk: bool = False):
    """Shaped rewards with one slip, row by row: ``end`` "R" sets Φ(terminal) = R, "zero"
    Φ(s_{H+1}) = 0 on every row (a cut row too); ``leak`` adds the outcome times 0 to every
    action of the row (a NaN outcome then leaks); ``junk`` reads Φ(s_{H+1}) from the next
    column whatever it holds."""

    def shaped_rewards(phi, outcome, mask, alpha, terminal):
        def row(b: int, cols: list[int], p: list[float]) -> list[float]:
            done, r_out = bool(terminal[b]), float(outcome[b])
            if junk:
                p_end = float(phi[b, cols[-1] + 1]) if cols[-1] + 1 < mask.shape[1] else 0.0
            elif done or end == "zero":
                p_end = r_out if (done and end == "R") else 0.0
            else:
                p_end = p[-1]
            r = [
                alpha * (nxt - now) + (0.0 * r_out if leak else 0.0)
                for nxt, now in zip(p[1:] + [p_end], p)
            ]
            r[-1] += r_out if done else 0.0
            return r

        return _row_by_row(phi, mask, row)

    return shaped_rewards


SHAPED_REWARDS_SLIPS = (
    Slip(
        _shaped_slip(end="R"),
        "Φ(terminal) = R: the terminal potential must be 0 (any other value changes the problem "
        "solved); the outcome goes on the last action as a reward",
    ),
    Slip(
        _shaped_slip(end="zero"),
        "a cut row shaped down to Φ(s_{H+1}) = 0: a response cut by the length limit keeps its "
        "Φ (no shaping at the cut)",
    ),
    Slip(
        _shaped_slip(leak=True),
        "the NaN outcome of a cut row leaks (outcome × indicator is NaN · 0 = NaN): select it "
        "with torch.where",
    ),
    Slip(
        _shaped_slip(junk=True),
        "Φ(s_{H+1}) read from the column after the row's last action: that column is junk; "
        "after the last action Φ is 0 (terminal) or Φ(s_H) (cut)",
    ),
)


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
        slips=SHAPED_REWARDS_SLIPS,
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


def _mc_slip(stderr: Callable[[Tensor, int], Tensor]):
    """Φ̂ and a wrong standard error ``stderr(Φ̂, k)``, 0 off the mask."""

    def mc_step_values(hits: Tensor, mask: Tensor) -> Tensor:
        k = hits.shape[-1]
        p = hits.to(torch.float64).sum(-1) / k
        out = torch.stack([p, stderr(p, k)], -1)
        return torch.where(mask[..., None], out, torch.zeros((), dtype=torch.float64))

    return mc_step_values


MC_STEP_VALUES_SLIPS = (
    Slip(
        _mc_slip(lambda p, k: (p * (1 - p) / torch.tensor(k - 1.0)).sqrt()),
        "the (k − 1) sample variance: NaN at k = 1; the plug-in variance Φ̂(1 − Φ̂) divides by k",
    ),
    Slip(
        _mc_slip(lambda p, k: (p * (1 - p)).sqrt()),
        "a standard deviation, not a standard error: divide by √k",
    ),
)


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
        slips=MC_STEP_VALUES_SLIPS,
    )
