r"""Checkers of notebook 10: the Q-value explorer.

- ``check_blamed_token``: ``fn(advantage, mask) -> (B,)``, the response position of each
  row's most negative advantage (−1 for an empty row), left or right padding
- ``check_advantage_extremes``: ``fn(policy_logps, ref_logps, values, rewards, mask, beta, lam,
  bootstrap) -> (B, T)``, the critic's advantage Â_h = r_h + T_{h+1} − V(s_h) at λ = 0
  (one-step) and λ = 1 (Monte Carlo), written without the λ-return kernel
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .. import kernels, naive
from ._core import (
    N_INPUTS,
    Slip,
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


def _blamed_slip(fill: float = math.inf, position: bool = True, empty: int = -1):
    """The blamed token with one slip: off-mask entries filled with ``fill`` (0 is the slip),
    the column index returned when ``position`` is False, ``empty`` for an empty row."""

    def blamed_token(advantage: Tensor, mask: Tensor) -> Tensor:
        column = torch.where(mask, advantage, torch.tensor(fill, dtype=advantage.dtype)).argmin(1)
        first = mask.long().argmax(1) if position else 0
        return torch.where(mask.any(1), column - first, torch.tensor(empty))

    return blamed_token


BLAMED_TOKEN_SLIPS = (
    Slip(
        _blamed_slip(position=False),
        "the column index, not the response position: subtract the row's first action column "
        "(left padding shifts it)",
    ),
    Slip(
        _blamed_slip(fill=0.0),
        "off-mask entries filled with 0: in a row of positive advantages a pad then wins; fill "
        "them with +inf",
    ),
    Slip(_blamed_slip(empty=0), "0 for an empty row: a row without response tokens gives −1"),
)


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
        "blamed_token",
        as_tensor,
        _blamed_reference,
        _blamed_inputs,
        n=n,
        seed=seed,
        quiet=quiet,
        slips=[s.wrapped(lambda f: lambda *a: f(*a).to(torch.float64)) for s in BLAMED_TOKEN_SLIPS],
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


def _from_h(pol, ref, values, rewards, mask, beta, lam, bootstrap, *, own_reward: bool):
    """At λ = 1, the sum of r̃ started at l = h: Σ_{l≥h} r̃_l + b − V(s_h), plus r_h when
    ``own_reward`` (the slip of 10.2; at λ = 0 the reference)."""
    if lam != 1:
        return _extremes_reference(pol, ref, values, rewards, mask, beta, lam, bootstrap)
    zero = torch.zeros((), dtype=torch.float64)
    r = torch.where(mask, rewards, zero)
    v = torch.where(mask, values, zero)
    shaped = r - beta * torch.where(mask, pol - ref, zero)
    g = kernels.lambda_return(shaped, v, mask, 1.0, bootstrap)  # Σ_{l≥h} r̃_l + b
    return torch.where(mask, g - v + (r if own_reward else zero), zero)


def _b_in_last_column(pol, ref, values, rewards, mask, beta, lam, bootstrap):
    """At λ = 0, V(s_{H+1}) = b put in the tensor's last column (the slip; λ = 1: the
    reference)."""
    if lam != 0:
        return _extremes_reference(pol, ref, values, rewards, mask, beta, lam, bootstrap)
    zero = torch.zeros((), dtype=torch.float64)
    v = torch.where(mask, values, zero)
    v_next = torch.cat([v[:, 1:], torch.zeros_like(v[:, :1])], 1)
    if bootstrap is not None:
        v_next[:, -1] = bootstrap
    return torch.where(mask, torch.where(mask, rewards, zero) + v_next - v, zero)


_FROM_H = (
    "at λ = 1 the sum of r̃ starts at l = h: the token's own KL term is counted; "
    "Â_h = r_h + Σ_{l>h} r̃_l + b − V(s_h)"
)

ADVANTAGE_EXTREMES_SLIPS = (
    Slip(lambda *a: _from_h(*a, own_reward=False), _FROM_H),
    Slip(lambda *a: _from_h(*a, own_reward=True), _FROM_H),
    Slip(
        lambda *a: _extremes_reference(*a[:-1], None),
        "b is forgotten: a cut row's T_{H+1} is its bootstrap b (at λ = 0 and λ = 1)",
    ),
    Slip(
        _b_in_last_column,
        "the row's last *column* taken as its last action: with right padding the last action "
        "is earlier; V(s_{H+1}) = b belongs after the row's last action",
    ),
)


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
        slips=ADVANTAGE_EXTREMES_SLIPS,
    )
