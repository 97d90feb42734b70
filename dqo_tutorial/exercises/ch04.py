r"""Checkers of notebook 04: the soft Bellman residual and DQO's losses.

- ``check_one_step_residual``: δ_h = V(s_h) + β ρ_h − r_h − V(s_{h+1}), V(s_{H+1}) = b, batched
- ``check_policy_loss``: token mean of ½ (V + β ρ − r − T)², gradient to ρ only
- ``check_value_loss``: token mean of ½ (V + β ρ − r − T)², gradient to V only

The two loss checkers compare the loss and, by autograd, its gradient with respect to each of
``log_ratio``, ``values`` and ``target``: the two losses have the same value and differ only in
where their gradient goes.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from .. import kernels, naive
from ._core import N_INPUTS, Slip, Verdict, _batch_inputs, _beta, _garbage, check_function

__all__ = ["check_one_step_residual", "check_policy_loss", "check_value_loss"]


def _nan_off_mask(mask: Tensor, *xs: Tensor) -> tuple[Tensor, ...]:
    return tuple(torch.where(mask, x, math.nan) for x in xs)


def _terminal(pol, ref, values, rewards, mask, beta, bootstrap=None) -> Tensor:
    return kernels.soft_bellman_residual(pol, ref, values, rewards, mask, beta, None)


def _bootstrap_everywhere(pol, ref, values, rewards, mask, beta, bootstrap=None) -> Tensor:
    d = _terminal(pol, ref, values, rewards, mask, beta)
    return d if bootstrap is None else torch.where(mask, d - bootstrap[:, None], 0.0)


def _shifted_residual(pol, ref, values, rewards, mask, beta, bootstrap, *, masked, last_column):
    """δ with V(s_{h+1}) read from the next column: ``masked(x, mask)`` zeroes the pads (or
    multiplies by the mask); ``last_column`` puts b in the tensor's last column instead of
    after the row's last action."""
    nxt_action = torch.cat([mask[:, 1:], torch.zeros_like(mask[:, :1])], 1) & mask
    v = masked(values, mask)
    v_next = masked(torch.cat([v[:, 1:], torch.zeros_like(v[:, :1])], 1), nxt_action)
    b = torch.zeros(len(v), dtype=v.dtype) if bootstrap is None else bootstrap
    if last_column:
        v_next[:, -1] = b
    else:
        v_next = v_next + masked(b[:, None].expand_as(v), mask & ~nxt_action)
    rho = masked(pol - ref, mask)
    return masked(v + beta * rho - masked(rewards, mask) - v_next, mask)


def _zeroed(x: Tensor, mask: Tensor) -> Tensor:
    return torch.where(mask, x, torch.zeros((), dtype=x.dtype))


ONE_STEP_RESIDUAL_SLIPS = (
    Slip(
        _terminal,
        "b is ignored: every row is treated as terminal; after a cut row's last action "
        "V(s_{H+1}) = bootstrap[b]",
    ),
    Slip(
        _bootstrap_everywhere,
        "b is subtracted at every column: it is V(s_{H+1}), the next value of the row's last "
        "action only",
    ),
    Slip(
        lambda *a: _shifted_residual(*a, masked=_zeroed, last_column=True),
        "b in the tensor's last column: with right padding the row's last action is earlier; "
        "put b after the row's last action",
    ),
    Slip(
        lambda *a: _shifted_residual(*a, masked=lambda x, m: x * m, last_column=False),
        "masking by multiplication: NaN off the mask survives (NaN · 0 = NaN); zero the inputs "
        "with torch.where before any arithmetic",
    ),
)


def check_one_step_residual(
    fn: Callable[..., Tensor], n: int = N_INPUTS, *, seed: int = 0, quiet: bool = False
) -> Verdict:
    """``fn(policy_logps, ref_logps, values, rewards, mask, beta, bootstrap) -> (B, T)``:
    δ_h = V(s_h) + β(log π_θ − log π_ref) − r_h − V(s_{h+1}), where V(s_{h+1}) is the next
    column's value while that column is an action of the row and the row's ``bootstrap[b]``
    after its last action (0 when ``bootstrap`` is None); 0 off-mask. Compared with
    :func:`dqo_tutorial.kernels.soft_bellman_residual`.

    Masks are left- or right-padded; some rows are empty, some batches all-masked; some rows
    are cut (b ≠ 0), the others terminal (b = 0); off-mask entries hold junk, sometimes NaN.
    Wrong answers it catches: b ignored (every row treated as terminal), b added on every
    column or on the last column of the tensor instead of the row's last action, the next
    value read across the end of a left-padded row, NaN or junk leaking from off the mask;
    calling the package's residual or λ-return fails.
    """

    def inputs(gen: torch.Generator, i: int):
        mask, pol, ref, values, rewards, bootstrap = _batch_inputs(gen, i)
        if i % 4 == 3:
            pol, ref, values, rewards = _nan_off_mask(mask, pol, ref, values, rewards)
        return (pol, ref, values, rewards, mask, _beta(gen), bootstrap), {}

    return check_function(
        "one_step_residual",
        fn,
        kernels.soft_bellman_residual,
        inputs,
        n=n,
        seed=seed,
        quiet=quiet,
        forbidden=(
            kernels.soft_bellman_residual,
            naive.soft_bellman_residual,
            kernels.lambda_return,
            naive.lambda_return,
            kernels.dqo_loss,
        ),
        slips=ONE_STEP_RESIDUAL_SLIPS,
    )


# --------------------------------------------------------------------------------------------
# the two losses: value and gradients
# --------------------------------------------------------------------------------------------

_LOSS_ARGS = ("values", "log_ratio", "rewards", "target", "mask", "beta")


def _loss_inputs(order: Sequence[str]):
    """Inputs of a loss checker, positional in ``order`` (a permutation of ``_LOSS_ARGS``):
    the batch edge cases of ``_batch_inputs``, a junk-filled target, NaN off the mask in every
    fourth input."""

    def inputs(gen: torch.Generator, i: int):
        mask, pol, ref, values, rewards, _ = _batch_inputs(gen, i)
        target = _garbage(torch.randn(mask.shape, generator=gen, dtype=torch.float64), mask, gen)
        log_ratio = pol - ref
        if i % 4 == 3:
            values, log_ratio, rewards, target = _nan_off_mask(
                mask, values, log_ratio, rewards, target
            )
        named = {
            "values": values,
            "log_ratio": log_ratio,
            "rewards": rewards,
            "target": target,
            "mask": mask,
            "beta": _beta(gen),
        }
        return tuple(named[k] for k in order), {}

    return inputs


_GRAD_ARGS = ("log_ratio", "values", "target")


def _gradients_of(fn: Callable[..., Any], order: Sequence[str]) -> Callable[..., Any]:
    """A function of the same inputs returning the (3, B, T) stack of ∂fn/∂log_ratio,
    ∂fn/∂values and ∂fn/∂target, by autograd; an input the result does not depend on has
    gradient 0."""
    positions = [list(order).index(name) for name in _GRAD_ARGS]

    def grads(*args):
        args = list(args)
        leaves = []
        for k in positions:
            args[k] = args[k].detach().clone().requires_grad_(True)
            leaves.append(args[k])
        loss = fn(*args)
        if not isinstance(loss, Tensor) or not loss.requires_grad:
            return torch.stack([torch.zeros_like(x) for x in leaves])
        if loss.numel() != 1:
            raise ValueError(f"the loss must be a scalar, got shape {tuple(loss.shape)}")
        found = torch.autograd.grad(loss.sum(), leaves, allow_unused=True)
        return torch.stack([torch.zeros_like(x) if g is None else g for x, g in zip(leaves, found)])

    return grads


def _loss_slip(order: Sequence[str], detached: set[str], *, zero_first=True, count="clamped"):
    """A token-mean loss ½ δ² with one slip, its inputs positional in ``order``: the inputs in
    ``detached`` detached; ``zero_first`` False zeroes the pads only after squaring; ``count``
    "clamped" divides by max(1, N), "unclamped" by N, "mean" takes the mean over the mask
    (NaN when it is empty), "all" the mean over every column."""

    def loss(*args):
        x = dict(zip(order, args))
        mask, beta = x["mask"], x["beta"]
        t = {k: x[k].detach() if k in detached else x[k] for k in _GRAD_ARGS + ("rewards",)}
        if zero_first:
            t = {k: torch.where(mask, v, torch.zeros((), dtype=v.dtype)) for k, v in t.items()}
        sq = 0.5 * (t["values"] + beta * t["log_ratio"] - t["rewards"] - t["target"]) ** 2
        if not zero_first:
            sq = torch.where(mask, sq, torch.zeros((), dtype=sq.dtype))
        if count == "mean":
            return sq[mask].mean()
        if count == "all":
            return sq.mean()
        return sq.sum() / (mask.sum() if count == "unclamped" else mask.sum().clamp(min=1))

    return loss


_NOT_ZEROED_FIRST = (
    "torch.where only after squaring: the loss is right, but NaN off the mask reaches the "
    "gradient (autograd multiplies the 0 it routes there by NaN); zero the inputs first"
)
_EVERY_COLUMN = "a mean over every column (÷ B·T): divide by the number N of action tokens"


def _loss_slips(order: Sequence[str], keep: str) -> tuple[Slip, ...]:
    """The slips of 4.2 (``keep`` = "log_ratio") or 4.3 (``keep`` = "values"): the argument
    the gradient must reach is ``keep``; the other of ρ and V, and T, are detached."""
    other = ({"values", "log_ratio"} - {keep}).pop()
    right = {other, "target"}
    name = {"values": "V", "log_ratio": "ρ"}[other]
    count_slip = (
        Slip(
            _loss_slip(order, right, count="unclamped"),
            "the token count is not clamped: an all-masked batch gives 0/0 = NaN; divide by "
            "max(1, N)",
        )
        if keep == "values"
        else Slip(
            _loss_slip(order, right, count="mean"),
            "a plain mean over the action tokens: an all-masked batch gives NaN; divide the sum "
            "by max(1, N)",
        )
    )
    return (
        Slip(
            _loss_slip(order, set()),
            f"neither {name} nor T is detached: their gradients must be 0 here",
        ),
        Slip(_loss_slip(order, {"target"}), f"{name} is not detached: its gradient must be 0"),
        Slip(_loss_slip(order, {other}), "the target T is not detached: its gradient must be 0"),
        Slip(_loss_slip(order, right, zero_first=False), _NOT_ZEROED_FIRST),
        count_slip,
        Slip(_loss_slip(order, right, count="all"), _EVERY_COLUMN),
    )


def _name_the_gradient(verdict: Verdict) -> Verdict:
    """Say which input's gradient a failure of the (3, B, T) gradient stack is about."""
    found = re.search(r"at index \((\d+), ", verdict.message)
    if verdict.status != "fail" or " differs " not in verdict.message or found is None:
        return verdict
    arg = _GRAD_ARGS[int(found.group(1))]
    message = verdict.message.replace(found.group(0), "at index (", 1)
    head, tail = message.split(" differs ", 1)
    return dataclasses.replace(
        verdict, message=f"{head}: its gradient with respect to `{arg}` differs {tail}"
    )


def _check_loss_and_gradients(
    name: str,
    fn: Callable[..., Any],
    reference: Callable[..., Tensor],
    order: Sequence[str],
    *,
    n: int,
    seed: int,
    quiet: bool,
    forbidden: Sequence[Callable[..., Any]],
    slips: Sequence[Slip] = (),
) -> Verdict:
    """The loss on ``n`` inputs first, then, on the same inputs (the same seed), its gradients
    with respect to ``log_ratio``, ``values`` and ``target``; the first failure is the
    verdict."""
    inputs = _loss_inputs(order)
    verdict = check_function(
        name, fn, reference, inputs, n=n, seed=seed, quiet=True, forbidden=forbidden, slips=slips
    )
    if verdict.passed:
        verdict = check_function(
            name,
            _gradients_of(fn, order),
            _gradients_of(reference, order),
            inputs,
            n=n,
            seed=seed,
            quiet=True,
            forbidden=forbidden,
            slips=[s.wrapped(lambda f: _gradients_of(f, order)) for s in slips],
        )
        if verdict.passed:
            verdict = Verdict(
                name,
                "pass",
                f"✓ {name} matches the reference on {n} random inputs, its gradients "
                "with respect to log_ratio, values and target included",
            )
        else:
            verdict = _name_the_gradient(verdict)
    if not quiet:
        print(verdict.message)
    return verdict


def check_policy_loss(
    fn: Callable[..., Tensor], n: int = N_INPUTS, *, seed: int = 0, quiet: bool = False
) -> Verdict:
    r"""``fn(log_ratio, values, rewards, target, mask, beta) -> scalar``: DQO's policy loss

    .. math:: L_\pi = \frac1N\sum_{h\in\text{mask}} \tfrac12\bigl(\bar V_h + \beta\rho_h - r_h
              - \bar T_h\bigr)^2,\qquad N = \max(1, \textstyle\sum \text{mask})

    with V and T detached (bars): compared, value and gradients, with the policy loss of
    :func:`dqo_tutorial.kernels.squared_residual_losses`. The gradient must be βδ_h/N with
    respect to ``log_ratio`` on the mask, 0 off it, and 0 with respect to ``values`` and
    ``target``. An all-masked batch gives 0 (and zero gradients); off-mask entries hold junk,
    sometimes NaN, which must reach neither the loss nor its gradient (``torch.where`` on the
    inputs, before any arithmetic). Wrong answers it catches: V or T not detached, the
    gradient divided by B·T or by the row count, a plain mean (NaN on an all-masked batch),
    ``torch.where`` only after squaring (NaN gradient); calling the package's losses fails.
    """

    def reference(log_ratio, values, rewards, target, mask, beta):
        return kernels.squared_residual_losses(values, log_ratio, rewards, target, mask, beta)[0]

    order = ("log_ratio", "values", "rewards", "target", "mask", "beta")
    return _check_loss_and_gradients(
        "policy_loss",
        fn,
        reference,
        order,
        n=n,
        seed=seed,
        quiet=quiet,
        forbidden=(kernels.squared_residual_losses, kernels.dqo_loss, kernels.token_mean),
        slips=_loss_slips(order, "log_ratio"),
    )


def check_value_loss(
    fn: Callable[..., Tensor], n: int = N_INPUTS, *, seed: int = 0, quiet: bool = False
) -> Verdict:
    r"""``fn(values, log_ratio, rewards, target, mask, beta) -> scalar``: DQO's value loss

    .. math:: L_V = \frac1N\sum_{h\in\text{mask}} \tfrac12\bigl(V_h + \beta\bar\rho_h - r_h
              - \bar T_h\bigr)^2,\qquad N = \max(1, \textstyle\sum \text{mask})

    with ρ and T detached (bars): compared, value and gradients, with the value loss of
    :func:`dqo_tutorial.kernels.squared_residual_losses`. The gradient must be δ_h/N with
    respect to ``values`` on the mask and 0 with respect to ``log_ratio`` and ``target``. An
    all-masked batch gives 0, not NaN (the token count is clamped to ≥ 1); off-mask junk
    (sometimes NaN) must reach neither the loss nor its gradient. Wrong answers it catches:
    the count not clamped (0/0 = NaN), ρ or T not detached, a mean over every column,
    ``torch.where`` only after squaring (NaN gradient); calling the package's losses fails.
    """

    def reference(values, log_ratio, rewards, target, mask, beta):
        # the kernel leaves T's gradient to the caller (dqo_loss detaches it): a label here
        t = target.detach()
        return kernels.squared_residual_losses(values, log_ratio, rewards, t, mask, beta)[1]

    return _check_loss_and_gradients(
        "value_loss",
        fn,
        reference,
        _LOSS_ARGS,
        n=n,
        seed=seed,
        quiet=quiet,
        forbidden=(kernels.squared_residual_losses, kernels.dqo_loss, kernels.token_mean),
        slips=_loss_slips(_LOSS_ARGS, "values"),
    )
