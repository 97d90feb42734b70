r"""Checkers of notebook 10: the Q-value explorer.

- ``check_blamed_token``: ``fn(advantage, mask) -> (B,)``, the response position of each
  row's most negative advantage (−1 for an empty row), left or right padding
- ``check_advantage_extremes``: ``fn(policy_logps, ref_logps, values, rewards, mask, beta, lam,
  bootstrap) -> (B, T)``, the critic's advantage Â_h = r_h + T_{h+1} − V(s_h) at λ = 0
  (one-step) and λ = 1 (Monte Carlo), written without the λ-return kernel
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .. import kernels, naive
from ._core import (
    N_INPUTS,
    Verdict,
    _batch_inputs,
    _beta,
    _garbage,
    _shape,
    check_function,
    edge_case_mask,
)

__all__ = ["check_blamed_token", "check_advantage_extremes"]


def _blamed_inputs(gen: torch.Generator, i: int):
    b, t = _shape(gen, i)
    mask = edge_case_mask(gen, i, b, t)
    adv = torch.randn(b, t, generator=gen, dtype=torch.float64)
    if i % 3 == 1:  # every advantage positive: the blame is the least positive one
        adv = adv.abs() + 0.1
    if i % 4 == 2:  # ties: rounded values repeat; the first of the tied tokens is blamed
        adv = (adv * 2).round() / 2
    return (_garbage(adv, mask, gen), mask), {}


def _blamed_reference(advantage: Tensor, mask: Tensor) -> Tensor:
    """A naive loop: the first response position holding the row's minimum."""
    out = []
    for row, m in zip(advantage.tolist(), mask.tolist()):
        acts = [a for a, keep in zip(row, m) if keep]
        out.append(acts.index(min(acts)) if acts else -1)
    return torch.tensor(out, dtype=torch.float64)


def check_blamed_token(
    fn: Callable[[Tensor, Tensor], Tensor], n: int = N_INPUTS, *, seed: int = 0, quiet: bool = False
) -> Verdict:
    """``fn(advantage (B, T), mask (B, T)) -> (B,)``: for each row, the position h (0 = the
    row's first response token, whatever the padding) of its most negative advantage among
    the response tokens, the first one on a tie; −1 for a row without response tokens. The
    advantage holds junk off the mask; a row may be all positive."""

    def as_tensor(advantage: Tensor, mask: Tensor) -> Tensor:
        return torch.as_tensor(fn(advantage, mask)).to(torch.float64)

    return check_function(
        "blamed_token", as_tensor, _blamed_reference, _blamed_inputs, n=n, seed=seed, quiet=quiet
    )


def _extremes_inputs(gen: torch.Generator, i: int):
    mask, pol, ref, values, rewards, bootstrap = _batch_inputs(gen, i)
    lam = float(i % 2)  # λ = 0 and λ = 1 alternately
    return (pol, ref, values, rewards, mask, _beta(gen), lam, bootstrap), {}


def _extremes_reference(pol, ref, values, rewards, mask, beta, lam, bootstrap):
    """Â = β ρ − δ^λ = β ρ − (V − G^λ), G^λ from the package's λ-return kernel."""
    zero = torch.zeros((), dtype=torch.float64)
    rho = torch.where(mask, pol - ref, zero)
    v = torch.where(mask, values, zero)
    g = kernels.lambda_return(
        torch.where(mask, rewards, zero) - beta * rho, v, mask, lam, bootstrap
    )
    return torch.where(mask, beta * rho - (v - g), zero)


def check_advantage_extremes(
    fn: Callable[..., Tensor], n: int = N_INPUTS, *, seed: int = 0, quiet: bool = False
) -> Verdict:
    """``fn(policy_logps, ref_logps, values, rewards, mask, beta, lam, bootstrap) -> (B, T)``
    for λ ∈ {0, 1}: the critic's advantage Â_h = r_h + T_{h+1} − V(s_h), with T_{h+1} =
    V(s_{h+1}) at λ = 0 and Σ_{l>h} r̃_l + b at λ = 1 (r̃ = r − β ρ, ρ = log π_θ − log π_ref),
    T_{H+1} = b (``bootstrap``, None = all terminal, b = 0); 0 off the mask. Left and right
    padding, cut rows, empty rows and all-masked batches; junk off the mask. Compared with
    β ρ − (V − G^λ) from ``kernels.lambda_return``; calling the package's λ-return or
    one-step residual fails (so does anything that calls them, e.g. ``viz.compute_quantities``)."""
    forbidden = (
        kernels.lambda_return,
        naive.lambda_return,
        kernels.soft_bellman_residual,
        naive.soft_bellman_residual,
    )
    return check_function(
        "advantage_extremes",
        fn,
        _extremes_reference,
        _extremes_inputs,
        n=n,
        seed=seed,
        quiet=quiet,
        forbidden=forbidden,
    )
