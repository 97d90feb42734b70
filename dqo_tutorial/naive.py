"""Slow, obviously-correct references: per-row Python loops straight from the equations.

They exist to be compared with (tests, benchmarks, notebooks' ``check_close`` cells), never to
be trained with. Each loops over rows and actions with Python floats and returns float64.
Conventions are those of :mod:`dqo_tutorial.kernels` (action-aligned (B, T), contiguous mask).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _action_columns(mask: Tensor, row: int) -> list[int]:
    return [j for j in range(mask.shape[1]) if mask[row, j]]


def lambda_return(
    rewards: Tensor, values: Tensor, mask: Tensor, lam: float, bootstrap: Tensor | None = None
) -> Tensor:
    """G_H = r̃_H + b;  G_h = r̃_h + (1 − λ) V(s_{h+1}) + λ G_{h+1}, row by row."""
    out = torch.zeros(rewards.shape, dtype=torch.float64)
    for i in range(rewards.shape[0]):
        cols = _action_columns(mask, i)
        g = 0.0 if bootstrap is None else float(bootstrap[i])
        v_next = None  # None marks "after the last action": the target is b itself
        for j in reversed(cols):
            target = g if v_next is None else (1 - lam) * v_next + lam * g
            g = float(rewards[i, j]) + target
            out[i, j] = g
            v_next = float(values[i, j])
    return out


def importance_weights(
    logp_policy: Tensor,
    logp_behavior: Tensor,
    mask: Tensor,
    mode: str = "prefix",
    clip: float = 2.0,
) -> Tensor:
    """w_h = min(c, exp Σ_{l<h} Δ_l) (prefix) or min(c, exp Σ_l Δ_l) (sequence) or 1 (none)."""
    out = torch.zeros(logp_policy.shape, dtype=torch.float64)
    for i in range(logp_policy.shape[0]):
        cols = _action_columns(mask, i)
        deltas = [float(logp_policy[i, j]) - float(logp_behavior[i, j]) for j in cols]
        for k, j in enumerate(cols):
            s = {"none": 0.0, "prefix": sum(deltas[:k]), "sequence": sum(deltas)}[mode]
            out[i, j] = min(clip, math.exp(min(s, 700.0)))
    return out


def soft_bellman_residual(
    policy_logps: Tensor,
    ref_logps: Tensor,
    values: Tensor,
    rewards: Tensor,
    mask: Tensor,
    beta: float,
    bootstrap: Tensor | None = None,
) -> Tensor:
    """δ_h = V(s_h) + β (log π − log π_ref) − r_h − V(s_{h+1}), with V(s_{H+1}) = b."""
    out = torch.zeros(values.shape, dtype=torch.float64)
    for i in range(values.shape[0]):
        cols = _action_columns(mask, i)
        for k, j in enumerate(cols):
            if k + 1 < len(cols):
                v_next = float(values[i, cols[k + 1]])
            else:
                v_next = 0.0 if bootstrap is None else float(bootstrap[i])
            log_ratio = float(policy_logps[i, j]) - float(ref_logps[i, j])
            out[i, j] = float(values[i, j]) + beta * log_ratio - float(rewards[i, j]) - v_next
    return out
