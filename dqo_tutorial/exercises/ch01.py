r"""Checkers of notebook 01: generation as an MDP.

- ``check_sequence_logprob``: log π(y|x) = Σ_h log π(a_h|s_h) per row, (B, T) → (B,)
- ``check_outcome_rewards``: sparse reward: R at each row's last action, (B, T)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .. import kernels
from ._core import N_INPUTS, Slip, Verdict, _garbage, _shape, check_function, edge_case_mask

__all__ = ["check_sequence_logprob", "check_outcome_rewards"]


SEQUENCE_LOGPROB_SLIPS = (
    Slip(
        lambda x, m: (x * m).sum(1),
        "masking by multiplication: off-mask NaN survives (NaN · 0 = NaN); zero the junk with "
        "torch.where(mask, token_logps, 0.0) before summing",
    ),
    Slip(
        lambda x, m: x.sum(1),
        "a sum over every column: the off-mask junk is added in; sum the action columns only",
    ),
)


def check_sequence_logprob(
    fn: Callable[[Tensor, Tensor], Tensor], n: int = N_INPUTS, *, seed: int = 0, quiet: bool = False
) -> Verdict:
    """``fn(token_logps, mask) -> (B,)``: log π(y|x) = Σ_{h} log π(a_h|s_h) over action columns.

    Off-mask entries of ``token_logps`` hold junk, sometimes NaN: fill them with 0 by
    ``torch.where`` before summing (``NaN * 0`` is still NaN). Masks are left- or right-padded;
    some batches are all-masked and some rows empty (their sum is 0). Wrong answers it
    catches: ``(token_logps * mask).sum(1)`` (NaN), a sum over every column (junk).
    """

    def inputs(gen: torch.Generator, i: int):
        b, t = _shape(gen, i)
        mask = edge_case_mask(gen, i, b, t)
        logps = -torch.rand(b, t, generator=gen, dtype=torch.float64) * 5
        logps = _garbage(logps, mask, gen)
        if i % 3 == 2:
            logps = torch.where(mask, logps, math.nan)
        return (logps, mask), {}

    return check_function(
        "sequence_logprob",
        fn,
        lambda x, m: kernels.masked_sum(x, m, dim=1),
        inputs,
        n=n,
        seed=seed,
        quiet=quiet,
        forbidden=(kernels.masked_sum, kernels.token_mean),
        slips=SEQUENCE_LOGPROB_SLIPS,
    )


def _outcome_rewards_reference(mask: Tensor, outcome: Tensor) -> Tensor:
    out = torch.zeros(mask.shape, dtype=outcome.dtype)
    for b in range(mask.shape[0]):
        cols = mask[b].nonzero().flatten()
        if len(cols):
            out[b, cols[-1]] = outcome[b]
    return out


def _reward_at(mask: Tensor, outcome: Tensor, cols: Tensor) -> Tensor:
    """R of every row written at column ``cols[b]`` (the slips of 1.2)."""
    out = torch.zeros(mask.shape, dtype=outcome.dtype)
    out[torch.arange(mask.shape[0]), cols] = outcome
    return out


def _last_action_everywhere(mask: Tensor, outcome: Tensor) -> Tensor:
    last = torch.where(mask, torch.arange(mask.shape[1]), -1).max(1).values.clamp(min=0)
    return _reward_at(mask, outcome, last)


OUTCOME_REWARDS_SLIPS = (
    Slip(
        lambda m, r: _reward_at(m, r, torch.full((m.shape[0],), m.shape[1] - 1)),
        "R in the tensor's last column: with right padding that column is a pad; R goes on the "
        "row's last *action* column",
    ),
    Slip(
        lambda m, r: _reward_at(m, r, m.sum(1) - 1),
        "R at column mask.sum(1) − 1: right only for a response that starts at column 0; find "
        "the row's last True column",
    ),
    Slip(
        _last_action_everywhere,
        "R written into an empty row (the last action of an all-False row came out as column "
        "0): a row without actions gets no reward",
    ),
)


def check_outcome_rewards(
    fn: Callable[[Tensor, Tensor], Tensor], n: int = N_INPUTS, *, seed: int = 0, quiet: bool = False
) -> Verdict:
    """``fn(mask, outcome) -> (B, T)``: r_h = R at the row's last action column, 0 elsewhere; an
    empty row (no action) gets no reward at all. Wrong answers it catches: R in the last column
    of the row (right padding puts pads there), R at ``mask.sum(1) - 1`` (right only for
    left-aligned rows), R written into an empty row."""

    def inputs(gen: torch.Generator, i: int):
        b, t = _shape(gen, i)
        mask = edge_case_mask(gen, i, b, t)
        outcome = (torch.rand(b, generator=gen) < 0.5).double()
        if i % 4 == 3:
            outcome = torch.rand(b, generator=gen, dtype=torch.float64)  # graded, not 0/1
        return (mask, outcome), {}

    return check_function(
        "outcome_rewards",
        fn,
        _outcome_rewards_reference,
        inputs,
        n=n,
        seed=seed,
        quiet=quiet,
        slips=OUTCOME_REWARDS_SLIPS,
    )
