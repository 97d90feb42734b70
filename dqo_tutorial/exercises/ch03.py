r"""Checkers of notebook 03: Q from the language model; DRO.

- ``check_q_from_lm``: Q = β·(log π_θ − log π_ref) + V
- ``check_dro_loss``: mean ½ (r − V(x) − β log π_θ(y|x)/π_ref(y|x))²
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .. import kernels
from ._core import N_INPUTS, Verdict, _beta, _shape, check_function

__all__ = ["check_q_from_lm", "check_dro_loss"]


def check_q_from_lm(
    fn: Callable[..., Tensor], n: int = N_INPUTS, *, seed: int = 0, quiet: bool = False
) -> Verdict:
    """``fn(policy_logps, ref_logps, values, beta) -> (B, T)``: Q = β(log π_θ − log π_ref) + V."""

    def inputs(gen: torch.Generator, i: int):
        b, t = _shape(gen, i)
        pol, ref = (-3 * torch.rand(b, t, generator=gen, dtype=torch.float64) for _ in range(2))
        values = torch.randn(b, t, generator=gen, dtype=torch.float64)
        return (pol, ref, values, _beta(gen)), {}

    return check_function(
        "q_from_lm",
        fn,
        lambda p, r, v, beta: beta * (p - r) + v,
        inputs,
        n=n,
        seed=seed,
        quiet=quiet,
    )


def check_dro_loss(
    fn: Callable[..., Tensor], n: int = N_INPUTS, *, seed: int = 0, quiet: bool = False
) -> Verdict:
    """``fn(policy_logps, ref_logps, values, rewards, beta) -> scalar``, all inputs (B,):
    mean over the batch of ½ (r − V(x) − β (log π_θ(y|x) − log π_ref(y|x)))², compared with
    :func:`dqo_tutorial.kernels.dro_loss`."""

    def inputs(gen: torch.Generator, i: int):
        b = int(torch.randint(1, 9, (), generator=gen))
        pol, ref = (-20 * torch.rand(b, generator=gen, dtype=torch.float64) for _ in range(2))
        values = torch.rand(b, generator=gen, dtype=torch.float64)
        rewards = (torch.rand(b, generator=gen) < 0.5).double()
        return (pol, ref, values, rewards, _beta(gen)), {}

    def reference(pol, ref, values, rewards, beta):
        return kernels.dro_loss(pol, ref, values, rewards, beta)[1]

    return check_function(
        "dro_loss",
        fn,
        reference,
        inputs,
        n=n,
        seed=seed,
        quiet=quiet,
        forbidden=(kernels.dro_loss,),
    )
