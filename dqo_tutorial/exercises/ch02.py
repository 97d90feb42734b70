r"""Checkers of notebook 02: the soft-optimal Q*, V*, π*.

- ``check_backward_induction``: V* of a ``tabular.TreeMDP`` by backward induction, stable at
  tiny β
- ``check_policy_value``: V^π of any policy table, the soft policy evaluation
  V^π(s) = Σ_a π(a|s) [r(s,a) + V^π(s∘a) − β log π(a|s)/π_ref(a|s)]
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .. import tabular
from ._core import N_INPUTS, Slip, Verdict, check_function

__all__ = ["check_backward_induction", "check_policy_value"]


def _random_mdp(gen: torch.Generator, i: int) -> tabular.TreeMDP:
    """Horizon 1 … 4, vocabulary 2 … 4, some with process rewards (input 0: the smallest)."""
    k = 2 if i == 0 else int(torch.randint(2, 5, (), generator=gen))
    h = 1 if i == 0 else int(torch.randint(1, 5, (), generator=gen))
    scale = 0.3 if i % 2 else 0.0
    return tabular.TreeMDP.random(k, h, seed=1000 + i, process_scale=scale)


def _backward(mdp: tabular.TreeMDP, value: Callable[[int, Tensor], Tensor]) -> Tensor:
    """V by a backward loop over the states (children after parents), ``value(s, q)`` giving
    V(s) from the row q(s, ·) = r(s, ·) + V(s ∘ ·): the frame of the slips of 2.1 and 2.2."""
    v = torch.zeros(mdp.n_states, dtype=torch.float64)
    for s in reversed(range(mdp.n_states)):
        nxt = mdp.next_state[s]
        v[s] = value(s, mdp.reward[s] + torch.where(nxt >= 0, v[nxt.clamp(min=0)], 0.0))
    return v


def _exp_first(mdp: tabular.TreeMDP, beta: float) -> Tensor:
    return _backward(
        mdp, lambda s, q: beta * torch.log((mdp.ref_logp[s].exp() * torch.exp(q / beta)).sum())
    )


BACKWARD_INDUCTION_SLIPS = (
    Slip(
        _exp_first,
        "β log Σ π_ref e^{Q/β} with the exponential taken first: at small β, e^{Q/β} overflows; "
        "use torch.logsumexp(ref_logp + Q/β) and multiply by β",
    ),
)


def check_backward_induction(
    fn: Callable[[tabular.TreeMDP, float], Tensor],
    n: int = N_INPUTS,
    *,
    seed: int = 0,
    quiet: bool = False,
) -> Verdict:
    """``fn(mdp, beta) -> (n_states,)``: V* of every stored state of a random ``TreeMDP``,
    compared with :func:`dqo_tutorial.tabular.solve`. Every fifth input has β = 0.001, where
    Q/β is about a thousand: ``β·log Σ π_ref·exp(Q/β)`` computed naively overflows."""

    def inputs(gen: torch.Generator, i: int):
        beta = 0.001 if i % 5 == 4 else float(torch.empty(()).uniform_(0.2, 2.0, generator=gen))
        return (_random_mdp(gen, i), beta), {}

    return check_function(
        "backward_induction",
        fn,
        lambda mdp, beta: tabular.solve(mdp, beta).v,
        inputs,
        n=n,
        seed=seed,
        quiet=quiet,
        forbidden=(tabular.solve,),
        slips=BACKWARD_INDUCTION_SLIPS,
    )


def _policy_value_reference(mdp: tabular.TreeMDP, pi: Tensor, beta: float) -> Tensor:
    """V^π(s) = E_π[Σ_{l≥h} r_l − β log π/π_ref | s_h = s] by enumerating every trajectory: each
    complete trajectory through s contributes P_π(its rest | s) × (its regularised return)."""
    log_pi = pi.log()
    v = torch.zeros(mdp.n_states, dtype=torch.float64)
    for traj in tabular.enumerate_trajectories(mdp):
        steps = [(mdp.index[traj[:h]], a) for h, a in enumerate(traj)]
        for k, (s, _) in enumerate(steps):
            rest = steps[k:]
            log_p = sum(float(log_pi[t, a]) for t, a in rest)
            ret = sum(
                float(mdp.reward[t, a]) - beta * float(log_pi[t, a] - mdp.ref_logp[t, a])
                for t, a in rest
            )
            v[s] += math.exp(log_p) * ret
    return v


def _soft_value(kl_sign: float, ref_weights: bool):
    """V^π with the KL term times ``kl_sign`` (1 is right) and π_ref's weights where π's belong
    when ``ref_weights``."""

    def policy_value(mdp: tabular.TreeMDP, pi: Tensor, beta: float) -> Tensor:
        w = mdp.ref_logp.exp() if ref_weights else pi

        def value(s: int, q: Tensor) -> Tensor:
            return (w[s] * (q - kl_sign * beta * (pi[s].log() - mdp.ref_logp[s]))).sum()

        return _backward(mdp, value)

    return policy_value


POLICY_VALUE_SLIPS = (
    Slip(
        _soft_value(0.0, False),
        "the KL term is left out: this is the plain expected return; subtract "
        "β log(π/π_ref) inside the bracket",
    ),
    Slip(
        _soft_value(-1.0, False),
        "the KL term's sign is flipped: the soft value *subtracts* β log(π/π_ref)",
    ),
    Slip(
        _soft_value(1.0, True),
        "π_ref's probabilities weigh the bracket: the expectation is over the policy π itself",
    ),
)


def check_policy_value(
    fn: Callable[[tabular.TreeMDP, Tensor, float], Tensor],
    n: int = N_INPUTS,
    *,
    seed: int = 0,
    quiet: bool = False,
) -> Verdict:
    """``fn(mdp, pi, beta) -> (n_states,)``: the soft value V^π of the policy table ``pi``
    (n_states, K), rows summing to 1, every entry > 0, at every stored state:

        V^π(s) = Σ_a π(a|s) [ r(s,a) + V^π(s∘a) − β log(π(a|s)/π_ref(a|s)) ],  V^π(terminal) = 0

    compared with an enumeration of every trajectory. Inputs: random policies (some nearly
    deterministic), π_ref itself (V^π = the expected return, no KL) and π* (V^π = V*).
    Wrong answers it catches: the KL term left out or with its sign flipped, π_ref's weights
    where π's belong."""

    def inputs(gen: torch.Generator, i: int):
        mdp = _random_mdp(gen, i)
        beta = float(torch.empty(()).uniform_(0.1, 2.0, generator=gen))
        shape = (mdp.n_states, mdp.vocab_size)
        sharp = 8.0 if i % 4 == 3 else 1.0
        pi = torch.softmax(sharp * torch.randn(shape, generator=gen, dtype=torch.float64), -1)
        if i % 6 == 1:
            pi = mdp.ref_logp.exp()
        elif i % 6 == 2:
            pi = tabular.solve(mdp, beta).pi
        return (mdp, pi, beta), {}

    return check_function(
        "policy_value",
        fn,
        _policy_value_reference,
        inputs,
        n=n,
        seed=seed,
        quiet=quiet,
        slips=POLICY_VALUE_SLIPS,
    )
