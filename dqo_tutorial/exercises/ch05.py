r"""Checkers of notebook 05: λ-returns.

- ``check_n_step_return``: G^{(n)}_h = Σ_{l=h}^{min(h+n−1, H)} r̃_l + V_φ(s_{h+n}) (or b past the
  end), vectorised over the batch
- ``check_lambda_return_traces``: the λ-return with a per-token trace λ_h (the form Retrace's
  truncated traces take), vectorised over the batch

Both exercises ask for code that the notebook does not show: the checkers compare with slow
per-row loops written here from the equations, and fail a function that loops over the rows
of the batch (they count its tensor operations on a small and on a large batch).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

from .. import kernels, naive
from ._core import N_INPUTS, Slip, Verdict, _batch_inputs, _garbage, check_function

__all__ = ["check_n_step_return", "check_lambda_return_traces"]


# --------------------------------------------------------------------------------------------
# independent references: per-row loops straight from the equations
# --------------------------------------------------------------------------------------------


def _columns(mask: Tensor, row: int) -> list[int]:
    return [j for j in range(mask.shape[1]) if bool(mask[row, j])]


def n_step_return_loop(rewards, values, mask, n, bootstrap=None) -> Tensor:
    """G^{(n)}_h = r̃_h + … + r̃_{h+n−1} + V(s_{h+n}); past the row's last action the sum stops
    and the tail is b (0 for a terminal row, V(s_{H+1}) for a cut one). Float64, 0 off-mask."""
    out = torch.zeros(rewards.shape, dtype=torch.float64)
    for i in range(rewards.shape[0]):
        cols = _columns(mask, i)
        b = 0.0 if bootstrap is None else float(bootstrap[i])
        for k, j in enumerate(cols):
            ahead = cols[k : k + n]
            g = sum(float(rewards[i, c]) for c in ahead)
            g += float(values[i, cols[k + n]]) if k + n < len(cols) else b
            out[i, j] = g
    return out


def lambda_return_traces_loop(rewards, values, mask, lams, bootstrap=None) -> Tensor:
    """G_H = r̃_H + b; G_h = r̃_h + (1 − λ_{h+1}) V(s_{h+1}) + λ_{h+1} G_{h+1}, with λ_{h+1} read
    at the column of action h+1. Float64, 0 off-mask."""
    out = torch.zeros(rewards.shape, dtype=torch.float64)
    for i in range(rewards.shape[0]):
        cols = _columns(mask, i)
        g_next = None
        for k in reversed(range(len(cols))):
            j = cols[k]
            if g_next is None:
                target = 0.0 if bootstrap is None else float(bootstrap[i])
            else:
                nj = cols[k + 1]
                lam = float(lams[i, nj])
                target = (1 - lam) * float(values[i, nj]) + lam * g_next
            g_next = float(rewards[i, j]) + target
            out[i, j] = g_next
    return out


# --------------------------------------------------------------------------------------------
# "no Python loop over rows": count the tensor operations
# --------------------------------------------------------------------------------------------


class _OpCount(TorchFunctionMode):
    """Counts every torch function, tensor method and indexing while active."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))


def _operations(fn: Callable[..., Tensor], args: tuple) -> int | None:
    counter = _OpCount()
    try:
        with counter:
            fn(*args)
    except Exception:
        return None  # correctness was checked already; a crash here is not this test's business
    return counter.n


def _loops_over_rows(fn: Callable[..., Tensor], make_args: Callable[[int], tuple]) -> bool:
    """True when ``fn`` runs many more tensor operations on 48 rows than on 3 of the same width:
    a loop over rows (per-row work grows with B); a loop over columns does not."""
    small, large = _operations(fn, make_args(3)), _operations(fn, make_args(48))
    if small is None or large is None:
        return False
    return large > 2 * small + 20


def _finish(verdict: Verdict, fn, make_args, name: str, quiet: bool) -> Verdict:
    if verdict.passed and _loops_over_rows(fn, make_args):
        verdict = dataclasses.replace(
            verdict,
            status="fail",
            message=f"✗ {name} gives the right numbers but loops over the rows of the batch "
            "(its tensor operations grow with the batch size): vectorise over rows; a loop over "
            "the columns (time) is fine",
        )
    if not quiet:
        print(verdict.message)
    return verdict


def _fixed_batch(rows: int, width: int = 8) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(rows)
    mask = torch.zeros(rows, width, dtype=torch.bool)
    for i in range(rows):  # a mix of left and right padding, lengths 1 … width−1
        length = 1 + i % (width - 1)
        start = width - length if i % 2 else 1
        mask[i, start : start + length] = True
    rewards = torch.randn(rows, width, generator=gen, dtype=torch.float64)
    values = torch.randn(rows, width, generator=gen, dtype=torch.float64)
    bootstrap = torch.where(torch.arange(rows) % 3 == 0, 0.5, 0.0).to(torch.float64)
    return rewards, values, mask, bootstrap


# --------------------------------------------------------------------------------------------
# the checkers
# --------------------------------------------------------------------------------------------


N_STEP_RETURN_SLIPS = (
    Slip(
        lambda rewards, values, mask, n, bootstrap=None: n_step_return_loop(
            rewards, values, mask, n, None
        ),
        "b is forgotten: when the response ends first, a cut row's return ends in its bootstrap "
        "b = V(s_{H+1}), not 0",
    ),
)

LAMBDA_RETURN_TRACES_SLIPS = (
    Slip(
        lambda rewards, values, mask, lams, bootstrap=None: lambda_return_traces_loop(
            rewards, values, mask, torch.cat([lams[:, :1], lams[:, :-1]], 1), bootstrap
        ),
        "the trace of action h used where λ_{h+1} belongs: the trace in the column of action "
        "h + 1 weighs G_{h+1}",
    ),
)


def check_n_step_return(
    fn: Callable[..., Tensor], n: int = N_INPUTS, *, seed: int = 0, quiet: bool = False
) -> Verdict:
    """``fn(rewards, values, mask, n, bootstrap=None) -> (B, T)``: the n-step return
    G^{(n)}_h = Σ_{l=h}^{min(h+n−1, H)} r̃_l + V_φ(s_{h+n}) when h + n ≤ H, else + b, on action
    columns, 0 elsewhere; compared with a per-row loop.

    Inputs: left- and right-padded rows, an all-masked batch, empty rows, cut rows (b ≠ 0), junk
    off the mask, n from 1 to beyond T. Fails a function that loops over rows."""

    def inputs(gen: torch.Generator, i: int):
        mask, _, _, values, rewards, bootstrap = _batch_inputs(gen, i)
        steps = 1 if i == 0 else int(torch.randint(1, mask.shape[1] + 3, (), generator=gen))
        return (rewards, values, mask, steps, bootstrap), {}

    verdict = check_function(
        "n_step_return",
        fn,
        n_step_return_loop,
        inputs,
        n=n,
        seed=seed,
        quiet=True,
        forbidden=(kernels.lambda_return, naive.lambda_return),
        slips=N_STEP_RETURN_SLIPS,
    )

    def make_args(rows: int) -> tuple:
        rewards, values, mask, bootstrap = _fixed_batch(rows)
        return rewards, values, mask, 3, bootstrap

    return _finish(verdict, fn, make_args, "n_step_return", quiet)


def check_lambda_return_traces(
    fn: Callable[..., Tensor], n: int = N_INPUTS, *, seed: int = 0, quiet: bool = False
) -> Verdict:
    """``fn(rewards, values, mask, lams, bootstrap=None) -> (B, T)``: G_H = r̃_H + b,
    G_h = r̃_h + (1 − λ_{h+1}) V_φ(s_{h+1}) + λ_{h+1} G_{h+1}, where ``lams`` (B, T) holds the
    trace λ_{h+1} at the column of action h+1 (the first action's entry is not used); 0
    off-mask; compared with a per-row loop.

    Inputs: traces in [0, 1] with exact 0s and 1s, junk (> 1) off the mask, left and right
    padding, all-masked batches, empty rows, cut rows. Fails a function that loops over rows."""

    def inputs(gen: torch.Generator, i: int):
        mask, _, _, values, rewards, bootstrap = _batch_inputs(gen, i)
        lams = torch.rand(mask.shape, generator=gen, dtype=torch.float64)
        lams = torch.where(lams < 0.15, 0.0, torch.where(lams > 0.85, 1.0, lams))
        if i % 4 == 2:  # one λ for every token: the ordinary λ-return
            lams = torch.full(mask.shape, float(torch.rand((), generator=gen)), dtype=torch.float64)
        lams = torch.where(mask, lams, 5.0 + _garbage(lams, mask, gen).abs())  # junk off-mask
        return (rewards, values, mask, lams, bootstrap), {}

    verdict = check_function(
        "lambda_return_traces",
        fn,
        lambda_return_traces_loop,
        inputs,
        n=n,
        seed=seed,
        quiet=True,
        forbidden=(kernels.lambda_return, naive.lambda_return),
        slips=LAMBDA_RETURN_TRACES_SLIPS,
    )

    def make_args(rows: int) -> tuple:
        rewards, values, mask, bootstrap = _fixed_batch(rows)
        lams = torch.rand(
            mask.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64
        )
        return rewards, values, mask, lams, bootstrap

    return _finish(verdict, fn, make_args, "lambda_return_traces", quiet)
