r"""Checkers of the course exercises: your function against the reference, on random inputs.

Each ``check_<name>(fn)`` calls ``fn`` and the package's reference on the same random inputs
(20 by default, seeded, each input a fresh copy so ``fn`` cannot spoil the reference), prints a
verdict and returns it as a :class:`Verdict`:

- ``✓ lambda_return matches the reference on 20 random inputs``
- ``✗ lambda_return differs on input 3 …: at index (1, 4) yours 0.5 vs reference 0.25, …``
- ``… lambda_return: not implemented yet (raises NotImplementedError)``
- ``✗ lambda_return raised TypeError on input 0: …``

A checker never raises because of the function it checks. The references are the package's
kernels where one exists (``kernels.lambda_return``, ``kernels.dro_loss``, ``tabular.solve`` …),
so an exercise can never drift from the code the course teaches.

===============================  ========  =====================================================
checker                          notebook  the function you write
===============================  ========  =====================================================
``check_sequence_logprob``       01        log π(y|x) = Σ_h log π(a_h|s_h) per row, (B, T) → (B,)
``check_outcome_rewards``        01        sparse reward: R at each row's last action, (B, T)
``check_soft_value``             02        V(s) = β log Σ_a π_ref(a|s) exp(Q(s,a)/β)
``check_backward_induction``     02        V* of a ``tabular.TreeMDP`` by backward induction
``check_q_from_lm``              03        Q = β·(log π_θ − log π_ref) + V
``check_dro_loss``               03        mean ½ (r − V(x) − β log π_θ(y|x)/π_ref(y|x))²
``check_one_step_residual``      04        δ_h = V(s_h) + β ρ_h − r_h − V(s_{h+1})
``check_value_loss``             04        token mean of ½ (V + β ρ − r − T)²
``check_lambda_return``          05        G_h by the backward recursion of method §4
``check_reverse_discounted_sum`` 05        G_h = Σ_{l≥h} λ^{l−h} y_l, vectorised
===============================  ========  =====================================================
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from . import kernels, tabular

__all__ = [
    "Verdict",
    "check_function",
    "random_mask",
    "check_sequence_logprob",
    "check_outcome_rewards",
    "check_soft_value",
    "check_backward_induction",
    "check_q_from_lm",
    "check_dro_loss",
    "check_one_step_residual",
    "check_value_loss",
    "check_lambda_return",
    "check_reverse_discounted_sum",
]

N_INPUTS = 20


@dataclass(frozen=True)
class Verdict:
    """The outcome of a check: ``status`` is "pass", "fail", "not_implemented" or "error"."""

    name: str
    status: str
    message: str

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def __str__(self) -> str:
        return self.message


def _copy(x: Any) -> Any:
    if isinstance(x, Tensor):
        return x.clone()
    if isinstance(x, dict):
        return {k: _copy(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_copy(v) for v in x)
    return x


def _describe(args: tuple, kwargs: dict) -> str:
    def one(x: Any) -> str:
        if isinstance(x, Tensor):
            return f"tensor{tuple(x.shape)}"
        if isinstance(x, tabular.TreeMDP):
            return f"TreeMDP(K={x.vocab_size}, H={x.horizon})"
        if isinstance(x, float):
            return f"{x:.3g}"
        return repr(x)

    parts = [one(a) for a in args] + [f"{k}={one(v)}" for k, v in kwargs.items()]
    return ", ".join(parts)


def _compare(ours: Any, ref: Tensor, atol: float, rtol: float) -> str | None:
    """None when close, else a one-line description of the worst mismatch."""
    try:
        a = torch.as_tensor(ours).detach().to("cpu", torch.float64)
    except Exception as exc:  # e.g. a list of strings
        return f"the result is not a tensor of numbers ({type(exc).__name__}: {exc})"
    b = ref.detach().to("cpu", torch.float64)
    if a.shape != b.shape:
        return f"shape {tuple(a.shape)} but the reference has shape {tuple(b.shape)}"
    both_nan = torch.isnan(a) & torch.isnan(b)
    diff = torch.where(both_nan, 0.0, (a - b).abs()).nan_to_num(nan=math.inf, posinf=math.inf)
    bad = diff > atol + rtol * b.abs().nan_to_num(0.0)
    if not bool(bad.any()):
        return None
    idx = tuple(int(i) for i in bad.nonzero()[0]) if a.dim() else ()
    at = f"at index {idx}: " if idx else ""
    return (
        f"{at}yours {float(a[idx]):.6g} vs reference {float(b[idx]):.6g}, "
        f"max |diff| = {float(diff.max()):.3g} ({int(bad.sum())} of {a.numel()} entries wrong)"
    )


def check_function(
    name: str,
    fn: Callable[..., Any],
    reference: Callable[..., Any],
    make_inputs: Callable[[torch.Generator, int], tuple[tuple, dict]],
    *,
    n: int = N_INPUTS,
    atol: float = 1e-6,
    rtol: float = 1e-5,
    seed: int = 0,
    quiet: bool = False,
) -> Verdict:
    """Run ``fn`` and ``reference`` on ``n`` random inputs; print and return the verdict.

    ``make_inputs(generator, i)`` returns ``(args, kwargs)`` for input ``i``. Each call gets its
    own copy of the inputs. NotImplementedError → "not_implemented"; any other exception →
    "error"; the first mismatching input → "fail"; otherwise "pass".
    """
    gen = torch.Generator().manual_seed(seed)
    verdict = None
    for i in range(n):
        args, kwargs = make_inputs(gen, i)
        expected = torch.as_tensor(reference(*_copy(args), **_copy(kwargs)))
        try:
            got = fn(*_copy(args), **_copy(kwargs))
        except NotImplementedError:
            verdict = Verdict(
                name,
                "not_implemented",
                f"… {name}: not implemented yet (raises NotImplementedError)",
            )
            break
        except Exception as exc:
            verdict = Verdict(
                name,
                "error",
                f"✗ {name} raised {type(exc).__name__} on input {i} "
                f"({_describe(args, kwargs)}): {exc}",
            )
            break
        problem = _compare(got, expected, atol, rtol)
        if problem is not None:
            verdict = Verdict(
                name,
                "fail",
                f"✗ {name} differs on input {i} ({_describe(args, kwargs)}): {problem}",
            )
            break
    if verdict is None:
        verdict = Verdict(name, "pass", f"✓ {name} matches the reference on {n} random inputs")
    if not quiet:
        print(verdict.message)
    return verdict


# --------------------------------------------------------------------------------------------
# random inputs
# --------------------------------------------------------------------------------------------


def random_mask(gen: torch.Generator, batch: int, width: int, side: str | None = None) -> Tensor:
    """(B, T) bool action mask: one contiguous block of ≥ 1 actions per row, after ≥ 1 prompt
    column; ``side`` "right" (pads after the response), "left" (response ends the row) or None
    (chosen at random)."""
    if side is None:
        side = "left" if torch.rand((), generator=gen) < 0.5 else "right"
    mask = torch.zeros(batch, width, dtype=torch.bool)
    for b in range(batch):
        length = int(torch.randint(1, width, (), generator=gen))  # 1 … T−1 actions
        if side == "left":
            mask[b, width - length :] = True
        else:
            start = int(torch.randint(1, width - length + 1, (), generator=gen))
            mask[b, start : start + length] = True
    return mask


def _shape(gen: torch.Generator, i: int) -> tuple[int, int]:
    if i == 0:
        return 1, 2  # the smallest case: one row, one action
    return int(torch.randint(1, 6, (), generator=gen)), int(torch.randint(2, 12, (), generator=gen))


def _garbage(x: Tensor, mask: Tensor, gen: torch.Generator) -> Tensor:
    """Fill off-mask entries with large junk: a correct function must never read them."""
    junk = 100.0 * torch.randn(x.shape, generator=gen, dtype=x.dtype)
    return torch.where(mask, x, junk)


def _beta(gen: torch.Generator) -> float:
    return float(torch.empty(()).uniform_(0.05, 1.0, generator=gen))


def _lam(gen: torch.Generator, i: int) -> float:
    if i % 5 == 1:
        return 0.0
    if i % 5 == 2:
        return 1.0
    return float(torch.rand((), generator=gen))


# --------------------------------------------------------------------------------------------
# notebook 01: generation as an MDP
# --------------------------------------------------------------------------------------------


def check_sequence_logprob(fn: Callable[[Tensor, Tensor], Tensor], n: int = N_INPUTS) -> Verdict:
    """``fn(token_logps, mask) -> (B,)``: log π(y|x) = Σ_{h} log π(a_h|s_h) over action columns.

    Off-mask entries of ``token_logps`` hold junk, sometimes NaN: fill them with 0 by
    ``torch.where`` before summing (``NaN * 0`` is still NaN).
    """

    def inputs(gen: torch.Generator, i: int):
        b, t = _shape(gen, i)
        mask = random_mask(gen, b, t)
        logps = -torch.rand(b, t, generator=gen, dtype=torch.float64) * 5
        logps = _garbage(logps, mask, gen)
        if i % 3 == 2:
            logps = torch.where(mask, logps, math.nan)
        return (logps, mask), {}

    return check_function(
        "sequence_logprob", fn, lambda x, m: kernels.masked_sum(x, m, dim=1), inputs, n=n
    )


def _outcome_rewards_reference(mask: Tensor, outcome: Tensor) -> Tensor:
    out = torch.zeros(mask.shape, dtype=outcome.dtype)
    for b in range(mask.shape[0]):
        cols = mask[b].nonzero().flatten()
        if len(cols):
            out[b, cols[-1]] = outcome[b]
    return out


def check_outcome_rewards(fn: Callable[[Tensor, Tensor], Tensor], n: int = N_INPUTS) -> Verdict:
    """``fn(mask, outcome) -> (B, T)``: r_h = R at the row's last action column, 0 elsewhere."""

    def inputs(gen: torch.Generator, i: int):
        b, t = _shape(gen, i)
        mask = random_mask(gen, b, t)
        outcome = (torch.rand(b, generator=gen) < 0.5).double()
        if i % 4 == 3:
            outcome = torch.rand(b, generator=gen, dtype=torch.float64)  # graded, not 0/1
        return (mask, outcome), {}

    return check_function("outcome_rewards", fn, _outcome_rewards_reference, inputs, n=n)


# --------------------------------------------------------------------------------------------
# notebook 02: the soft-optimal Q*, V*, π*
# --------------------------------------------------------------------------------------------


def _soft_value_reference(ref_logp: Tensor, q: Tensor, beta: float) -> Tensor:
    return beta * torch.logsumexp(ref_logp + q / beta, dim=-1)


def check_soft_value(fn: Callable[[Tensor, Tensor, float], Tensor], n: int = N_INPUTS) -> Verdict:
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

    return check_function("soft_value", fn, _soft_value_reference, inputs, n=n)


def check_backward_induction(
    fn: Callable[[tabular.TreeMDP, float], Tensor], n: int = N_INPUTS
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
        "backward_induction", fn, lambda mdp, beta: tabular.solve(mdp, beta).v, inputs, n=n
    )


# --------------------------------------------------------------------------------------------
# notebook 03: Q from the language model; DRO
# --------------------------------------------------------------------------------------------


def check_q_from_lm(fn: Callable[..., Tensor], n: int = N_INPUTS) -> Verdict:
    """``fn(policy_logps, ref_logps, values, beta) -> (B, T)``: Q = β(log π_θ − log π_ref) + V."""

    def inputs(gen: torch.Generator, i: int):
        b, t = _shape(gen, i)
        pol, ref = (-3 * torch.rand(b, t, generator=gen, dtype=torch.float64) for _ in range(2))
        values = torch.randn(b, t, generator=gen, dtype=torch.float64)
        return (pol, ref, values, _beta(gen)), {}

    return check_function("q_from_lm", fn, lambda p, r, v, beta: beta * (p - r) + v, inputs, n=n)


def check_dro_loss(fn: Callable[..., Tensor], n: int = N_INPUTS) -> Verdict:
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

    return check_function("dro_loss", fn, reference, inputs, n=n)


# --------------------------------------------------------------------------------------------
# notebook 04: the soft Bellman residual and DQO's losses
# --------------------------------------------------------------------------------------------


def _batch_inputs(gen: torch.Generator, i: int, garbage: bool = True):
    b, t = _shape(gen, i)
    mask = random_mask(gen, b, t)
    pol, ref = (-3 * torch.rand(b, t, generator=gen, dtype=torch.float64) for _ in range(2))
    values = torch.randn(b, t, generator=gen, dtype=torch.float64)
    rewards = torch.randn(b, t, generator=gen, dtype=torch.float64) * 0.3
    if garbage:
        pol, ref, values, rewards = (_garbage(x, mask, gen) for x in (pol, ref, values, rewards))
    if i % 3 == 0:
        bootstrap = None
    else:  # some rows cut by the length limit (b ≠ 0), the others terminal (b = 0)
        cut = torch.rand(b, generator=gen) < 0.5
        bootstrap = torch.where(cut, torch.randn(b, generator=gen, dtype=torch.float64), 0.0)
    return mask, pol, ref, values, rewards, bootstrap


def check_one_step_residual(fn: Callable[..., Tensor], n: int = N_INPUTS) -> Verdict:
    """``fn(policy_logps, ref_logps, values, rewards, mask, beta, bootstrap) -> (B, T)``:
    δ_h = V(s_h) + β(log π_θ − log π_ref) − r_h − V(s_{h+1}), V(s_{H+1}) = b (0 when
    ``bootstrap`` is None), 0 off-mask; compared with
    :func:`dqo_tutorial.kernels.soft_bellman_residual`."""

    def inputs(gen: torch.Generator, i: int):
        mask, pol, ref, values, rewards, bootstrap = _batch_inputs(gen, i)
        return (pol, ref, values, rewards, mask, _beta(gen), bootstrap), {}

    return check_function("one_step_residual", fn, kernels.soft_bellman_residual, inputs, n=n)


def check_value_loss(fn: Callable[..., Tensor], n: int = N_INPUTS) -> Verdict:
    """``fn(values, log_ratio, rewards, target, mask, beta) -> scalar``: the token mean over
    action positions of ½ (V + β ρ − r − T)², compared with the value loss of
    :func:`dqo_tutorial.kernels.squared_residual_losses`."""

    def inputs(gen: torch.Generator, i: int):
        mask, pol, ref, values, rewards, _ = _batch_inputs(gen, i)
        target = _garbage(torch.randn(mask.shape, generator=gen, dtype=torch.float64), mask, gen)
        return (values, pol - ref, rewards, target, mask, _beta(gen)), {}

    def reference(values, log_ratio, rewards, target, mask, beta):
        return kernels.squared_residual_losses(values, log_ratio, rewards, target, mask, beta)[1]

    return check_function("value_loss", fn, reference, inputs, n=n)


# --------------------------------------------------------------------------------------------
# notebook 05: λ-returns
# --------------------------------------------------------------------------------------------


def check_lambda_return(fn: Callable[..., Tensor], n: int = N_INPUTS) -> Verdict:
    """``fn(rewards, values, mask, lam, bootstrap) -> (B, T)``: G_H = r̃_H + b,
    G_h = r̃_h + (1 − λ) V(s_{h+1}) + λ G_{h+1}, 0 off-mask; compared with
    :func:`dqo_tutorial.kernels.lambda_return`."""

    def inputs(gen: torch.Generator, i: int):
        mask, _, _, values, rewards, bootstrap = _batch_inputs(gen, i)
        return (rewards, values, mask, _lam(gen, i), bootstrap), {}

    return check_function("lambda_return", fn, kernels.lambda_return, inputs, n=n)


def check_reverse_discounted_sum(
    fn: Callable[[Tensor, float], Tensor], n: int = N_INPUTS
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

    return check_function("reverse_discounted_sum", fn, reference, inputs, n=n)
