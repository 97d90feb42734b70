r"""Credit assignment, measured: does a per-token signal point at the step that went wrong?

A wrong response of a step-checked task (the toy: one line per operation) has a **first wrong
line** w — every line before it is the gold solution's, line w is not. A per-token signal
s_h (lower = more blamed) *credits* the response well when its blame lands on line w. The
signals this module scores are any (B, T) tensor: DQO's critic advantage
r_h + V(s_{h+1}) − V(s_h), a method's implied reward β·log π_θ/π_ref, π_ref's log-prob (low =
surprising), or noise (the chance baseline).

Inputs, batched and action-aligned as everywhere in the package:

============  =========  =========================================================
tensor        shape      meaning
============  =========  =========================================================
``score``     (B, T)     the signal; junk off the mask is never read
``mask``      (B, T)     1 on response tokens (any padding side)
``line``      (B, T)     long: the line index (0 = the response's first line) of each
                         response token; off the mask any value
``wrong``     (B,)       long: the first wrong line w of each response
============  =========  =========================================================

Every metric is a pure function with its definition and its chance level in its docstring;
rows without response tokens score False (never NaN).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "blamed_token",
    "token_blame_hits",
    "token_blame_chance",
    "step_blame_hits",
    "step_blame_chance",
    "partial_credit",
    "auc",
    "value_error",
    "leave_one_out_means",
]


def blamed_token(score: Tensor, mask: Tensor) -> Tensor:
    r"""(B,) long: the response position h (0 = the row's first response token, whatever the
    padding) of the row's smallest score, the first one on a tie; −1 for a row without
    response tokens.

    .. math::  \hat h_b = \min\,\operatorname{arg\,min}_{h:\,m_{b,h} = 1} s_{b,h}
    """
    m = mask.bool()
    before = torch.cumsum(m.long(), dim=1) - m.long()  # response tokens before each column
    return _at_blamed(score, mask, before)


def _at_blamed(score: Tensor, mask: Tensor, x: Tensor) -> Tensor:
    """(B,) ``x`` at each row's column of smallest score (the first on a tie: torch documents
    first-index ties for argmin); −1 for a row without response tokens."""
    m = mask.bool()
    column = torch.where(m, score.double(), torch.inf).argmin(dim=1)
    return torch.where(m.any(dim=1), x.gather(1, column[:, None])[:, 0], -1)


def token_blame_hits(score: Tensor, mask: Tensor, line: Tensor, wrong: Tensor) -> Tensor:
    r"""(B,) bool: the blamed token (:func:`blamed_token`) lies in the first wrong line,
    :math:`\text{line}_{b,\hat h_b} = w_b`. Chance level: :func:`token_blame_chance`."""
    return _at_blamed(score, mask, line) == wrong


def token_blame_chance(mask: Tensor, line: Tensor, wrong: Tensor) -> Tensor:
    r"""(B,) float64: the hit probability of a uniformly random token — the share of the
    response's tokens in line w, :math:`|\{h: \text{line}_h = w\}| / H` (0 for an empty
    row); its mean is the token blame accuracy of a signal that knows nothing."""
    m = mask.bool()
    in_wrong = (m & (line == wrong[:, None])).sum(dim=1).double()
    return in_wrong / m.sum(dim=1).clamp(min=1).double()


def _line_sums(score: Tensor, mask: Tensor, line: Tensor) -> tuple[Tensor, Tensor]:
    """(B, L) summed score and token count of each line (L = the largest line index + 1)."""
    m = mask.bool()
    safe = torch.where(m, line, 0).long()
    n_lines = int(safe.max()) + 1 if safe.numel() else 1
    sums = torch.zeros(score.shape[0], n_lines, dtype=torch.float64, device=score.device)
    counts = torch.zeros_like(sums)
    sums.scatter_add_(1, safe, torch.where(m, score.double(), 0.0))
    counts.scatter_add_(1, safe, m.double())
    return sums, counts


def step_blame_hits(score: Tensor, mask: Tensor, line: Tensor, wrong: Tensor) -> Tensor:
    r"""(B,) bool: the line with the smallest *summed* score is the first wrong line,

    .. math::  \operatorname{arg\,min}_{k} \sum_{h:\,\text{line}_h = k} s_h = w

    over the lines the response has (the first on a tie). A step's blame is its whole line:
    a critic that spreads its drop over the line's tokens scores as one that puts it on one.
    Chance level: :func:`step_blame_chance` (1 / the number of lines)."""
    sums, counts = _line_sums(score, mask, line)
    present = counts > 0
    step = torch.where(present, sums, torch.inf).argmin(dim=1)
    return present.any(dim=1) & (step == wrong)


def step_blame_chance(mask: Tensor, line: Tensor) -> Tensor:
    """(B,) float64: 1 / the number of lines of each response (0 for an empty row) — the hit
    probability of a uniformly random line."""
    _, counts = _line_sums(torch.zeros(mask.shape, dtype=torch.float64), mask, line)
    n = (counts > 0).sum(dim=1).double()
    return torch.where(n > 0, 1 / n.clamp(min=1), 0.0)


def partial_credit(score: Tensor, mask: Tensor, line: Tensor, wrong: Tensor) -> dict[str, float]:
    r"""Mean score over the population's tokens of three regions of the wrong responses:
    ``prefix`` (the correct lines before w), ``wrong`` (line w) and ``after`` (lines after w),
    pooled over rows (a token mean, so a row without a region adds nothing; a region nobody
    has is 0.0 and its count 0). A signal that credits the sound steps and blames the slip
    has ``prefix`` > ``wrong``; an outcome-only signal spreads one value over all three.

    .. math::  \bar s_{\text{region}} = \frac{\sum_{b,h} s_{b,h}\,[h \in \text{region}_b]}
               {\sum_{b,h} [h \in \text{region}_b]}
    """
    m = mask.bool()
    w = wrong[:, None]
    regions = {"prefix": m & (line < w), "wrong": m & (line == w), "after": m & (line > w)}
    out: dict[str, float] = {}
    for name, region in regions.items():
        n = int(region.sum())
        out[name] = float(torch.where(region, score.double(), 0.0).sum()) / n if n else 0.0
        out[f"{name}_tokens"] = n
    return out


def auc(positive: Sequence[float] | Tensor, negative: Sequence[float] | Tensor) -> float:
    r"""The area under the ROC curve of a score that should rank ``positive`` above
    ``negative``: the Mann–Whitney probability, ties counting one half,

    .. math::
        \mathrm{AUC} = \frac{1}{n_+ n_-} \sum_{i,j} \bigl([x_i > y_j] + \tfrac12 [x_i = y_j]\bigr)

    computed from mid-ranks in O(n log n). 0.5 is chance; an empty side gives 0.5."""
    x = torch.as_tensor(positive, dtype=torch.float64).flatten()
    y = torch.as_tensor(negative, dtype=torch.float64).flatten()
    if not len(x) or not len(y):
        return 0.5
    both = torch.cat([x, y])
    _, inverse, counts = torch.unique(both, return_inverse=True, return_counts=True)
    below = torch.cumsum(counts, 0) - counts  # values strictly smaller
    mid_rank = below.double() + (counts.double() + 1) / 2  # 1-based mid-ranks of each value
    rank_sum = mid_rank[inverse[: len(x)]].sum()
    u = rank_sum - len(x) * (len(x) + 1) / 2
    return float(u / (len(x) * len(y)))


def value_error(values: Tensor, targets: Tensor, mask: Tensor) -> float:
    r"""Token mean |G − V| of a critic against its targets (e.g. the λ = 1 returns, the
    outcome), over the response tokens of the batch; 0.0 without any.

    .. math::  \mathrm{err}(V) = \frac{\sum_{b,h} m_{b,h}\,|G_{b,h} - V_{b,h}|}{\sum_{b,h} m_{b,h}}

    Its floors, from the same data: a constant V (the token mean of G: what a critic with no
    features learns), the prompt-level value (:func:`leave_one_out_means` of the prompt's other
    samples, broadcast over the response: what a critic that reads only the prompt can learn),
    and the oracle's (the state's true value). A critic that localises errors beats the
    prompt-level floor."""
    m = mask.bool()
    n = int(m.sum())
    err = torch.where(m, (targets.double() - values.double()).abs(), 0.0)
    return float(err.sum()) / n if n else 0.0


def leave_one_out_means(outcomes: Sequence[float], groups: Sequence[int]) -> Tensor:
    """(N,) float64: for each response, the mean outcome of the *other* responses to the same
    prompt (``groups``: its prompt id); a prompt's only response gets the overall mean of the
    other prompts' responses (there is nothing else to predict it from)."""
    y = torch.as_tensor(outcomes, dtype=torch.float64)
    g = torch.as_tensor(groups)
    _, index = torch.unique(g, return_inverse=True)
    sums = torch.zeros(int(index.max()) + 1 if len(g) else 0, dtype=torch.float64)
    counts = torch.zeros_like(sums)
    sums.index_add_(0, index, y)
    counts.index_add_(0, index, torch.ones_like(y))
    others = counts[index] - 1
    alone = (y.sum() - y) / max(len(y) - 1, 1)
    return torch.where(others > 0, (sums[index] - y) / others.clamp(min=1), alone)
