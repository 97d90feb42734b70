r"""Checkers of notebook 04: the soft Bellman residual and DQO's losses.

- ``check_one_step_residual``: δ_h = V(s_h) + β ρ_h − r_h − V(s_{h+1})
- ``check_value_loss``: token mean of ½ (V + β ρ − r − T)²
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .. import kernels, naive
from ._core import N_INPUTS, Verdict, _batch_inputs, _beta, _garbage, check_function

__all__ = ["check_one_step_residual", "check_value_loss"]


def check_one_step_residual(
    fn: Callable[..., Tensor], n: int = N_INPUTS, *, seed: int = 0, quiet: bool = False
) -> Verdict:
    """``fn(policy_logps, ref_logps, values, rewards, mask, beta, bootstrap) -> (B, T)``:
    δ_h = V(s_h) + β(log π_θ − log π_ref) − r_h − V(s_{h+1}), V(s_{H+1}) = b (0 when
    ``bootstrap`` is None), 0 off-mask; compared with
    :func:`dqo_tutorial.kernels.soft_bellman_residual`."""

    def inputs(gen: torch.Generator, i: int):
        mask, pol, ref, values, rewards, bootstrap = _batch_inputs(gen, i)
        return (pol, ref, values, rewards, mask, _beta(gen), bootstrap), {}

    return check_function(
        "one_step_residual",
        fn,
        kernels.soft_bellman_residual,
        inputs,
        n=n,
        seed=seed,
        quiet=quiet,
        forbidden=(kernels.soft_bellman_residual, naive.soft_bellman_residual),
    )


def check_value_loss(
    fn: Callable[..., Tensor], n: int = N_INPUTS, *, seed: int = 0, quiet: bool = False
) -> Verdict:
    """``fn(values, log_ratio, rewards, target, mask, beta) -> scalar``: the token mean over
    action positions of ½ (V + β ρ − r − T)², compared with the value loss of
    :func:`dqo_tutorial.kernels.squared_residual_losses`."""

    def inputs(gen: torch.Generator, i: int):
        mask, pol, ref, values, rewards, _ = _batch_inputs(gen, i)
        target = _garbage(torch.randn(mask.shape, generator=gen, dtype=torch.float64), mask, gen)
        return (values, pol - ref, rewards, target, mask, _beta(gen)), {}

    def reference(values, log_ratio, rewards, target, mask, beta):
        return kernels.squared_residual_losses(values, log_ratio, rewards, target, mask, beta)[1]

    return check_function(
        "value_loss",
        fn,
        reference,
        inputs,
        n=n,
        seed=seed,
        quiet=quiet,
        forbidden=(kernels.squared_residual_losses, kernels.dqo_loss, kernels.token_mean),
    )
