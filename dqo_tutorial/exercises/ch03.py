r"""Checkers of notebook 03: Q from the language model; DRO.

- ``check_policy_from_q``: (log π, V) of a Q table: V = β log Σ_a π_ref e^{Q/β},
  log π = log π_ref + (Q − V)/β, returned as the pair ``(log_pi, v)``
- ``check_dro_loss_from_tokens``: DRO's loss from per-token log-probs and an action mask:
  batch mean of ½ (V(x) + β Σ_h (log π_θ − log π_ref) − r)²
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .. import kernels
from ._core import (
    N_INPUTS,
    Slip,
    Verdict,
    _beta,
    _garbage,
    _shape,
    check_function,
    edge_case_mask,
)

__all__ = ["check_policy_from_q", "check_dro_loss_from_tokens"]


# --------------------------------------------------------------------------------------------
# 3.1: the policy and the value a Q table implies
# --------------------------------------------------------------------------------------------


def _policy_from_q_reference(q: Tensor, ref_logp: Tensor, beta: float) -> Tensor:
    """(…, K + 1): log π in the first K columns, V in the last; a naive float64 loop over the
    rows of the flattened table (independent of any vectorised submission)."""
    q2, r2 = q.reshape(-1, q.shape[-1]), ref_logp.reshape(-1, q.shape[-1])
    out = torch.empty(q2.shape[0], q2.shape[1] + 1, dtype=torch.float64)
    for s in range(q2.shape[0]):
        z = [float(r2[s, a]) + float(q2[s, a]) / beta for a in range(q2.shape[1])]
        top = max(z)  # finite: every row keeps at least one action of π_ref
        lse = top + math.log(sum(math.exp(x - top) for x in z))
        for a, x in enumerate(z):
            out[s, a] = x - lse  # log π = log π_ref + Q/β − V/β
        out[s, -1] = beta * lse
    return out.reshape(*q.shape[:-1], q.shape[-1] + 1)


def _pack_pair(result: Any) -> Any:
    """``(log_pi, v)`` → one tensor (…, K + 1), V as the last column; anything else unchanged
    (the comparison then reports its shape)."""
    if isinstance(result, (tuple, list)) and len(result) == 2:
        log_pi, v = (torch.as_tensor(x) for x in result)
        log_pi, v = log_pi.to(torch.float64), v.to(torch.float64)
        if v.shape == log_pi.shape[:-1]:
            return torch.cat([log_pi, v.unsqueeze(-1)], -1)
        return torch.cat([log_pi.flatten(), v.flatten()])  # a shape the comparison reports
    return result


def _log_pi_and_v(z: Tensor, beta: float, dim: int = -1) -> tuple[Tensor, Tensor]:
    """(log softmax of ``z``, β logsumexp of ``z``) over ``dim``: the shape of 3.1's slips."""
    return torch.log_softmax(z, dim), beta * torch.logsumexp(z, dim)


def _v_by_exp(q: Tensor, ref_logp: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    v = beta * torch.log((ref_logp.exp() * torch.exp(q / beta)).sum(-1))
    return ref_logp + (q - v[..., None]) / beta, v


POLICY_FROM_Q_SLIPS = (
    Slip(
        lambda q, ref_logp, beta: _log_pi_and_v(q / beta, beta),
        "π_ref is forgotten (log_softmax(q / beta)): the policy is log_softmax(ref_logp + q/β)",
    ),
    Slip(
        lambda q, ref_logp, beta: (
            torch.softmax(ref_logp + q / beta, -1).log(),
            _log_pi_and_v(ref_logp + q / beta, beta)[1],
        ),
        "log π as softmax(…).log(): a probability that underflows to 0 gives −inf; take "
        "log_softmax, which stays in log space",
    ),
    Slip(
        _v_by_exp,
        "V by exp then log: e^{Q/β} overflows to inf at large Q/β; V = β · logsumexp(ref_logp "
        "+ q/β)",
    ),
    Slip(
        lambda q, ref_logp, beta: (
            _log_pi_and_v(ref_logp + q / beta, beta)[0],
            beta * (ref_logp + q / beta).max(-1).values,
        ),
        "V as a hard max: the soft value is β logsumexp, not β max",
    ),
    *(
        Slip(
            lambda q, ref_logp, beta, d=d: _log_pi_and_v(ref_logp + q / beta, beta, d),
            f"the softmax over axis {d}: the actions are the *last* axis (dim=-1)",
        )
        for d in (0, 1)
    ),
)


def check_policy_from_q(
    fn: Callable[..., Any], n: int = N_INPUTS, *, seed: int = 0, quiet: bool = False
) -> Verdict:
    r"""``fn(q, ref_logp, beta) -> (log_pi, v)``: the policy and the value a Q table implies,
    over the last axis (actions) of ``q`` and ``ref_logp`` (shape (…, K)):

    .. math:: V = \beta\log\sum_a \pi_{\rm ref}(a)\,e^{Q(a)/\beta},\qquad
              \log\pi = \log\pi_{\rm ref} + (Q - V)/\beta
              = \operatorname{log\,softmax}(\log\pi_{\rm ref} + Q/\beta)

    ``log_pi`` has the shape of ``q``, ``v`` that shape without its last axis. The inputs
    include tables with leading batch axes (…, S, K), actions that π_ref forbids
    (``ref_logp = −inf``: their log π must be −inf, never NaN) and large Q/β (≈ 10³: ``exp``
    overflows). Wrong answers it catches: ``log_softmax(q / beta)`` (π_ref forgotten),
    ``softmax(...).log()`` (−inf where the probability underflows), V by ``exp`` and ``log``
    (inf), V as a hard max, the softmax over the wrong axis.
    """

    def inputs(gen: torch.Generator, i: int):
        s, k = _shape(gen, i)
        k = max(k // 2, 2)  # 2 … 5 actions
        shape = (2, s, k) if i % 6 == 5 else (s, k)
        scale = 50.0 if i % 5 == 3 else 2.0
        beta = 0.05 if i % 5 == 3 else _beta(gen)
        q = scale * torch.randn(shape, generator=gen, dtype=torch.float64)
        ref_logp = torch.log_softmax(torch.randn(shape, generator=gen, dtype=torch.float64), -1)
        if i % 4 == 1:  # π_ref forbids some actions; every row keeps at least one
            forbid = torch.rand(shape, generator=gen) < 0.4
            forbid[..., int(torch.randint(0, k, (), generator=gen))] = False
            ref_logp = torch.log_softmax(ref_logp.masked_fill(forbid, -math.inf), -1)
        return (q, ref_logp, beta), {}

    verdict = check_function(
        "policy_from_q",
        lambda q, ref_logp, beta: _pack_pair(fn(q, ref_logp, beta)),
        _policy_from_q_reference,
        inputs,
        n=n,
        seed=seed,
        quiet=True,
        slips=[s.wrapped(lambda f: lambda *a: _pack_pair(f(*a))) for s in POLICY_FROM_Q_SLIPS],
    )
    if verdict.status == "fail":
        hint = (
            " (the result is compared as log_pi with v appended as its last column; log_pi "
            "has the shape of q, v that shape without its last axis)"
        )
        first, newline, rest = verdict.message.partition("\n")
        message = first + hint + newline + rest  # the slip's line stays last
        verdict = dataclasses.replace(verdict, message=message)
    if not quiet:
        print(verdict.message)
    return verdict


# --------------------------------------------------------------------------------------------
# 3.2: DRO from token-level log-probs
# --------------------------------------------------------------------------------------------


def _dro_from_tokens_reference(pol, ref, values, rewards, mask, beta):
    seq, seq_ref = kernels.masked_sum(pol, mask, 1), kernels.masked_sum(ref, mask, 1)
    return kernels.dro_loss(seq, seq_ref, values, rewards, beta)[1]


def _dro_slip(masked, squares: str = "response", mean: str = "responses"):
    """DRO from tokens with one slip: ``masked(x, mask)`` zeroes the pads (or does not);
    ``squares`` "token" squares the residual at each token (V(x) at every state); ``mean``
    "tokens" divides by the number of action tokens instead of B."""

    def loss(policy_logps, ref_logps, values, rewards, mask, beta):
        rho = masked(policy_logps - ref_logps, mask)
        if squares == "token":
            d = values[:, None] + beta * rho - rewards[:, None]
            return torch.where(mask, 0.5 * d**2, 0.0).sum() / mask.sum().clamp(min=1)
        total = (0.5 * (values + beta * rho.sum(1) - rewards) ** 2).sum()
        return total / (mask.sum().clamp(min=1) if mean == "tokens" else len(values))

    return loss


def _zeroed(x: Tensor, mask: Tensor) -> Tensor:
    return torch.where(mask, x, torch.zeros((), dtype=x.dtype))


DRO_LOSS_FROM_TOKENS_SLIPS = (
    Slip(
        _dro_slip(_zeroed, squares="token"),
        "the residual squared per token: that is DQO's loss with V(x) at every state, not DRO; "
        "sum the log-ratio over each response first, then square",
    ),
    Slip(
        _dro_slip(_zeroed, mean="tokens"),
        "the mean over tokens: DRO averages over the B responses (divide by B)",
    ),
    Slip(
        _dro_slip(lambda x, m: x * m),
        "masking by multiplication: NaN off the mask survives (NaN · 0 = NaN); use torch.where",
    ),
    Slip(
        _dro_slip(lambda x, m: x),
        "a sum over every column: the off-mask junk is added in; sum the action tokens only",
    ),
)


def check_dro_loss_from_tokens(
    fn: Callable[..., Tensor], n: int = N_INPUTS, *, seed: int = 0, quiet: bool = False
) -> Verdict:
    r"""``fn(policy_logps, ref_logps, values, rewards, mask, beta) -> scalar``: the DRO loss
    of a padded batch of responses,

    .. math:: L = \frac1B\sum_b \tfrac12\Bigl(V(x_b) + \beta\sum_h m_{b,h}
              \bigl(\log\pi_\theta(a_h|s_h) - \log\pi_{\rm ref}(a_h|s_h)\bigr) - r_b\Bigr)^2

    with ``policy_logps``, ``ref_logps``, ``mask`` (B, T) per token and ``values`` = V(x),
    ``rewards`` (B,); compared with :func:`dqo_tutorial.kernels.dro_loss` of the masked
    sums. Masks are left- or right-padded; some rows are empty (their log-ratio is 0: the row
    still counts, δ = V − r), some batches all-masked; off-mask entries hold junk, sometimes
    NaN. Wrong answers it catches: the per-token residual squared and averaged (DQO without
    the telescoping, not DRO), the mean over tokens instead of responses, masking by
    multiplication (NaN), a sum over every column (junk); calling ``kernels.dro_loss`` or
    ``kernels.dqo_loss`` fails.
    """

    def inputs(gen: torch.Generator, i: int):
        b, t = _shape(gen, i)
        mask = edge_case_mask(gen, i, b, t)
        pol, ref = (-3 * torch.rand(b, t, generator=gen, dtype=torch.float64) for _ in range(2))
        pol, ref = _garbage(pol, mask, gen), _garbage(ref, mask, gen)
        if i % 3 == 2:
            pol = torch.where(mask, pol, math.nan)
            ref = torch.where(mask, ref, math.nan)
        values = torch.rand(b, generator=gen, dtype=torch.float64)
        rewards = (torch.rand(b, generator=gen) < 0.5).double()
        return (pol, ref, values, rewards, mask, _beta(gen)), {}

    return check_function(
        "dro_loss_from_tokens",
        fn,
        _dro_from_tokens_reference,
        inputs,
        n=n,
        seed=seed,
        quiet=quiet,
        forbidden=(kernels.dro_loss, kernels.dqo_loss, kernels.squared_residual_losses),
        slips=DRO_LOSS_FROM_TOKENS_SLIPS,
    )
