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
``check_tempered_logprobs``      06        log μ(a|s) = log softmax(z/τ)[a]
``check_prefix_weights``         06        w_h = min(c, exp Σ_{l<h} (log π_θ − log μ))
``check_process_rewards``        07        shaping α(Φ(s_{h+1}) − Φ(s_h)) at step boundaries
``check_shaped_rewards``         07        r'_h = r_h + α(Φ(s_{h+1}) − Φ(s_h)), Φ(terminal) = 0
``check_accuracy_with_stderr``   08        accuracy p and its standard error √(p(1−p)/N)
``check_dpo_loss``               08        −log σ(β[(log-ratio chosen) − (log-ratio rejected)])
``check_strict_grading``         09        GSM8K: the number after the last ``####`` = gold?
``check_flexible_grading``       09        GSM8K: strict answer, else the last number = gold?
``check_step_value_changes``     10        ΔV over each reasoning step of a response
``check_advantage``              10        Â_h = β ρ_h − δ^λ_h = r_h + T_{h+1} − V(s_h)
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
    "check_tempered_logprobs",
    "check_prefix_weights",
    "check_process_rewards",
    "check_shaped_rewards",
    "check_accuracy_with_stderr",
    "check_dpo_loss",
    "check_strict_grading",
    "check_flexible_grading",
    "check_step_value_changes",
    "check_advantage",
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


def mismatch(
    ours: Any, ref: Any, atol: float = 1e-6, rtol: float = 1e-5, *, who: str = "yours"
) -> str | None:
    """The one comparison of the course (exercise checkers and :func:`course.check_close`):
    None when ``ours`` and ``ref`` agree in float64 to ``|ours − ref| ≤ atol + rtol·|ref|`` —
    equal infinities and NaN against NaN agree —, else one line on the worst mismatch."""
    try:
        a = torch.as_tensor(ours).detach().to("cpu", torch.float64)
    except Exception as exc:  # e.g. a list of strings
        return f"the result is not a tensor of numbers ({type(exc).__name__}: {exc})"
    b = torch.as_tensor(ref).detach().to("cpu", torch.float64)
    if a.shape != b.shape:
        return f"shape {tuple(a.shape)} but the reference has shape {tuple(b.shape)}"
    same = (a == b) | (torch.isnan(a) & torch.isnan(b))  # equal infinities and NaNs agree
    diff = torch.where(same, 0.0, (a - b).abs()).nan_to_num(nan=math.inf, posinf=math.inf)
    bad = diff > atol + rtol * b.abs().nan_to_num(0.0, posinf=0.0, neginf=0.0)
    if not bool(bad.any()):
        return None
    idx = tuple(int(i) for i in bad.nonzero()[0]) if a.dim() else ()
    at = f"at index {idx}: " if idx else ""
    return (
        f"{at}{who} {float(a[idx]):.6g} vs reference {float(b[idx]):.6g}, "
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
        problem = mismatch(got, expected, atol, rtol)
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


# --------------------------------------------------------------------------------------------
# notebook 06: importance sampling
# --------------------------------------------------------------------------------------------


def _tempered_logprobs_reference(logits: Tensor, actions: Tensor, tau: float) -> Tensor:
    return torch.log_softmax(logits / tau, dim=-1).gather(-1, actions[:, None]).squeeze(-1)


def check_tempered_logprobs(
    fn: Callable[[Tensor, Tensor, float], Tensor], n: int = N_INPUTS
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

    return check_function("tempered_logprobs", fn, _tempered_logprobs_reference, inputs, n=n)


def check_prefix_weights(fn: Callable[..., Tensor], n: int = N_INPUTS) -> Verdict:
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

    return check_function("prefix_weights", fn, reference, inputs, n=n)


# --------------------------------------------------------------------------------------------
# notebook 07: process rewards
# --------------------------------------------------------------------------------------------


def check_process_rewards(fn: Callable[..., Any], n: int = N_INPUTS) -> Verdict:
    """``fn(length, boundaries, alpha, phi_start, phi_end) -> H floats``: the potential-based
    shaping rewards α(Φ(s_{h+1}) − Φ(s_{b(h)})) of one response, non-zero only on the token that
    reaches a boundary and on the last token; compared with
    :func:`dqo_tutorial.sampling.process_rewards`."""
    from .rewards import process_rewards

    def inputs(gen: torch.Generator, i: int):
        length = 1 if i == 0 else int(torch.randint(2, 16, (), generator=gen))
        inner = [h for h in range(1, length) if float(torch.rand((), generator=gen)) < 0.3]
        boundaries = [(h, float(torch.rand((), generator=gen))) for h in inner]
        alpha = 0.0 if i % 7 == 6 else float(torch.rand((), generator=gen))
        phi_start = float(torch.rand((), generator=gen))
        phi_end = 0.0 if i % 2 else float(torch.rand((), generator=gen))
        return (length, boundaries, alpha, phi_start, phi_end), {}

    def reference(length, boundaries, alpha, phi_start, phi_end):
        return torch.tensor(
            process_rewards(length, boundaries, alpha, phi_start, phi_end), dtype=torch.float64
        )

    return check_function("process_rewards", fn, reference, inputs, n=n)


def _shaped_rewards_reference(phi: Tensor, outcome: Tensor, mask: Tensor, alpha: float) -> Tensor:
    out = torch.zeros(mask.shape, dtype=torch.float64)
    for b in range(mask.shape[0]):
        cols = mask[b].nonzero().flatten().tolist()
        for j, c in enumerate(cols):
            nxt = float(phi[b, cols[j + 1]]) if j + 1 < len(cols) else 0.0  # Φ(terminal) = 0
            out[b, c] = alpha * (nxt - float(phi[b, c]))
        if cols:
            out[b, cols[-1]] += float(outcome[b])
    return out


def check_shaped_rewards(fn: Callable[..., Tensor], n: int = N_INPUTS) -> Verdict:
    """``fn(phi, outcome, mask, alpha) -> (B, T)``: r'_h = r_h + α(Φ(s_{h+1}) − Φ(s_h)) on the
    action columns of terminal responses, with ``phi[b, j]`` = Φ(s_h) of the state *before* the
    action in column j, Φ(terminal) = 0 after the last action, and the outcome reward
    ``outcome[b]`` on the last action; 0 off the mask (which holds junk in ``phi``)."""

    def inputs(gen: torch.Generator, i: int):
        b, t = _shape(gen, i)
        mask = random_mask(gen, b, t)
        phi = _garbage(torch.rand(b, t, generator=gen, dtype=torch.float64), mask, gen)
        outcome = (torch.rand(b, generator=gen) < 0.5).double()
        alpha = 0.0 if i % 7 == 6 else float(torch.empty(()).uniform_(0.1, 2.0, generator=gen))
        return (phi, outcome, mask, alpha), {}

    return check_function("shaped_rewards", fn, _shaped_rewards_reference, inputs, n=n)


# --------------------------------------------------------------------------------------------
# notebook 08: the end-to-end comparison
# --------------------------------------------------------------------------------------------


def check_accuracy_with_stderr(fn: Callable[[Tensor], Any], n: int = N_INPUTS) -> Verdict:
    """``fn(correct (N,) bool) -> (mean, stderr)``: the accuracy p and its binomial standard
    error √(p(1 − p)/N), as the results table reports them (:func:`dqo_tutorial.evaluate.
    accuracy_table`)."""
    from .evaluate import accuracy_table

    def inputs(gen: torch.Generator, i: int):
        size = 1 if i == 0 else int(torch.randint(2, 200, (), generator=gen))
        p = float(torch.rand((), generator=gen))
        return (torch.rand(size, generator=gen) < p,), {}

    def reference(correct: Tensor) -> Tensor:
        records = [
            {"decoding": "greedy", "correct_strict": c, "correct_flexible": c, "invalid": False}
            for c in correct.tolist()
        ]
        r = accuracy_table(records)["greedy"]["strict"]
        return torch.tensor([r["mean"], r["stderr"]], dtype=torch.float64)

    def as_pair(correct: Tensor) -> Tensor:
        out = fn(correct)
        if isinstance(out, (tuple, list)):  # (mean, stderr) as numbers or 0-d tensors
            return torch.tensor([float(x) for x in out], dtype=torch.float64)
        return torch.as_tensor(out, dtype=torch.float64)  # anything else must have shape (2,)

    return check_function("accuracy_with_stderr", as_pair, reference, inputs, n=n)


def check_dpo_loss(fn: Callable[..., Tensor], n: int = N_INPUTS) -> Verdict:
    """``fn(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta) -> (B,)``: the
    per-pair DPO loss −log σ(β[(log π_θ(y_c) − log π_ref(y_c)) − (log π_θ(y_r) − log π_ref(y_r))]),
    compared with :func:`dqo_tutorial.kernels.dpo_loss`. Some margins are in the hundreds."""

    def inputs(gen: torch.Generator, i: int):
        b = int(torch.randint(1, 9, (), generator=gen))
        scale = 2000.0 if i % 4 == 3 else 20.0  # σ of a large negative margin underflows
        logps = [-scale * torch.rand(b, generator=gen, dtype=torch.float64) for _ in range(4)]
        return (*logps, _beta(gen)), {}

    return check_function("dpo_loss", fn, kernels.dpo_loss, inputs, n=n)


# --------------------------------------------------------------------------------------------
# notebook 09: GSM8K grading
# --------------------------------------------------------------------------------------------


def _gsm8k_number(gen: torch.Generator) -> tuple[str, str]:
    """A random answer as a model might write it, and the bare gold number it equals."""
    value = int(torch.randint(0, 20000, (), generator=gen))
    style = int(torch.randint(0, 5, (), generator=gen))
    plain = str(value)
    written = [plain, f"{value:,}", f"${value:,}", f"{value}.00", f"{value}."][style]
    return written, plain


def _gsm8k_text(gen: torch.Generator, i: int) -> tuple[str, str]:
    written, gold = _gsm8k_number(gen)
    other, _ = _gsm8k_number(gen)
    kind = i % 5
    if kind == 0:
        text = f"She pays 3 + 4 = 7 dollars.\n#### {written}"
    elif kind == 1:
        text = f"First 12 apples, then {other} more.\nThe answer is {written}"  # no '####'
    elif kind == 2:
        text = f"#### {other}\nWait, recompute: 2 * 3 = 6.\n#### {written}"  # the last one counts
    elif kind == 3:
        text = f"Total: {written} cookies. #### {other}"
    else:
        text = f"So {other} minus 2 leaves {written}."
    if bool(torch.rand((), generator=gen) < 0.3):
        gold = str(int(torch.randint(0, 20000, (), generator=gen)))  # mostly a wrong answer
    return text, gold


def check_strict_grading(fn: Callable[[str, str], bool], n: int = N_INPUTS) -> Verdict:
    """``fn(response, gold) -> bool``: is the number after the response's last ``####`` equal
    to ``gold`` (commas, ``$``, a trailing ``.``, ``5.00 == 5``)? No ``####``: False. Compared
    with :func:`dqo_tutorial.gsm8k.is_correct` in ``strict`` mode."""
    from .gsm8k import is_correct

    def inputs(gen: torch.Generator, i: int):
        return _gsm8k_text(gen, i), {}

    def reference(text: str, gold: str) -> Tensor:
        return torch.tensor(float(is_correct(text, gold, "strict")), dtype=torch.float64)

    def as_float(text: str, gold: str) -> Tensor:
        return torch.tensor(float(bool(fn(text, gold))), dtype=torch.float64)

    return check_function("strict_grading", as_float, reference, inputs, n=n)


def check_flexible_grading(fn: Callable[[str, str], bool], n: int = N_INPUTS) -> Verdict:
    """``fn(response, gold) -> bool``: the strict answer (last ``#### N``) if there is one, else
    the last number of the response, compared numerically with ``gold``; compared with
    :func:`dqo_tutorial.gsm8k.is_correct` in ``flexible`` mode."""
    from .gsm8k import is_correct

    def inputs(gen: torch.Generator, i: int):
        return _gsm8k_text(gen, i), {}

    def reference(text: str, gold: str) -> Tensor:
        return torch.tensor(float(is_correct(text, gold, "flexible")), dtype=torch.float64)

    def as_float(text: str, gold: str) -> Tensor:
        return torch.tensor(float(bool(fn(text, gold))), dtype=torch.float64)

    return check_function("flexible_grading", as_float, reference, inputs, n=n)


# --------------------------------------------------------------------------------------------
# notebook 10: the Q-value explorer
# --------------------------------------------------------------------------------------------


def _step_value_changes_reference(state_values: Tensor, step_starts: list[int]) -> Tensor:
    ends = [*step_starts[1:], state_values.shape[0] - 1]
    return torch.stack([state_values[e] - state_values[s] for s, e in zip(step_starts, ends)])


def check_step_value_changes(fn: Callable[[Tensor, list], Tensor], n: int = N_INPUTS) -> Verdict:
    """``fn(state_values (H + 1,), step_starts) -> (n_steps,)``: the change of V over each
    reasoning step, V(s at the next step's start) − V(s at this step's start), the last step
    ending at the value reached after the last token (``state_values[H]``). ``step_starts``
    lists the response-token index where each step starts (the first is 0)."""

    def inputs(gen: torch.Generator, i: int):
        h = 1 if i == 0 else int(torch.randint(2, 30, (), generator=gen))
        starts = [0] + [k for k in range(1, h) if float(torch.rand((), generator=gen)) < 0.2]
        return (torch.randn(h + 1, generator=gen, dtype=torch.float64), starts), {}

    return check_function("step_value_changes", fn, _step_value_changes_reference, inputs, n=n)


def check_advantage(fn: Callable[..., Tensor], n: int = N_INPUTS) -> Verdict:
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

    return check_function("advantage", fn, reference, inputs, n=n)
