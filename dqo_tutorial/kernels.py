r"""Pure tensor kernels of DQO: no model inside, every function a short equation.

Notation (``docs/dqo-method.md``): prompt x, response tokens a_1 … a_H, states
s_h = (x, a_1 … a_{h-1}), policy π_θ, frozen reference π_ref, behaviour policy μ, value V_φ,
KL strength β, λ-return mixing λ.

Tensor conventions (method §7), shared by every function here:

=============  =========  ===========================================================
name           shape      meaning
=============  =========  ===========================================================
``mask``       (B, T)     1/True exactly on action (response) tokens; one contiguous
                          block per row; left or right padding both fine
per-token      (B, T)     **action-aligned**: column j holds the quantity of token j taken
                          as an action in state s_j = tokens[:, :j]; column 0 is never an
                          action
``values``     (B, T)     V_φ(s_j) for the state *before* token j
``bootstrap``  (B,)       V_φ(s_{H+1}) for rows cut by the length limit, 0 for rows that
                          ended with EOS (terminal)
=============  =========  ===========================================================

Numerical rules: masked positions are filled with zeros by :func:`torch.where` *before* any
arithmetic (``NaN * 0 = NaN``); token means divide by a count clamped to ≥ 1, so an all-masked row
(or batch) contributes 0, never NaN; importance weights are clipped in log space before ``exp``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "ISMode",
    "gather_logprobs",
    "linear_logprobs",
    "masked_sum",
    "token_mean",
    "lambda_return",
    "importance_weights",
    "kl_estimate",
    "soft_bellman_residual",
    "squared_residual_losses",
    "dqo_loss",
    "dpo_loss",
    "dro_loss",
]

ISMode = Literal["none", "sequence", "prefix"]

# Rows of a (N, V) logits matrix handled at once by gather_logprobs: bounds the float32 working
# copy to about _CHUNK_ELEMENTS * 4 bytes (64 MiB) whatever B, T and V are.
_CHUNK_ELEMENTS = 1 << 24


# --------------------------------------------------------------------------------------------
# log-probabilities
# --------------------------------------------------------------------------------------------


def _row_chunks(n_rows: int, n_cols: int) -> list[slice]:
    step = max(1, _CHUNK_ELEMENTS // max(1, n_cols))
    return [slice(i, i + step) for i in range(0, n_rows, step)]


class _GatherLogprobs(torch.autograd.Function):
    """log softmax(z)[y] = z_y − logsumexp(z), row-chunked, with a recomputing backward.

    Forward keeps only the logits (in their own dtype) and the float32 log-normaliser per row;
    backward recomputes softmax chunk by chunk:  ∂/∂z_v = g · (1[v = y] − softmax(z)_v).
    No full-size float32 copy of the logits is ever held, in forward or backward.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, tokens: Tensor) -> Tensor:  # type: ignore[override]
        acc = torch.float64 if logits.dtype == torch.float64 else torch.float32
        out = torch.empty(logits.shape[0], dtype=acc, device=logits.device)
        lse = torch.empty_like(out)
        for rows in _row_chunks(*logits.shape):
            z = logits[rows].to(acc)
            lse[rows] = torch.logsumexp(z, dim=-1)
            out[rows] = z.gather(-1, tokens[rows, None]).squeeze(-1) - lse[rows]
        ctx.save_for_backward(logits, tokens, lse)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        logits, tokens, lse = ctx.saved_tensors
        grad = torch.empty_like(logits)
        for rows in _row_chunks(*logits.shape):
            g = grad_out[rows, None].to(lse.dtype)
            gz = -g * torch.exp(logits[rows].to(lse.dtype) - lse[rows, None])
            gz.scatter_add_(-1, tokens[rows, None], g)
            grad[rows] = gz.to(logits.dtype)
        return grad, None


def gather_logprobs(logits: Tensor, tokens: Tensor) -> Tensor:
    r"""Log-probability of given tokens under logits, memory-lean.

    .. math::  \ell_{b,t} = \log\operatorname{softmax}(z_{b,t})[y_{b,t}]
               = z_{b,t,y_{b,t}} - \log\sum_v e^{z_{b,t,v}}

    ==========  =========  =======================================
    argument    shape      dtype
    ==========  =========  =======================================
    logits      (B, T, V)  any float (bf16/fp16/fp32/fp64)
    tokens      (B, T)     long; ids in [0, V)
    returns     (B, T)     float32 (float64 for float64 logits)
    ==========  =========  =======================================

    This is a pure gather: ``tokens[:, t]`` is scored by ``logits[:, t]`` (no shift). The
    action alignment of §7 lives in :func:`dqo_tutorial.modeling.per_token_logprobs`.
    The reduction runs in float32 over row chunks (~64 MiB each), so half-precision logits never
    get a full (B, T, V) float32 copy; the backward recomputes the softmax chunk by chunk.
    """
    if logits.shape[:-1] != tokens.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and tokens {tuple(tokens.shape)} disagree")
    flat = logits.reshape(-1, logits.shape[-1])
    out = _GatherLogprobs.apply(flat, tokens.reshape(-1).long())
    return out.view(tokens.shape)


class _LinearLogprobs(torch.autograd.Function):
    """log softmax((h Wᵀ + b)/τ)[y] for rows of hidden states, logits built row chunk by chunk.

    Forward keeps the hidden states, the float32 log-normaliser per row and nothing of size V;
    backward rebuilds each chunk's logits and sends  g_z = g · (1[v = y] − softmax_v) / τ  to
    h (g_z W), W (g_zᵀ h) and b (Σ g_z). A tied input embedding gets its gradient through W.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, tokens, temperature, dtype):  # type: ignore[override]
        acc = torch.float64 if dtype == torch.float64 else torch.float32
        out = torch.empty(hidden.shape[0], dtype=acc, device=hidden.device)
        lse = torch.empty_like(out)
        for rows in _row_chunks(hidden.shape[0], weight.shape[0]):
            z = _chunk_logits(hidden[rows], weight, bias, temperature, dtype, acc)
            lse[rows] = torch.logsumexp(z, dim=-1)
            out[rows] = z.gather(-1, tokens[rows, None]).squeeze(-1) - lse[rows]
        ctx.save_for_backward(hidden, weight, bias, tokens, lse)
        ctx.temperature, ctx.dtype = temperature, dtype
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        hidden, weight, bias, tokens, lse = ctx.saved_tensors
        tau, dtype = ctx.temperature, ctx.dtype
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = (
            torch.zeros(weight.shape, dtype=lse.dtype, device=weight.device) if need_w else None
        )
        grad_b = torch.zeros(bias.shape, dtype=lse.dtype, device=bias.device) if need_b else None
        for rows in _row_chunks(hidden.shape[0], weight.shape[0]):
            z = _chunk_logits(hidden[rows], weight, bias, tau, dtype, lse.dtype)
            g = grad_out[rows, None].to(lse.dtype)
            gz = -g * torch.exp(z - lse[rows, None])
            gz.scatter_add_(-1, tokens[rows, None], g)
            if tau != 1.0:
                gz = gz / tau
            if need_h:
                grad_h[rows] = (gz.to(dtype) @ weight.to(dtype)).to(hidden.dtype)
            if need_w:
                grad_w += (gz.to(dtype).T @ hidden[rows].to(dtype)).to(lse.dtype)
            if need_b:
                grad_b += gz.sum(0)
        grad_w = grad_w.to(weight.dtype) if need_w else None
        grad_b = grad_b.to(bias.dtype) if need_b else None
        return grad_h, grad_w, grad_b, None, None, None


def _chunk_logits(h, weight, bias, tau, dtype, acc) -> Tensor:
    """(rows, V) logits (h Wᵀ + b)/τ: the product in ``dtype``, then accumulated in ``acc``."""
    z = h.to(dtype) @ weight.to(dtype).T
    if bias is not None:
        z = z + bias.to(dtype)
    z = z.to(acc)
    return z / tau if tau != 1.0 else z


def linear_logprobs(
    hidden: Tensor,
    weight: Tensor,
    tokens: Tensor,
    bias: Tensor | None = None,
    temperature: float = 1.0,
    dtype: torch.dtype | None = None,
) -> Tensor:
    r"""Log-probability of given tokens under an LM head, without materialising the logits.

    .. math::  \ell_n = \log\operatorname{softmax}\bigl((W h_n + b)/\tau\bigr)[y_n]

    ==========  =======  ===================================================
    argument    shape    meaning
    ==========  =======  ===================================================
    hidden      (N, D)   final hidden states of the N scored positions
    weight      (V, D)   the LM head (the input embedding when tied)
    tokens      (N,)     long; the token each row scores, in [0, V)
    bias        (V,)     optional head bias
    dtype       –        the product's dtype (default ``weight``'s; under autocast pass
                         the autocast dtype, as the head itself would run)
    returns     (N,)     float32 (float64 when ``dtype`` is float64)
    ==========  =======  ===================================================

    The same numbers as ``gather_logprobs(((hidden @ weight.T + bias) / τ), tokens)`` — the
    product in ``dtype``, the reduction in float32 —, built in row chunks of about 64 MiB
    of float32 logits (:func:`gather_logprobs`' budget), so memory is O(N·D + chunk), not
    O(N·V): at N = 8 × 1,024 and V = 49,152 the logits alone would take 1.6 GB in float32.
    The backward recomputes each chunk (one more head product per chunk).
    """
    if hidden.shape[:-1] != tokens.shape or hidden.dim() != 2:
        raise ValueError(f"hidden {tuple(hidden.shape)} must be (N, D) with tokens (N,)")
    dtype = dtype or weight.dtype
    with torch.autocast(hidden.device.type, enabled=False):
        return _LinearLogprobs.apply(hidden, weight, bias, tokens.long(), float(temperature), dtype)


# --------------------------------------------------------------------------------------------
# masked reductions
# --------------------------------------------------------------------------------------------


def masked_sum(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Σ over ``mask`` of ``x``; masked entries are zero-filled first (NaN/inf there vanish)."""
    x = torch.where(mask.bool(), x, torch.zeros((), dtype=x.dtype, device=x.device))
    return x.sum() if dim is None else x.sum(dim)


def token_mean(x: Tensor, mask: Tensor, num_items: int | float | Tensor | None = None) -> Tensor:
    r"""Token mean  Σ_{b,h} m_{b,h} x_{b,h} / N.

    N is ``num_items`` when given — the number of action tokens in the *whole* optimisation
    batch, summed over gradient-accumulation micro-batches — so that summing the micro-batch
    losses gives exactly the full-batch loss. Otherwise N = Σ m, clamped to ≥ 1 (an all-masked
    batch contributes 0, not NaN).
    """
    n = mask.sum() if num_items is None else torch.as_tensor(num_items, device=x.device)
    return masked_sum(x, mask) / n.to(x.dtype).clamp(min=1)


# --------------------------------------------------------------------------------------------
# λ-returns
# --------------------------------------------------------------------------------------------


# Columns per block of the λ-return scan: each block is one (B, C) @ (C, C) matmul.
_SCAN_CHUNK = 256


def _discounted_reverse_cumsum(y: Tensor, lam: float) -> Tensor:
    r"""G_h = Σ_{l ≥ h} λ^{l−h} y_l along dim 1, i.e. G_h = y_h + λ·G_{h+1} with G_T = 0.

    Computed blockwise from the right: inside a block of C columns, G = y @ E with
    E[l, h] = λ^{l−h} (l ≥ h, else 0), plus λ^{C−h}·G_{first column of the next block}. Powers
    of λ ≤ 1 only shrink, so nothing overflows; λ = 0 gives E = I (0^0 = 1).
    """
    out, carry = [], torch.zeros_like(y[:, 0])
    for end in range(y.shape[1], 0, -_SCAN_CHUNK):
        block = y[:, max(0, end - _SCAN_CHUNK) : end]
        k = torch.arange(block.shape[1], device=y.device, dtype=y.dtype)
        gap = k[:, None] - k[None, :]  # l − h
        e = torch.where(gap >= 0, lam ** gap.clamp(min=0), 0.0)
        g = block @ e + carry[:, None] * lam ** (block.shape[1] - k)
        out.append(g)
        carry = g[:, 0]
    return torch.cat(out[::-1], dim=1)


def _targets(rewards: Tensor, values: Tensor, mask: Tensor, lam: float, bootstrap: Tensor | None):
    r"""λ-returns G_h and next-state targets T_{h+1} (method §4), vectorised.

    Unrolling G_h = r̃_h + (1 − λ)·V(s_{h+1}) + λ·G_{h+1} with G_H = r̃_H + b gives a discounted
    reverse sum  G_h = Σ_{l ≥ h} λ^{l−h} y_l  of

        y_l = r̃_l + (1 − λ)·V(s_{l+1})   if action l has a successor action,
        y_H = r̃_H + b                     for the row's last action, 0 off-mask.

    Because each row's actions are contiguous, "successor action" is simply column l + 1 and
    the zeros off-mask stop the sum at the end of the block. T_{h+1} = G_h − r̃_h.
    Returns (G, T_next), both (B, T) and zero off-mask.
    """
    m = mask.bool()
    zero = torch.zeros((), dtype=rewards.dtype, device=rewards.device)
    r = torch.where(m, rewards, zero)
    v = torch.where(m, values, zero)
    m_next = torch.cat([m[:, 1:], torch.zeros_like(m[:, :1])], dim=1)
    v_next = torch.cat([v[:, 1:], torch.zeros_like(v[:, :1])], dim=1)
    b = zero if bootstrap is None else bootstrap.to(r.dtype)[:, None]
    y = r + torch.where(m & m_next, (1.0 - lam) * v_next, zero) + torch.where(m & ~m_next, b, zero)
    g = torch.where(m, _discounted_reverse_cumsum(y, lam), zero)
    return g, torch.where(m, g - r, zero)


def _check_beta(beta: float) -> None:
    """β scales the KL term: β ≤ 0 drops or inverts it (and π* ∝ π_ref e^{Q/β} needs β > 0)."""
    if not (beta > 0 and math.isfinite(beta)):
        raise ValueError(f"beta must be a finite number > 0, got {beta}")


def lambda_return(
    rewards: Tensor,
    values: Tensor,
    mask: Tensor,
    lam: float,
    bootstrap: Tensor | None = None,
) -> Tensor:
    r"""λ-return G_h of the (KL-shaped) rewards, computed backwards over each row's actions.

    .. math::
        G_H &= \tilde r_H + b \\
        G_h &= \tilde r_h + (1-\lambda)\,V(s_{h+1}) + \lambda\,G_{h+1} \qquad h < H

    with b = 0 for a terminal row (ended with EOS) and b = V_φ(s_{H+1}) for a row cut by the
    length limit. λ = 0 gives the one-step target r̃_h + V(s_{h+1}); λ = 1 the reverse cumulative
    sum Σ_{l≥h} r̃_l + b.

    ==========  =======  ====================================================
    argument    shape    meaning
    ==========  =======  ====================================================
    rewards     (B, T)   r̃_h, already KL-shaped (r_h − β·log π_θ/π_ref)
    values      (B, T)   V_φ(s_h), action-aligned
    mask        (B, T)   action mask, one contiguous block per row
    lam         float    λ ∈ [0, 1]
    bootstrap   (B,)     b per row; None means every row is terminal (b = 0)
    returns     (B, T)   G_h on action positions, 0 elsewhere
    ==========  =======  ====================================================

    Differentiable in ``rewards``, ``values`` and ``bootstrap`` (detach what you treat as a target).
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must lie in [0, 1], got {lam}")
    return _targets(rewards, values, mask, lam, bootstrap)[0]


# --------------------------------------------------------------------------------------------
# importance sampling
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def importance_weights(
    logp_policy: Tensor,
    logp_behavior: Tensor,
    mask: Tensor,
    mode: ISMode = "prefix",
    clip: float = 2.0,
    normalize: bool = False,
) -> Tensor:
    r"""Truncated importance weights of π_θ over the behaviour policy μ (detached).

    With Δ_l = log π_θ(a_l|s_l) − log μ(a_l|s_l) over action positions:

    .. math::
        \text{prefix:}\quad   w_h &= \min\bigl(c,\ \exp \textstyle\sum_{l<h} \Delta_l\bigr)
                                    \quad\text{(weight of reaching } s_h) \\
        \text{sequence:}\quad w_h &= \min\bigl(c,\ \exp \textstyle\sum_{l} \Delta_l\bigr) \\
        \text{none:}\quad     w_h &= 1

    The clip is applied to the log-weight (min(log c, S)) before ``exp``, so large sums never
    overflow. ``normalize=True`` then divides by the mean weight over the batch's action tokens
    (self-normalised IS), also in log space.

    ============== ======= ==================================================
    argument       shape   meaning
    ============== ======= ==================================================
    logp_policy    (B, T)  log π_θ(a_h|s_h) (its gradient is ignored)
    logp_behavior  (B, T)  log μ(a_h|s_h): the tempered/truncated sampling law
    mask           (B, T)  action mask
    clip           float   c > 0; ``math.inf`` disables truncation: unnormalised, e^S then
                           overflows to inf beyond S ≈ 88 in float32 (the trainer refuses it)
    returns        (B, T)  w_h on action positions, 0 elsewhere; no grad
    ============== ======= ==================================================
    """
    m = mask.bool()
    dtype = torch.float64 if logp_policy.dtype == torch.float64 else torch.float32
    zero = torch.zeros((), dtype=dtype, device=logp_policy.device)
    if mode == "none":
        return torch.where(m, torch.ones((), dtype=dtype, device=m.device), zero)
    if not clip > 0:
        raise ValueError(f"clip must be > 0, got {clip}")
    delta = torch.where(m, logp_policy.to(dtype) - logp_behavior.to(dtype), zero)
    if mode == "prefix":
        log_w = torch.cumsum(delta, dim=1) - delta  # exclusive: Σ_{l<h}
    elif mode == "sequence":
        log_w = delta.sum(dim=1, keepdim=True).expand_as(delta)
    else:
        raise ValueError(f"is_mode must be 'none', 'sequence' or 'prefix', got {mode!r}")
    log_w = log_w.clamp(max=math.log(clip))
    if normalize:
        neg_inf = torch.full((), -math.inf, dtype=dtype, device=m.device)
        log_mean = torch.logsumexp(torch.where(m, log_w, neg_inf).flatten(), 0) - math.log(
            max(int(m.sum()), 1)
        )
        log_w = log_w - log_mean
    return torch.where(m, torch.exp(torch.where(m, log_w, zero)), zero)


@torch.no_grad()
def kl_estimate(
    policy_logps: Tensor,
    ref_logps: Tensor,
    mask: Tensor,
    behavior_logps: Tensor | None = None,
) -> Tensor:
    r"""Per-token estimate of KL(π_θ(·|s_h) ‖ π_ref(·|s_h)) — the objective's KL (§1) — from
    the offline tokens a_h ~ μ(·|s_h), averaged over the batch's action tokens.

    With r = π_θ(a|s)/π_ref(a|s) = e^ρ and the token-level weight u = π_ref(a|s)/μ(a|s):

    .. math::
        \widehat{\mathrm{KL}} = \frac1N \sum_h u_h\,\bigl(r_h \log r_h - r_h + 1\bigr),
        \qquad \mathbb E_{a\sim\mu}\bigl[u\,(r\log r - r + 1)\bigr]
        = \sum_a \pi_{\rm ref}(a)\,(r\log r - r + 1) = \mathrm{KL}(\pi_\theta\,\|\,\pi_{\rm ref})

    because E_{π_ref}[r] = 1. Every term is ≥ 0 (f(r) = r log r − r + 1 is the convex KL
    generator with f(1) = 0), so the estimate is non-negative and 0 iff ρ = 0 on the data; it is
    unbiased per state whenever μ covers π_ref's support (any τ, top-p = 1; with top-p < 1 the
    tail outside the nucleus is missed). ``behavior_logps=None`` means μ = π_ref (u = 1). The
    states s_h are μ's, not π_θ's: this is the KL on the data's states.

    ==============  =======  ==============================================
    policy_logps    (B, T)   log π_θ(a_h|s_h)
    ref_logps       (B, T)   log π_ref(a_h|s_h)
    mask            (B, T)   action mask
    behavior_logps  (B, T)   log μ(a_h|s_h), or None for μ = π_ref
    returns         scalar   float32 (float64 for float64 inputs), 0 for an empty mask
    ==============  =======  ==============================================
    """
    m = mask.bool()
    dtype = torch.float64 if policy_logps.dtype == torch.float64 else torch.float32
    zero = torch.zeros((), dtype=dtype, device=policy_logps.device)
    rho = torch.where(m, policy_logps.to(dtype) - ref_logps.to(dtype), zero)
    r = rho.exp()
    terms = r * rho - r + 1  # r log r − r + 1, with log r = ρ
    if behavior_logps is not None:
        log_u = torch.where(m, ref_logps.to(dtype) - behavior_logps.to(dtype), zero)
        terms = terms * log_u.exp()
    return masked_sum(terms, m) / m.sum().clamp(min=1)


# --------------------------------------------------------------------------------------------
# residuals and losses
# --------------------------------------------------------------------------------------------


def soft_bellman_residual(
    policy_logps: Tensor,
    ref_logps: Tensor,
    values: Tensor,
    rewards: Tensor,
    mask: Tensor,
    beta: float,
    bootstrap: Tensor | None = None,
) -> Tensor:
    r"""One-step soft-Bellman residual of DQO's Q parameterisation (method §3).

    .. math::
        \delta_h = V_\phi(s_h) + \beta \log\frac{\pi_\theta(a_h|s_h)}{\pi_{\rm ref}(a_h|s_h)}
                   - r_h - V_\phi(s_{h+1}), \qquad V_\phi(s_{H+1}) = b

    δ ≡ 0 on every transition ⇔ π_θ = π*, V_φ = V* (path consistency). It is the λ = 0 case of
    the λ-residual V(s_h) − G_h, and is computed exactly that way.

    All tensors (B, T) action-aligned except ``bootstrap`` (B,); returns (B, T), 0 off-mask.
    """
    m = mask.bool()
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    log_ratio = torch.where(m, policy_logps - ref_logps, zero)
    shaped = torch.where(m, rewards, zero) - beta * log_ratio
    g = lambda_return(shaped, values, m, 0.0, bootstrap)
    return torch.where(m, values - g, zero)


def squared_residual_losses(
    values: Tensor,
    log_ratio: Tensor,
    rewards: Tensor,
    target: Tensor,
    mask: Tensor,
    beta: float,
    weights: Tensor | None = None,
    num_items: int | float | Tensor | None = None,
    target_for_policy: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    r"""The two halves of the squared soft-Bellman residual, each with its own gradient path.

    .. math::
        \delta = V + \beta\,\rho - r - T,\qquad
        L_\pi = \tfrac{1}{N}\sum w\,\tfrac12\,\delta^2\big|_{V,\,T\ \text{detached}},\qquad
        L_V   = \tfrac{1}{N}\sum w\,\tfrac12\,\delta^2\big|_{\rho\ \text{detached}}

    where ρ = log π_θ/π_ref. The policy loss never reaches V_φ and the value loss never reaches
    π_θ. DQO passes T = T_{h+1} (the next state's target, §4); DRO passes T = 0 on a single action.

    ==================  =======  ===============================================
    argument            shape    meaning
    ==================  =======  ===============================================
    values              (B, T)   V_φ(s_h)
    log_ratio           (B, T)   ρ_h = log π_θ(a_h|s_h) − log π_ref(a_h|s_h)
    rewards             (B, T)   r_h
    target              (B, T)   T used by the value loss (detach it for TD)
    target_for_policy   (B, T)   T used by the policy loss (default: ``target``
                                 detached)
    weights             (B, T)   w_h ≥ 0, treated as constants (default 1)
    num_items           scalar   token count N of the whole optimisation batch
    ==================  =======  ===============================================
    """
    m = mask.bool()
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    v, rho, r, t = (torch.where(m, x, zero) for x in (values, log_ratio, rewards, target))
    t_pi = t.detach() if target_for_policy is None else torch.where(m, target_for_policy, zero)
    w = (
        torch.ones_like(v)
        if weights is None
        else torch.where(m, weights.detach().to(v.dtype), zero)
    )
    delta_pi = v.detach() + beta * rho - r - t_pi
    delta_v = v + beta * rho.detach() - r - t
    policy_loss = token_mean(0.5 * w * delta_pi.square(), m, num_items)
    value_loss = token_mean(0.5 * w * delta_v.square(), m, num_items)
    return policy_loss, value_loss


def dqo_loss(
    policy_logps: Tensor,
    ref_logps: Tensor,
    values: Tensor,
    rewards: Tensor,
    mask: Tensor,
    *,
    beta: float,
    lam: float = 1.0,
    bootstrap: Tensor | None = None,
    behavior_logps: Tensor | None = None,
    is_mode: ISMode = "prefix",
    is_clip: float = 2.0,
    is_normalize: bool = False,
    detach_target: bool = True,
    num_items: int | float | Tensor | None = None,
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    r"""DQO's policy and value losses on a batch of offline trajectories (method §3–§5).

    .. math::
        \rho_h &= \log\pi_\theta(a_h|s_h) - \log\pi_{\rm ref}(a_h|s_h), \qquad
        \tilde r_h = r_h - \beta\rho_h \\
        T_{H+1} &= b,\quad G_h = \tilde r_h + T_{h+1},\quad
        T_h = (1-\lambda)V_\phi(s_h) + \lambda G_h \\
        \delta^\lambda_h &= V_\phi(s_h) + \beta\rho_h - r_h - T_{h+1} \\
        L_\pi(\theta) &= \tfrac1N \textstyle\sum w_h\,\tfrac12(\delta^\lambda_h)^2
             \quad (V_\phi(s_h) \text{ detached; } T \text{ detached if detach\_target}) \\
        L_V(\phi) &= \tfrac1N \textstyle\sum w_h\,\tfrac12(\delta^\lambda_h)^2
             \quad (\rho \text{ detached; } T \text{ detached if detach\_target})

    w_h are the detached importance weights of :func:`importance_weights` and N the token count
    (``num_items`` under gradient accumulation). With ``detach_target=False`` the policy loss also
    differentiates the future log-ratios inside T and the value loss the future values.

    ===============  =======  ==============================================================
    argument         shape    meaning
    ===============  =======  ==============================================================
    policy_logps     (B, T)   log π_θ(a_h|s_h), with grad to θ
    ref_logps        (B, T)   log π_ref(a_h|s_h)  (τ = 1, no grad)
    values           (B, T)   V_φ(s_h), with grad to φ
    rewards          (B, T)   r_h: outcome reward at the last action plus any process reward
    mask             (B, T)   action mask
    bootstrap        (B,)     V_φ(s_{H+1}) for length-cut rows, 0 for terminal rows
                              (treated as a target: detached when ``detach_target``)
    behavior_logps   (B, T)   log μ(a_h|s_h) of the sampler; needed unless is_mode="none"
    ===============  =======  ==============================================================

    Returns ``(policy_loss, value_loss, stats)``; ``stats`` holds detached diagnostics
    (δ mean/abs-mean/std, value error, the mean log-ratio E_μ[ρ] — not a KL: see
    :func:`kl_estimate` —, weight mean/max and clip rate).
    """
    _check_beta(beta)
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must lie in [0, 1], got {lam}")
    m = mask.bool()
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    log_ratio = torch.where(m, policy_logps - ref_logps, zero)
    r = torch.where(m, rewards, zero)

    # T_{h+1} for the value loss: log-ratios are constants there; values keep their grad unless
    # the target is detached.
    vals_v = values.detach() if detach_target else values
    boot_v = None if bootstrap is None else (bootstrap.detach() if detach_target else bootstrap)
    g_v, t_v = _targets(r - beta * log_ratio.detach(), vals_v, m, lam, boot_v)
    if detach_target:
        t_v = t_v.detach()
        t_pi = t_v
    else:
        # T_{h+1} for the policy loss: values are constants there; future log-ratios keep grad.
        boot_pi = None if bootstrap is None else bootstrap.detach()
        t_pi = _targets(r - beta * log_ratio, values.detach(), m, lam, boot_pi)[1]

    if is_mode == "none":
        weights = None
    elif behavior_logps is None:
        raise ValueError(f"is_mode={is_mode!r} needs behavior_logps (log μ stored at sampling)")
    else:
        weights = importance_weights(
            policy_logps, behavior_logps, m, is_mode, is_clip, is_normalize
        )

    policy_loss, value_loss = squared_residual_losses(
        values, log_ratio, r, t_v, m, beta, weights, num_items, target_for_policy=t_pi
    )

    with torch.no_grad():
        n = m.sum().clamp(min=1)
        delta = torch.where(m, values + beta * log_ratio - r - t_v, zero)
        d_mean = masked_sum(delta, m) / n
        stats = {
            "delta_mean": d_mean,
            "delta_abs_mean": masked_sum(delta.abs(), m) / n,
            "delta_std": (masked_sum((delta - d_mean).square(), m) / n).sqrt(),
            "value_error": masked_sum((values - g_v).abs(), m) / n,
            "log_ratio_mean": masked_sum(log_ratio, m) / n,
            "num_tokens": m.sum(),
        }
        if weights is not None:
            stats["is_weight_mean"] = masked_sum(weights, m) / n
            stats["is_weight_max"] = torch.where(m, weights, 0).max()
            stats["is_clip_rate"] = masked_sum((weights >= is_clip * (1 - 1e-6)).float(), m) / n
    return policy_loss, value_loss, stats


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
) -> Tensor:
    r"""DPO's sigmoid loss per pair (a bandit method: one action = the whole response).

    .. math::
        \ell = -\log\sigma\Bigl(\beta\bigl[(\log\pi_\theta(y_c) - \log\pi_{\rm ref}(y_c))
               - (\log\pi_\theta(y_r) - \log\pi_{\rm ref}(y_r))\bigr]\Bigr)

    Inputs are (B,) sequence log-probabilities (sums over action tokens, e.g.
    ``masked_sum(token_logps, mask, dim=1)``); returns (B,).
    """
    _check_beta(beta)
    margin = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    return -F.logsigmoid(beta * margin)


def dro_loss(
    policy_logps: Tensor,
    ref_logps: Tensor,
    values: Tensor,
    rewards: Tensor,
    beta: float,
    *,
    num_items: int | float | Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    r"""DRO's squared loss with a prompt-level value V(x): DQO's residual with one action.

    .. math::
        L = \operatorname{mean}\ \tfrac12\Bigl(r - V(x) - \beta\log\frac{\pi_\theta(y|x)}
            {\pi_{\rm ref}(y|x)}\Bigr)^2

    V(x) is detached in the policy loss, the log-ratio in the value loss. Inputs are (B,)
    (sequence log-probs, prompt values, rewards); returns ``(policy_loss, value_loss)`` scalars.
    ``num_items`` replaces the mean's denominator B (the window's response count under gradient
    accumulation).
    """
    _check_beta(beta)
    one = torch.ones_like(values, dtype=torch.bool).unsqueeze(1)
    return squared_residual_losses(
        values.unsqueeze(1),
        (policy_logps - ref_logps).unsqueeze(1),
        rewards.to(values.dtype).unsqueeze(1),
        torch.zeros_like(values).unsqueeze(1),
        one,
        beta,
        num_items=num_items,
    )
