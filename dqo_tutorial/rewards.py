r"""Rewards of a sampled response: its outcome, and the per-token rewards DQO trains on.

**One rule for a response's outcome** (docs/implementation-notes.md 14). A response that ended
with EOS is *terminal* and its outcome is the graded reward R ∈ {0, 1}. A response cut by the
length limit never finished: it has **no outcome** — it is neither correct nor wrong, whatever
its text contains (a cut GSM8K answer may already show ``#### N`` and then ramble). Every method
reads :func:`outcome`:

=========  =======================================================================
method     what a cut response is
=========  =======================================================================
RFT        not a positive (RFT trains on responses whose outcome is 1)
DPO        in no pair (chosen: outcome 1, rejected: outcome 0)
DRO        left out: the bandit loss needs r(x, y) and a cut y has none
DQO        kept, with no outcome reward and V_φ(s_{H+1}) bootstrapped (§1, §4)
=========  =======================================================================

so the bandit methods filter cut responses (what DAPO calls overlong filtering) and DQO, which
has a critic, uses their tokens without inventing an outcome.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .errors import DataError

__all__ = ["outcome", "token_rewards", "process_rewards"]


def outcome(row: Mapping[str, Any]) -> float | None:
    """The outcome reward R of a sampled row (``reward`` and ``terminal`` as
    :func:`~dqo_tutorial.sampling.build_dataset` stores them), or None for a length-cut response,
    which has none (module docstring)."""
    return float(row["reward"]) if row["terminal"] else None


def token_rewards(row: Mapping[str, Any], alpha: float) -> list[float]:
    """Action-aligned r_h: the :func:`outcome` on the last action (none for a cut response)
    plus α-shaping (§6).

    Potential-based shaping with Φ(terminal) = 0 (docs/implementation-notes.md: only then is the
    optimal policy unchanged); a length-cut response keeps its last Φ (no shaping at the cut)."""
    ids, mask = row["input_ids"], row["action_mask"]
    n_prompt = len(ids) - sum(mask)
    length = len(ids) - n_prompt
    if length < 1:
        raise DataError(
            f"a sampled row has no response token (prompt_index {row.get('prompt_index', '?')}):"
            " resample with max_new_tokens >= 1"
        )
    shaped = [0.0] * length
    if alpha and "step_phi" in row:
        pairs = list(zip(row["step_boundaries"], row["step_phi"]))
        last = pairs[-1][1] if pairs else row["phi_start"]
        phi_end = 0.0 if row["terminal"] else last
        shaped = process_rewards(length, pairs, alpha, row["phi_start"], phi_end)
    elif alpha:
        raise DataError(
            "TrainConfig.process_reward_coef > 0 needs a dataset sampled with process rewards "
            "(`dqo-tutorial sample --process-rewards`), or process_reward_coef 0"
        )
    if (r := outcome(row)) is not None:
        shaped[-1] += r
    return [0.0] * n_prompt + shaped


def process_rewards(
    length: int,
    boundaries: Sequence[tuple[int, float]],
    alpha: float,
    phi_start: float,
    phi_end: float,
) -> list[float]:
    r"""Potential-based shaping rewards r'_h of one response, response-token aligned.

    Φ is known at the prompt state s_1 (``phi_start``), at the boundary states listed in
    ``boundaries`` as ``(h, Φ(s_{h+1}))`` — h response tokens generated — and at the final state
    (``phi_end``: 0 for a terminal state — see below — and the last Φ for a length-cut response,
    as :func:`token_rewards` does). Between them Φ is held constant, so the shaping
    term α(Φ(s_{h+1}) − Φ(s_h)) is non-zero only on the token that *reaches* a boundary and on the
    last token:

    .. math::  r'_{h} = \alpha\,\bigl(\Phi(s_{h+1}) - \Phi(s_{b(h)})\bigr)
               \quad\text{at boundaries and } h = H, \qquad 0 \text{ elsewhere},

    with b(h) the previous boundary. The sum telescopes: Σ_h r'_h = α(Φ_end − Φ(s_1)). Ng et al.'s
    invariance of the (soft-)optimal policy needs a constant terminal potential: with
    ``phi_end=0`` the shaped return is R − α·Φ(s_1), a per-prompt shift, and π* is unchanged.
    Do **not** use Φ_end = R: the shaped return becomes (1 + α)·R − α·Φ(s_1), the outcome
    weighted 1 + α (like β → β/(1 + α)), and π* changes (docs/implementation-notes.md 1).

    Args:
        length: H, the number of response tokens (≥ 1).
        boundaries: ``(h, Φ)`` pairs with strictly increasing h in 1 … H−1.
        alpha: the coefficient α (``process_reward_coef``); 0 gives all zeros.

    Returns:
        H floats; entry h − 1 belongs to action a_h. Prepend ``[0] * len(prompt_ids)`` for the
        action-aligned layout of §7.
    """
    if length < 1:
        raise DataError(f"a response has at least one token, got length {length}")
    steps = [h for h, _ in boundaries]
    if any(not 1 <= h < length for h in steps) or steps != sorted(set(steps)):
        raise DataError(f"boundaries must be strictly increasing within 1..{length - 1}: {steps}")
    shaped = [0.0] * length
    previous = phi_start
    for h, phi in [*boundaries, (length, phi_end)]:
        shaped[h - 1] += alpha * (phi - previous)
        previous = phi
    return shaped
