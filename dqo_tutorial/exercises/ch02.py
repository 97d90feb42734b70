r"""Checkers of notebook 02: the soft-optimal Q*, V*, π*.

- ``check_soft_value``: V(s) = β log Σ_a π_ref(a|s) exp(Q(s,a)/β)
- ``check_backward_induction``: V* of a ``tabular.TreeMDP`` by backward induction
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .. import tabular
from ._core import N_INPUTS, Verdict, _beta, check_function

__all__ = ["check_soft_value", "check_backward_induction"]


def _soft_value_reference(ref_logp: Tensor, q: Tensor, beta: float) -> Tensor:
    return beta * torch.logsumexp(ref_logp + q / beta, dim=-1)


def check_soft_value(
    fn: Callable[[Tensor, Tensor, float], Tensor],
    n: int = N_INPUTS,
    *,
    seed: int = 0,
    quiet: bool = False,
) -> Verdict:
    """``fn(ref_logp (N, K), q (N, K), beta) -> (N,)``: V = β log Σ_a π_ref(a|s) e^{Q(s,a)/β}.

    Some inputs have Q/β of several hundred: exponentiate naively and you get inf.
    """

    def inputs(gen: torch.Generator, i: int):
        n_states, k = (
            int(torch.randint(1, 8, (), generator=gen)),
            int(torch.randint(2, 6, (), generator=gen)),
        )
        ref_logp = torch.log_softmax(
            torch.randn(n_states, k, generator=gen, dtype=torch.float64), -1
        )
        q = torch.randn(n_states, k, generator=gen, dtype=torch.float64)
        beta = _beta(gen)
        if i % 4 == 3:
            q, beta = 10 * q, 0.01  # Q/β up to ~3000: exp overflows float64
        return (ref_logp, q, beta), {}

    return check_function(
        "soft_value", fn, _soft_value_reference, inputs, n=n, seed=seed, quiet=quiet
    )


def check_backward_induction(
    fn: Callable[[tabular.TreeMDP, float], Tensor],
    n: int = N_INPUTS,
    *,
    seed: int = 0,
    quiet: bool = False,
) -> Verdict:
    """``fn(mdp, beta) -> (n_states,)``: V* of every stored state of a random ``TreeMDP``,
    compared with :func:`dqo_tutorial.tabular.solve`."""

    def inputs(gen: torch.Generator, i: int):
        k = int(torch.randint(2, 5, (), generator=gen))
        h = int(torch.randint(1, 5, (), generator=gen))
        scale = 0.3 if i % 2 else 0.0  # some instances with process rewards
        mdp = tabular.TreeMDP.random(k, h, seed=i, process_scale=scale)
        return (mdp, float(torch.empty(()).uniform_(0.2, 2.0, generator=gen))), {}

    return check_function(
        "backward_induction",
        fn,
        lambda mdp, beta: tabular.solve(mdp, beta).v,
        inputs,
        n=n,
        seed=seed,
        quiet=quiet,
        forbidden=(tabular.solve,),
    )
