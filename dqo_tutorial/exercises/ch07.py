r"""Checkers of notebook 07: process rewards.

- ``check_process_rewards``: shaping α(Φ(s_{h+1}) − Φ(s_h)) at step boundaries
- ``check_shaped_rewards``: r'_h = r_h + α(Φ(s_{h+1}) − Φ(s_h)), Φ(terminal) = 0
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .. import rewards
from ._core import N_INPUTS, Verdict, _garbage, _shape, check_function, random_mask

__all__ = ["check_process_rewards", "check_shaped_rewards"]


def check_process_rewards(
    fn: Callable[..., Any], n: int = N_INPUTS, *, seed: int = 0, quiet: bool = False
) -> Verdict:
    """``fn(length, boundaries, alpha, phi_start, phi_end) -> H floats``: the potential-based
    shaping rewards α(Φ(s_{h+1}) − Φ(s_{b(h)})) of one response, non-zero only on the token that
    reaches a boundary and on the last token; compared with
    :func:`dqo_tutorial.sampling.process_rewards`."""

    def inputs(gen: torch.Generator, i: int):
        length = 1 if i == 0 else int(torch.randint(2, 16, (), generator=gen))
        inner = [h for h in range(1, length) if float(torch.rand((), generator=gen)) < 0.3]
        boundaries = [(h, float(torch.rand((), generator=gen))) for h in inner]
        alpha = 0.0 if i % 7 == 6 else float(torch.rand((), generator=gen))
        phi_start = float(torch.rand((), generator=gen))
        phi_end = 0.0 if i % 2 else float(torch.rand((), generator=gen))
        return (length, boundaries, alpha, phi_start, phi_end), {}

    def reference(length, boundaries, alpha, phi_start, phi_end):
        return torch.tensor(
            rewards.process_rewards(length, boundaries, alpha, phi_start, phi_end),
            dtype=torch.float64,
        )

    return check_function(
        "process_rewards",
        fn,
        reference,
        inputs,
        n=n,
        seed=seed,
        quiet=quiet,
        forbidden=(rewards.process_rewards,),
    )


def _shaped_rewards_reference(phi: Tensor, outcome: Tensor, mask: Tensor, alpha: float) -> Tensor:
    out = torch.zeros(mask.shape, dtype=torch.float64)
    for b in range(mask.shape[0]):
        cols = mask[b].nonzero().flatten().tolist()
        for j, c in enumerate(cols):
            nxt = float(phi[b, cols[j + 1]]) if j + 1 < len(cols) else 0.0  # Φ(terminal) = 0
            out[b, c] = alpha * (nxt - float(phi[b, c]))
        if cols:
            out[b, cols[-1]] += float(outcome[b])
    return out


def check_shaped_rewards(
    fn: Callable[..., Tensor], n: int = N_INPUTS, *, seed: int = 0, quiet: bool = False
) -> Verdict:
    """``fn(phi, outcome, mask, alpha) -> (B, T)``: r'_h = r_h + α(Φ(s_{h+1}) − Φ(s_h)) on the
    action columns of terminal responses, with ``phi[b, j]`` = Φ(s_h) of the state *before* the
    action in column j, Φ(terminal) = 0 after the last action, and the outcome reward
    ``outcome[b]`` on the last action; 0 off the mask (which holds junk in ``phi``)."""

    def inputs(gen: torch.Generator, i: int):
        b, t = _shape(gen, i)
        mask = random_mask(gen, b, t)
        phi = _garbage(torch.rand(b, t, generator=gen, dtype=torch.float64), mask, gen)
        outcome = (torch.rand(b, generator=gen) < 0.5).double()
        alpha = 0.0 if i % 7 == 6 else float(torch.empty(()).uniform_(0.1, 2.0, generator=gen))
        return (phi, outcome, mask, alpha), {}

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
