r"""Checkers of notebook 10: the Q-value explorer.

- ``check_step_value_changes``: ΔV over each reasoning step of a response
- ``check_advantage``: Â_h = β ρ_h − δ^λ_h = r_h + T_{h+1} − V(s_h)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .. import kernels
from ._core import N_INPUTS, Verdict, _batch_inputs, _beta, _lam, check_function

__all__ = ["check_step_value_changes", "check_advantage"]


def _step_value_changes_reference(state_values: Tensor, step_starts: list[int]) -> Tensor:
    ends = [*step_starts[1:], state_values.shape[0] - 1]
    return torch.stack([state_values[e] - state_values[s] for s, e in zip(step_starts, ends)])


def check_step_value_changes(
    fn: Callable[[Tensor, list], Tensor], n: int = N_INPUTS, *, seed: int = 0, quiet: bool = False
) -> Verdict:
    """``fn(state_values (H + 1,), step_starts) -> (n_steps,)``: the change of V over each
    reasoning step, V(s at the next step's start) − V(s at this step's start), the last step
    ending at the value reached after the last token (``state_values[H]``). ``step_starts``
    lists the response-token index where each step starts (the first is 0)."""

    def inputs(gen: torch.Generator, i: int):
        h = 1 if i == 0 else int(torch.randint(2, 30, (), generator=gen))
        starts = [0] + [k for k in range(1, h) if float(torch.rand((), generator=gen)) < 0.2]
        return (torch.randn(h + 1, generator=gen, dtype=torch.float64), starts), {}

    return check_function(
        "step_value_changes", fn, _step_value_changes_reference, inputs, n=n, seed=seed, quiet=quiet
    )


def check_advantage(
    fn: Callable[..., Tensor], n: int = N_INPUTS, *, seed: int = 0, quiet: bool = False
) -> Verdict:
    """``fn(policy_logps, ref_logps, values, rewards, mask, beta, lam, bootstrap) -> (B, T)``:
    the explorer's advantage Â_h = β ρ_h − δ^λ_h = r_h + T_{h+1} − V(s_h), with ρ = log π_θ −
    log π_ref, δ^λ = V − G^λ and G^λ the λ-return of r̃ = r − β ρ (``kernels.lambda_return``,
    bootstrap b); 0 off the mask."""

    def inputs(gen: torch.Generator, i: int):
        mask, pol, ref, values, rewards, bootstrap = _batch_inputs(gen, i)
        return (pol, ref, values, rewards, mask, _beta(gen), _lam(gen, i), bootstrap), {}

    def reference(pol, ref, values, rewards, mask, beta, lam, bootstrap):
        zero = torch.zeros((), dtype=torch.float64)
        rho = torch.where(mask, pol - ref, zero)
        v = torch.where(mask, values, zero)
        g = kernels.lambda_return(
            torch.where(mask, rewards, zero) - beta * rho, v, mask, lam, bootstrap
        )
        return torch.where(mask, beta * rho - (v - g), zero)

    return check_function("advantage", fn, reference, inputs, n=n, seed=seed, quiet=quiet)
