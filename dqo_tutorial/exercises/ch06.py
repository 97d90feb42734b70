r"""Checkers of notebook 06: importance sampling.

- ``check_tempered_logprobs``: log μ(a|s) = log softmax(z/τ)[a]
- ``check_prefix_weights``: w_h = min(c, exp Σ_{l<h} (log π_θ − log μ))
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .. import kernels, naive
from ._core import N_INPUTS, Verdict, _batch_inputs, check_function

__all__ = ["check_tempered_logprobs", "check_prefix_weights"]


def _tempered_logprobs_reference(logits: Tensor, actions: Tensor, tau: float) -> Tensor:
    return torch.log_softmax(logits / tau, dim=-1).gather(-1, actions[:, None]).squeeze(-1)


def check_tempered_logprobs(
    fn: Callable[[Tensor, Tensor, float], Tensor],
    n: int = N_INPUTS,
    *,
    seed: int = 0,
    quiet: bool = False,
) -> Verdict:
    """``fn(logits (N, K), actions (N,), tau) -> (N,)``: log μ(a|s) = log softmax(z/τ)[a], the
    behaviour policy of sampling π_ref at temperature τ (method §5).

    Some inputs have logits of several hundred: exponentiate naively and you get inf.
    """

    def inputs(gen: torch.Generator, i: int):
        rows = int(torch.randint(1, 9, (), generator=gen))
        k = int(torch.randint(2, 30, (), generator=gen))
        logits = 3 * torch.randn(rows, k, generator=gen, dtype=torch.float64)
        if i % 4 == 3:
            logits = 100 * logits  # exp(z/τ) overflows float64
        actions = torch.randint(0, k, (rows,), generator=gen)
        tau = 1.0 if i % 5 == 0 else float(torch.empty(()).uniform_(0.3, 2.0, generator=gen))
        return (logits, actions, tau), {}

    return check_function(
        "tempered_logprobs",
        fn,
        _tempered_logprobs_reference,
        inputs,
        n=n,
        seed=seed,
        quiet=quiet,
        forbidden=(kernels.gather_logprobs,),
    )


def check_prefix_weights(
    fn: Callable[..., Tensor], n: int = N_INPUTS, *, seed: int = 0, quiet: bool = False
) -> Verdict:
    """``fn(logp_policy, logp_behavior, mask, clip) -> (B, T)``: the truncated prefix weight
    w_h = min(c, exp Σ_{l<h} (log π_θ(a_l|s_l) − log μ(a_l|s_l))) on action columns (the sum runs
    over the row's earlier actions only, so w = 1 at the first action), 0 elsewhere; compared
    with :func:`dqo_tutorial.kernels.importance_weights` (``mode="prefix"``).

    Off-mask entries hold large junk, and some rows have log-ratios of several hundred.
    """

    def inputs(gen: torch.Generator, i: int):
        mask, pol, beh, _, _, _ = _batch_inputs(gen, i)
        if i % 4 == 3:
            beh = torch.where(mask, beh * 100, beh)  # Σ Δ of thousands: exp overflows
        unclipped = i % 5 == 4 and i % 4 != 3  # c = ∞ only where the weights stay finite
        clip = math.inf if unclipped else float(torch.empty(()).uniform_(0.5, 5.0, generator=gen))
        return (pol, beh, mask, clip), {}

    def reference(pol, beh, mask, clip):
        return kernels.importance_weights(pol, beh, mask, mode="prefix", clip=clip)

    return check_function(
        "prefix_weights",
        fn,
        reference,
        inputs,
        n=n,
        seed=seed,
        quiet=quiet,
        forbidden=(kernels.importance_weights, naive.importance_weights),
    )
