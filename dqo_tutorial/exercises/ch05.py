r"""Checkers of notebook 05: λ-returns.

- ``check_lambda_return``: G_h by the backward recursion of method §4
- ``check_reverse_discounted_sum``: G_h = Σ_{l≥h} λ^{l−h} y_l, vectorised
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .. import kernels, naive
from ._core import N_INPUTS, Verdict, _batch_inputs, _lam, _shape, check_function

__all__ = ["check_lambda_return", "check_reverse_discounted_sum"]


def check_lambda_return(
    fn: Callable[..., Tensor], n: int = N_INPUTS, *, seed: int = 0, quiet: bool = False
) -> Verdict:
    """``fn(rewards, values, mask, lam, bootstrap) -> (B, T)``: G_H = r̃_H + b,
    G_h = r̃_h + (1 − λ) V(s_{h+1}) + λ G_{h+1}, 0 off-mask; compared with
    :func:`dqo_tutorial.kernels.lambda_return`."""

    def inputs(gen: torch.Generator, i: int):
        mask, _, _, values, rewards, bootstrap = _batch_inputs(gen, i)
        return (rewards, values, mask, _lam(gen, i), bootstrap), {}

    return check_function(
        "lambda_return",
        fn,
        kernels.lambda_return,
        inputs,
        n=n,
        seed=seed,
        quiet=quiet,
        forbidden=(kernels.lambda_return, naive.lambda_return),
    )


def check_reverse_discounted_sum(
    fn: Callable[[Tensor, float], Tensor],
    n: int = N_INPUTS,
    *,
    seed: int = 0,
    quiet: bool = False,
) -> Verdict:
    """``fn(y (B, T), lam) -> (B, T)``: G_h = Σ_{l ≥ h} λ^{l−h} y_l along each row (every column
    counts), i.e. G_h = y_h + λ G_{h+1}, G_{T} = 0 beyond the last column."""

    def inputs(gen: torch.Generator, i: int):
        b, t = _shape(gen, i)
        if i == n - 1:
            t = 300  # longer than one block of a blockwise implementation
        return (torch.randn(b, t, generator=gen, dtype=torch.float64), _lam(gen, i)), {}

    def reference(y: Tensor, lam: float) -> Tensor:
        ones = torch.ones(y.shape, dtype=torch.bool)
        return kernels.lambda_return(y, torch.zeros_like(y), ones, lam)

    return check_function(
        "reverse_discounted_sum",
        fn,
        reference,
        inputs,
        n=n,
        seed=seed,
        quiet=quiet,
        forbidden=(kernels.lambda_return, naive.lambda_return),
    )
