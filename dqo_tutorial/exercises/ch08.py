r"""Checkers of notebook 08: the end-to-end comparison, read with honest error bars.

- ``check_clustered_accuracy``: sampling accuracy of (N problems × k samples) and its standard
  error clustered by problem, √(Var_i(m_i)/N)
- ``check_paired_difference``: the accuracy difference of two models on the same problems and
  its paired standard error √(Var_i(d_i)/N)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ._core import N_INPUTS, Slip, Verdict, check_function

__all__ = ["check_clustered_accuracy", "check_paired_difference"]


def _as_pair(fn: Callable[..., Any]) -> Callable[..., Tensor]:
    """``fn``'s (value, stderr) — numbers or 0-d tensors, or a (2,) tensor — as a (2,) tensor."""

    def pair(*args: Any) -> Tensor:
        out = fn(*args)
        if isinstance(out, (tuple, list)):
            return torch.tensor([float(x) for x in out], dtype=torch.float64)
        return torch.as_tensor(out, dtype=torch.float64)  # anything else must have shape (2,)

    return pair


def _problem_probs(gen: torch.Generator, i: int, n_problems: int) -> Tensor:
    """Per-problem success probabilities: heterogeneous (easy and hard problems: the reason the
    samples of one problem are correlated), or for some inputs all 1 / all 0 / one value."""
    if i % 10 == 3:
        return torch.ones(n_problems)  # all correct: s.e. 0
    if i % 10 == 8:
        return torch.zeros(n_problems)
    if i % 10 == 9:
        return torch.full((n_problems,), float(torch.rand((), generator=gen)))
    return (torch.rand(n_problems, generator=gen) * 1.4 - 0.2).clamp(0, 1)


def _n_problems(gen: torch.Generator, i: int) -> int:
    return 1 if i in (0, 1) else int(torch.randint(2, 80, (), generator=gen))


def _plug_in_se(x: Tensor, ddof: int = 0) -> Tensor:
    """√(Σ (x_i − x̄)² / (N − ddof) / N): ``ddof`` 1 is the slip (NaN for N = 1)."""
    n = x.numel()
    return (((x - x.mean()) ** 2).sum() / torch.tensor(n - ddof, dtype=x.dtype) / n).sqrt()


def _binomial_se(p: Tensor, n: int) -> Tensor:
    return (p * (1 - p) / n).sqrt()


def _row_means(correct: Tensor) -> Tensor:
    return correct.to(torch.float64).mean(1)


CLUSTERED_ACCURACY_SLIPS = (
    Slip(
        lambda c: (_row_means(c).mean(), _binomial_se(_row_means(c).mean(), c.numel())),
        "the binomial √(p(1 − p)/(N·k)) treats the N·k samples as independent: a problem's k "
        "samples are correlated, cluster by problem (the variance of the m_i)",
    ),
    Slip(
        lambda c: (_row_means(c).mean(), _plug_in_se(_row_means(c), ddof=1)),
        "the (N − 1) sample variance: use the plug-in variance (divide by N; one problem gives 0)",
    ),
)


def check_clustered_accuracy(
    fn: Callable[[Tensor], Any], n: int = N_INPUTS, *, seed: int = 0, quiet: bool = False
) -> Verdict:
    """``fn(correct (N, k) bool) -> (mean, stderr)``: the accuracy over N problems × k samples
    and its standard error clustered by problem, with m_i the mean of problem i's row,
    p = (1/N) Σ m_i and s.e. = √((1/N) Σ (m_i − p)² / N) (plug-in variance: with k = 1 it is
    the binomial √(p(1 − p)/N)); compared with :func:`dqo_tutorial.evaluate.clustered_rate`.
    Inputs: a single problem, k = 1, all-correct and all-wrong tables (s.e. 0), problems of
    very different difficulty. Caught: the binomial √(p(1 − p)/(N k)) that treats the N·k
    samples as independent, the (N − 1) sample variance (NaN for one problem)."""
    from .. import evaluate  # here: evaluation loads transformers

    def inputs(gen: torch.Generator, i: int):
        size = _n_problems(gen, i)
        k = 1 if i % 7 == 2 else int(torch.randint(2, 9, (), generator=gen))
        p = _problem_probs(gen, i, size)
        return (torch.rand(size, k, generator=gen) < p[:, None],), {}

    def reference(correct: Tensor) -> Tensor:
        r = evaluate.clustered_rate(correct.tolist())
        return torch.tensor([r["mean"], r["stderr"]], dtype=torch.float64)

    return check_function(
        "clustered_accuracy",
        _as_pair(fn),
        reference,
        inputs,
        n=n,
        seed=seed,
        quiet=quiet,
        forbidden=(evaluate.clustered_rate, evaluate.paired_difference, evaluate.accuracy_table),
        slips=[s.wrapped(_as_pair) for s in CLUSTERED_ACCURACY_SLIPS],
    )


def _differences(a: Tensor, b: Tensor) -> Tensor:
    return a.to(torch.float64) - b.to(torch.float64)


def _unpaired(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    pa, pb = a.to(torch.float64).mean(), b.to(torch.float64).mean()
    return pa - pb, torch.hypot(_binomial_se(pa, a.numel()), _binomial_se(pb, b.numel()))


_SIGN = "the difference lost its sign: it is A's accuracy minus B's, which can be negative"

PAIRED_DIFFERENCE_SLIPS = (
    Slip(
        _unpaired,
        "hypot(se_A, se_B) is right only for two independent test sets: the same problems make "
        "the outcomes correlated; take the s.e. of the per-problem differences d_i",
    ),
    Slip(
        lambda a, b: (_differences(a, b).mean(), _plug_in_se(_differences(a, b), ddof=1)),
        "the (N − 1) sample variance: use the plug-in variance (divide by N)",
    ),
    Slip(
        lambda a, b: (_differences(a, b).mean().abs(), _plug_in_se(_differences(a, b))),
        _SIGN,
    ),
    Slip(
        lambda a, b: (_differences(a, b).abs().mean(), _plug_in_se(_differences(a, b))),
        _SIGN,
    ),
)


def check_paired_difference(
    fn: Callable[[Tensor, Tensor], Any], n: int = N_INPUTS, *, seed: int = 0, quiet: bool = False
) -> Verdict:
    """``fn(correct_a (N,) bool, correct_b (N,) bool) -> (difference, stderr)``: model A's
    accuracy minus model B's on the same N problems, and the paired standard error from the
    per-problem differences d_i = a_i − b_i: √((1/N) Σ (d_i − d̄)² / N); compared with
    :func:`dqo_tutorial.evaluate.paired_difference`. Inputs: a single problem, identical models
    (s.e. 0), all-correct models, strongly correlated models (B = A with a few problems flipped)
    and independent ones. Caught: hypot(se_A, se_B), which ignores that the two models are
    graded on the same problems; the (N − 1) sample variance; |difference|."""
    from .. import evaluate  # here: evaluation loads transformers

    def inputs(gen: torch.Generator, i: int):
        size = _n_problems(gen, i)
        p = _problem_probs(gen, i, size)
        a = torch.rand(size, generator=gen) < p
        kind = i % 4
        if kind == 0:  # B is A with a few problems flipped: the usual case of two fine-tunes
            b = a ^ (torch.rand(size, generator=gen) < 0.15)
        elif kind == 1:  # the same model twice: difference 0, s.e. 0
            b = a.clone()
        else:  # independent draws on the same problems (still correlated through p)
            b = torch.rand(size, generator=gen) < p
        if i % 10 == 3:
            b = torch.ones(size, dtype=torch.bool)
        return (a, b), {}

    def reference(a: Tensor, b: Tensor) -> Tensor:
        r = evaluate.paired_difference([[x] for x in a.tolist()], [[x] for x in b.tolist()])
        return torch.tensor([r["mean"], r["stderr"]], dtype=torch.float64)

    return check_function(
        "paired_difference",
        _as_pair(fn),
        reference,
        inputs,
        n=n,
        seed=seed,
        quiet=quiet,
        forbidden=(evaluate.clustered_rate, evaluate.paired_difference, evaluate.accuracy_table),
        slips=[s.wrapped(_as_pair) for s in PAIRED_DIFFERENCE_SLIPS],
    )
