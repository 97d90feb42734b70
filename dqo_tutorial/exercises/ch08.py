r"""Checkers of notebook 08: the end-to-end comparison.

- ``check_accuracy_with_stderr``: accuracy p and its standard error √(p(1−p)/N)
- ``check_dpo_loss``: −log σ(β[(log-ratio chosen) − (log-ratio rejected)])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .. import kernels
from ._core import N_INPUTS, Verdict, _beta, check_function

__all__ = ["check_accuracy_with_stderr", "check_dpo_loss"]


def check_accuracy_with_stderr(
    fn: Callable[[Tensor], Any], n: int = N_INPUTS, *, seed: int = 0, quiet: bool = False
) -> Verdict:
    """``fn(correct (N,) bool) -> (mean, stderr)``: the accuracy p and its binomial standard
    error √(p(1 − p)/N), as the results table reports them (:func:`dqo_tutorial.evaluate.
    accuracy_table`)."""
    from .. import evaluate  # here: evaluation loads transformers

    def inputs(gen: torch.Generator, i: int):
        size = 1 if i == 0 else int(torch.randint(2, 200, (), generator=gen))
        p = float(torch.rand((), generator=gen))
        return (torch.rand(size, generator=gen) < p,), {}

    def reference(correct: Tensor) -> Tensor:
        records = [
            {"decoding": "greedy", "correct_strict": c, "correct_flexible": c, "invalid": False}
            for c in correct.tolist()
        ]
        r = evaluate.accuracy_table(records)["greedy"]["strict"]
        return torch.tensor([r["mean"], r["stderr"]], dtype=torch.float64)

    def as_pair(correct: Tensor) -> Tensor:
        out = fn(correct)
        if isinstance(out, (tuple, list)):  # (mean, stderr) as numbers or 0-d tensors
            return torch.tensor([float(x) for x in out], dtype=torch.float64)
        return torch.as_tensor(out, dtype=torch.float64)  # anything else must have shape (2,)

    return check_function(
        "accuracy_with_stderr",
        as_pair,
        reference,
        inputs,
        n=n,
        seed=seed,
        quiet=quiet,
        forbidden=(evaluate.accuracy_table,),
    )


def check_dpo_loss(
    fn: Callable[..., Tensor], n: int = N_INPUTS, *, seed: int = 0, quiet: bool = False
) -> Verdict:
    """``fn(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta) -> (B,)``: the
    per-pair DPO loss −log σ(β[(log π_θ(y_c) − log π_ref(y_c)) − (log π_θ(y_r) − log π_ref(y_r))]),
    compared with :func:`dqo_tutorial.kernels.dpo_loss`. Some margins are in the hundreds."""

    def inputs(gen: torch.Generator, i: int):
        b = int(torch.randint(1, 9, (), generator=gen))
        scale = 2000.0 if i % 4 == 3 else 20.0  # σ of a large negative margin underflows
        logps = [-scale * torch.rand(b, generator=gen, dtype=torch.float64) for _ in range(4)]
        return (*logps, _beta(gen)), {}

    return check_function(
        "dpo_loss",
        fn,
        kernels.dpo_loss,
        inputs,
        n=n,
        seed=seed,
        quiet=quiet,
        forbidden=(kernels.dpo_loss,),
    )
