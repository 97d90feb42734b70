r"""Checkers of notebook 06: importance sampling.

- ``check_nucleus_logprobs``: log μ(a|s) of sampling π_ref at temperature τ *with top-p*
  (the nucleus renormalised, −inf outside it)
- ``check_normalized_prefix_weights``: self-normalised truncated prefix weights, in log space
- ``check_effective_sample_size``: (Σw)²/Σw² per row from log-weights that would overflow exp

The notebook shows the tempered log-probs, the prefix weights and an ESS of finite weights;
these exercises are the next step of each, and the references below are written from the
equations (or are the package kernel, which a submission may not call).
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
    _garbage,
    _shape,
    check_function,
    edge_case_mask,
)

__all__ = [
    "check_nucleus_logprobs",
    "check_normalized_prefix_weights",
    "check_effective_sample_size",
]


# --------------------------------------------------------------------------------------------
# 6.1 the behaviour log-probability of temperature + top-p sampling
# --------------------------------------------------------------------------------------------


def nucleus_logprobs_loop(
    logits: Tensor, actions: Tensor, tau: float, top_p: float, crossing: bool = True
) -> Tensor:
    """Row by row: p = softmax(z/τ); walk the tokens from the most probable down and keep a
    token while the mass of the tokens kept before it is < top_p (the nucleus: the smallest
    set whose mass reaches top_p, as the sampler's ``TopPLogitsWarper`` keeps it; top_p = 1
    keeps all); log μ(a) = z_a/τ − logsumexp over the nucleus, −inf outside it. ``crossing``
    False is the slip of keeping a token only while the mass *with* it is ≤ top_p (the most
    probable token always kept)."""
    out = torch.empty(logits.shape[0], dtype=torch.float64)
    for i in range(logits.shape[0]):
        z = logits[i].double() / tau
        p = torch.softmax(z, dim=-1).tolist()
        order = sorted(range(len(p)), key=lambda k: -p[k])
        keep, above = [], 0.0
        for k in order:
            if top_p >= 1.0 or not keep or (above < top_p if crossing else above + p[k] <= top_p):
                keep.append(k)
            above += p[k]
        a = int(actions[i])
        if a in keep:
            out[i] = float(z[a] - torch.logsumexp(z[keep], dim=0))
        else:
            out[i] = -math.inf
    return out


def _sampler_warpers() -> tuple:
    try:
        from transformers import TopPLogitsWarper
    except Exception:  # pragma: no cover - transformers is a dependency of the package
        return ()
    return (TopPLogitsWarper.__call__,)


NUCLEUS_LOGPROBS_SLIPS = (
    Slip(
        lambda logits, actions, tau, top_p: nucleus_logprobs_loop(logits, actions, tau, 1.0),
        "top_p is ignored: this is the tempered π_ref; cut it to the nucleus and renormalise",
    ),
    Slip(
        lambda logits, actions, tau, top_p: nucleus_logprobs_loop(
            logits, actions, tau, top_p, crossing=False
        ),
        "the token that crosses top_p is dropped: a token is in when the tokens more probable "
        "than it hold < top_p (the nucleus is the smallest set whose mass *reaches* top_p)",
    ),
)


def check_nucleus_logprobs(
    fn: Callable[[Tensor, Tensor, float, float], Tensor],
    n: int = N_INPUTS,
    *,
    seed: int = 0,
    quiet: bool = False,
) -> Verdict:
    """``fn(logits (N, K), actions (N,), tau, top_p) -> (N,)``: log μ(a|s) when π_ref's logits
    z are divided by τ and then cut to the top-p nucleus (method §5): the tokens taken from the
    most probable down until their mass reaches top_p (a token is in if the tokens more
    probable than it hold < top_p), renormalised; −inf for an action outside the nucleus.

    Inputs: top_p = 1 (plain tempering), logits in the hundreds (exp overflows), actions that
    are the most probable token (always in) or the least probable (usually out)."""

    def inputs(gen: torch.Generator, i: int):
        rows = int(torch.randint(1, 9, (), generator=gen))
        k = int(torch.randint(2, 30, (), generator=gen))
        logits = 3 * torch.randn(rows, k, generator=gen, dtype=torch.float64)
        if i % 4 == 3:
            logits = 100 * logits  # exp(z/τ) overflows float64
        actions = torch.randint(0, k, (rows,), generator=gen)
        if i % 3 == 1:
            actions[0] = int(logits[0].argmax())
        if i % 3 == 2:
            actions[0] = int(logits[0].argmin())
        tau = 1.0 if i % 5 == 0 else float(torch.empty(()).uniform_(0.3, 2.0, generator=gen))
        top_p = 1.0 if i % 6 == 0 else float(torch.empty(()).uniform_(0.3, 0.95, generator=gen))
        return (logits, actions, tau, top_p), {}

    return check_function(
        "nucleus_logprobs",
        fn,
        nucleus_logprobs_loop,
        inputs,
        n=n,
        seed=seed,
        quiet=quiet,
        forbidden=(kernels.gather_logprobs, *_sampler_warpers()),
        slips=NUCLEUS_LOGPROBS_SLIPS,
    )


# --------------------------------------------------------------------------------------------
# 6.2 self-normalised prefix weights
# --------------------------------------------------------------------------------------------


def check_normalized_prefix_weights(
    fn: Callable[..., Tensor], n: int = N_INPUTS, *, seed: int = 0, quiet: bool = False
) -> Verdict:
    """``fn(logp_policy, logp_behavior, mask, clip) -> (B, T)``: the truncated prefix weights
    u_h = min(c, exp Σ_{l<h} Δ_l), Δ = log π_θ − log μ, divided by their mean over **all the
    batch's action tokens** (self-normalised IS: the weights average to 1 over the batch), 0
    off-mask; compared with :func:`dqo_tutorial.kernels.importance_weights` (``mode="prefix"``,
    ``normalize=True``).

    Inputs: junk off the mask, left/right padding, all-masked batches (all 0, not NaN), empty
    rows, log-ratio sums in the thousands with ``clip = math.inf``: exp of the sums overflows,
    but the normalised weights are finite, so the division must happen in log space."""

    def inputs(gen: torch.Generator, i: int):
        mask, pol, beh, _, _, _ = _batch_inputs(gen, i)
        if i % 4 == 3:
            beh = torch.where(mask, beh * 100, beh)  # Σ Δ of thousands: exp overflows
        clip = math.inf if i % 2 == 1 else float(torch.empty(()).uniform_(0.5, 5.0, generator=gen))
        return (pol, beh, mask, clip), {}

    def reference(pol, beh, mask, clip):
        return kernels.importance_weights(pol, beh, mask, mode="prefix", clip=clip, normalize=True)

    return check_function(
        "normalized_prefix_weights",
        fn,
        reference,
        inputs,
        n=n,
        atol=1e-6,
        rtol=1e-6,
        seed=seed,
        quiet=quiet,
        forbidden=(kernels.importance_weights, naive.importance_weights),
    )


# --------------------------------------------------------------------------------------------
# 6.3 the effective sample size, from log-weights
# --------------------------------------------------------------------------------------------


def ess_loop(log_w: Tensor, mask: Tensor) -> Tensor:
    """Per row, (Σ w)² / Σ w² over the row's action tokens with w = exp(log w − max log w)
    (the ESS does not change when every weight is scaled); 0 for an empty row."""
    out = torch.zeros(log_w.shape[0], dtype=torch.float64)
    for i in range(log_w.shape[0]):
        xs = [float(log_w[i, j]) for j in range(log_w.shape[1]) if bool(mask[i, j])]
        if not xs:
            continue
        top = max(xs)
        if top == -math.inf:  # every weight is 0: no effective sample
            continue
        w = [math.exp(x - top) for x in xs]
        out[i] = sum(w) ** 2 / sum(x * x for x in w)
    return out


def _ess_by_exp(log_w: Tensor, mask: Tensor) -> Tensor:
    w = torch.where(mask, log_w.exp(), torch.zeros((), dtype=log_w.dtype))
    return w.sum(1) ** 2 / (w**2).sum(1)


def _ess_in_logs(log_w: Tensor, mask: Tensor) -> Tensor:
    x = torch.where(mask, log_w, -math.inf)
    return torch.exp(2 * torch.logsumexp(x, 1) - torch.logsumexp(2 * x, 1))


EFFECTIVE_SAMPLE_SIZE_SLIPS = (
    Slip(
        _ess_by_exp,
        "the weights exponentiated: e^{log w} overflows (inf²/inf = NaN); compute "
        "2·logsumexp(log w) − logsumexp(2 log w) and exponentiate that",
    ),
    Slip(
        _ess_in_logs,
        "an empty row, or one whose weights are all 0, gives NaN: its ESS is 0",
    ),
)


def check_effective_sample_size(
    fn: Callable[[Tensor, Tensor], Tensor],
    n: int = N_INPUTS,
    *,
    seed: int = 0,
    quiet: bool = False,
) -> Verdict:
    """``fn(log_w (B, T), mask) -> (B,)``: the effective sample size (Σw)²/Σw² of each row's
    weights w = exp(log w) over its action tokens; 0 for an empty row. Some log-weights are in
    the thousands (exp overflows to inf, and inf²/inf is NaN) or −inf (a weight of exactly 0);
    junk off the mask."""

    def inputs(gen: torch.Generator, i: int):
        b, t = _shape(gen, i)
        mask = edge_case_mask(gen, i, b, t)
        log_w = torch.randn(b, t, generator=gen, dtype=torch.float64)
        if i % 4 == 3:
            log_w = 1000 * log_w  # exp overflows
        if i % 5 == 3:
            log_w = torch.where(torch.rand(b, t, generator=gen) < 0.3, -math.inf, log_w)
        return (_garbage(log_w, mask, gen), mask), {}

    return check_function(
        "effective_sample_size",
        fn,
        ess_loop,
        inputs,
        n=n,
        seed=seed,
        quiet=quiet,
        slips=EFFECTIVE_SAMPLE_SIZE_SLIPS,
    )
