"""The toy-claims statistics: paired intervals over seeds × problems (two-way random effects,
a t quantile on Satterthwaite's degrees of freedom) and the per-variant summary of the runs."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "mean_std",
    "scores",
    "paired_variance",
    "paired_interval",
    "paired_difference",
    "summarize_runs",
]


def mean_std(values: Sequence[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else float("nan"),
        "n_seeds": len(values),
    }


def scores(hits: Mapping[str, Any], decoding: str) -> list[float]:
    """Per-problem scores from a run's ``hits``: one digit per test problem, the number of
    correct responses (greedy: 0 or 1; sampling: out of ``hits["samples"]``)."""
    k = 1 if decoding == "greedy" else hits["samples"]
    return [int(c) / k for c in hits[decoding]]


def paired_variance(d: Any) -> dict[str, Any]:
    r"""The mean of a seeds × problems table of paired differences, its variance and degrees of
    freedom, from a two-way random-effects decomposition (numpy; ``d`` of shape (..., S, N):
    every leading index is a study of its own).

    ``d[s, p]`` = a − b at seed s on test problem p (the same problems for every seed), modelled
    as :math:`d_{sp} = \mu + \alpha_s + \beta_p + \varepsilon_{sp}` with independent seed,
    problem and cell terms of variances :math:`\sigma^2_S, \sigma^2_P, \sigma^2_E`, so that

    .. math::

        \operatorname{Var}(\bar d) = \frac{\sigma^2_S}{S} + \frac{\sigma^2_P}{N}
            + \frac{\sigma^2_E}{SN}.

    The ANOVA mean squares :math:`M_S = \frac{N}{S-1}\sum_s (\bar d_{s\cdot} - \bar d)^2`,
    :math:`M_P = \frac{S}{N-1}\sum_p (\bar d_{\cdot p} - \bar d)^2` and
    :math:`M_E = \frac{1}{(S-1)(N-1)}\sum_{s,p}(d_{sp} - \bar d_{s\cdot} - \bar d_{\cdot p}
    + \bar d)^2` have expectations :math:`\sigma^2_E + N\sigma^2_S`,
    :math:`\sigma^2_E + S\sigma^2_P` and :math:`\sigma^2_E`. So :math:`M_S/(SN)` estimates
    :math:`\sigma^2_S/S + \sigma^2_E/(SN)` (the spread of the per-seed means, kept whole) and
    :math:`(M_P - M_E)/(SN)` estimates :math:`\sigma^2_P/N`, floored at 0:

    .. math:: \widehat{\operatorname{Var}}(\bar d) = \frac{M_S + (M_P - M_E)_+}{SN}

    (unbiased while :math:`M_P > M_E`, and never below the per-seed means' own spread
    :math:`M_S/(SN)`). Degrees of freedom by Satterthwaite, with
    :math:`\tilde M_S = \max(M_S, M_E)` in place of :math:`M_S`, :math:`f_S = S-1`,
    :math:`f_P = N-1`, :math:`f_E = (S-1)(N-1)`:

    .. math::

        \nu = \frac{\bigl(\tilde M_S + (M_P - M_E)_+\bigr)^2}{\tilde M_S^2/f_S
            + [M_P > M_E]\,\bigl(M_P^2/f_P + M_E^2/f_E\bigr)}.

    Why these choices (coverage of the 95 % interval on the simulated studies of
    tests/test_claims.py, 5,000 per regime × seed count): this one covers 0.945–0.965 in all
    six. :math:`M_S` at face value in ν covers 0.934–0.935 with 3 seeds where problems matter
    (ν runs towards N − 1 exactly when the seed term is underestimated); flooring the seed
    component at :math:`M_E` in the variance too covers 0.927 with 3 seeds when seeds dominate
    and 0.962–0.966 when problems do; flooring the variance at :math:`M_E/(SN)` covers
    0.971–0.982 with 3 seeds; a t on S − 1 df covers 0.974–0.997 where problems matter. With one
    seed (S = 1) this is the paired t over problems, :math:`s^2_P/N` on N − 1 df, and with one
    problem the paired t over seeds. Returns ``mean``, ``var``, ``df`` and the mean squares
    ``ms_seed``, ``ms_problem``, ``ms_resid`` (0 where a factor has one level).
    """
    import numpy as np

    d = np.asarray(d, dtype=np.float64)
    if d.ndim < 2 or d.shape[-1] * d.shape[-2] < 2:
        raise ValueError(
            "paired_interval: needs a seeds × problems table with at least 2 cells, "
            f"got shape {d.shape}"
        )
    n_s, n_p = d.shape[-2:]
    grand = d.mean((-2, -1))
    seed_dev = d.mean(-1) - grand[..., None]  # (..., S)
    prob_dev = d.mean(-2) - grand[..., None]  # (..., N)
    zero = np.zeros_like(grand)
    ms_s = n_p * (seed_dev**2).sum(-1) / (n_s - 1) if n_s > 1 else zero
    ms_p = n_s * (prob_dev**2).sum(-1) / (n_p - 1) if n_p > 1 else zero
    ms_e = zero
    if n_s > 1 and n_p > 1:
        resid = d - seed_dev[..., :, None] - prob_dev[..., None, :] - grand[..., None, None]
        ms_e = (resid**2).sum((-2, -1)) / ((n_s - 1) * (n_p - 1))
    on = ms_p > ms_e
    problem = np.where(on, ms_p - ms_e, 0.0)
    seed = np.maximum(ms_s, ms_e)
    f_s, f_p, f_e = max(n_s - 1, 1), max(n_p - 1, 1), max((n_s - 1) * (n_p - 1), 1)
    spread = seed**2 / f_s + np.where(on, ms_p**2 / f_p + ms_e**2 / f_e, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(spread > 0, (seed + problem) ** 2 / spread, np.inf)
    return {
        "mean": grand,
        "var": (ms_s + problem) / (n_s * n_p),
        "df": df,
        "ms_seed": ms_s,
        "ms_problem": ms_p,
        "ms_resid": ms_e,
    }


def _betainc(a: Any, b: Any, x: Any) -> Any:
    r"""The regularised incomplete beta :math:`I_x(a, b)` (numpy, elementwise), by its
    continued fraction (modified Lentz), on the side where it converges fast:
    :math:`I_x(a, b) = 1 - I_{1-x}(b, a)`."""
    import numpy as np

    a, b, x = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (a, b, x)))
    flip = x > (a + 1) / (a + b + 2)
    a, b, x = np.where(flip, b, a), np.where(flip, a, b), np.where(flip, 1 - x, x)
    lbeta = np.vectorize(lambda p, q: math.lgamma(p) + math.lgamma(q) - math.lgamma(p + q))
    with np.errstate(divide="ignore"):
        front = np.exp(a * np.log(x) + b * np.log1p(-x) - lbeta(a, b)) / a
    tiny = 1e-300
    c, dd = np.ones_like(x), 1 - (a + b) * x / (a + 1)
    dd = 1 / np.where(np.abs(dd) < tiny, tiny, dd)
    h = dd.copy()
    for m in range(1, 2000):
        step = np.ones_like(x)
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):  # fmt: skip
            dd = 1 + num * dd
            dd = 1 / np.where(np.abs(dd) < tiny, tiny, dd)
            c = 1 + num / c
            c = np.where(np.abs(c) < tiny, tiny, c)
            step = dd * c
            h = h * step
        if np.all(np.abs(step - 1) < 1e-15):
            break
    out = front * h
    return np.where(flip, 1 - out, out)


def _t_quantile(p: float, df: Any) -> Any:
    r"""The p-quantile of Student's t with ``df`` degrees of freedom (p ≥ ½; numpy over
    ``df``; ``inf`` → the normal's). Newton on :math:`F(t) = 1 - \tfrac12 I_{\nu/(\nu+t^2)}
    (\nu/2, \tfrac12)` from the normal quantile: F is concave for t > 0 and the start lies
    below the root, so the iterates rise to it monotonically."""
    from statistics import NormalDist

    import numpy as np

    z = NormalDist().inv_cdf(p)
    nu = np.asarray(df, dtype=np.float64)
    finite = np.isfinite(nu)
    v = np.where(finite, nu, 1.0)
    log_c = np.vectorize(lambda n: math.lgamma((n + 1) / 2) - math.lgamma(n / 2))(v)
    log_c = log_c - 0.5 * np.log(v * math.pi)
    t = np.full_like(v, z)
    for _ in range(200):
        cdf = 1 - 0.5 * _betainc(v / 2, 0.5, v / (v + t**2))
        pdf = np.exp(log_c - (v + 1) / 2 * np.log1p(t**2 / v))
        step = (p - cdf) / pdf
        t = t + step
        if np.all(np.abs(step) <= 1e-12 * t):
            break
    out = np.where(finite, t, z)
    return float(out) if out.ndim == 0 else out


def paired_interval(
    a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], *, level: float = 0.95
) -> list[float]:
    r"""The ``level`` interval of mean(a − b) over seeds × problems: :func:`paired_variance`'s
    mean ± :math:`t_{(1+\text{level})/2,\,\nu}\sqrt{\widehat{\operatorname{Var}}}`.

    ``a[s][p]``, ``b[s][p]``: the per-problem score (0/1 greedy, share of correct samples) of
    the two variants at seed s on test problem p — the same problems, the same data. Both
    sources of noise count (which seeds: data draw and training order; which problems), each
    once; tests/test_claims.py checks the coverage on simulated studies. Returns
    ``[low, high]``."""
    import numpy as np

    if not 0 < level < 1:
        raise ValueError(f"paired_interval: level must lie in (0, 1), got {level}")
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired_interval: a and b must have the same shape: {a.shape}, {b.shape}")
    est = paired_variance(a - b)
    half = _t_quantile((1 + level) / 2, float(est["df"])) * math.sqrt(float(est["var"]))
    mean = float(est["mean"])
    return [mean - half, mean + half]


def paired_difference(
    both: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]], decoding: str
) -> dict[str, Any]:
    """A − B from per-seed pairs ``(test_a, test_b)`` of test records (same seed, same data):
    mean ± std of the per-seed differences, how many seeds lie above and below 0
    (``seeds_above_0``, ``seeds_below_0``) and, where both carry per-problem ``hits``, the 95 %
    :func:`paired_interval` over seeds × problems (``ci95``)."""
    per_seed = [a[decoding] - b[decoding] for a, b in both]
    diff = mean_std(per_seed)
    diff["seeds_above_0"] = sum(x > 0 for x in per_seed)
    diff["seeds_below_0"] = sum(x < 0 for x in per_seed)
    hits = [(a.get("hits", {}), b.get("hits", {})) for a, b in both]
    if all(decoding in a and decoding in b for a, b in hits):
        sa = [scores(a, decoding) for a, _ in hits]
        if len(sa) * len(sa[0]) > 1:  # (one seed on one problem has no interval)
            diff["ci95"] = paired_interval(sa, [scores(b, decoding) for _, b in hits])
    return diff


def summarize_runs(
    runs: Sequence[Mapping[str, Any]], paired_with: str = "DQO"
) -> dict[str, dict[str, Any]]:
    """Per variant (in first-seen order): mean and sample std over seeds of the strict greedy and
    sampling test accuracy, the skip reason where a variant never trained, and ``paired``: the
    per-seed difference to its anchor (a run's ``anchor``, else ``paired_with``; same data, same
    seed), mean ± std over the seeds where both trained — the comparison that cancels the
    data-set noise every variant shares —, how many of those seeds have it above and below 0
    (``seeds_above_0``, ``seeds_below_0``) and, where the runs carry per-problem ``hits``, its
    95 % :func:`paired_interval` (``ci95``) over seeds × problems."""
    by: dict[str, list[Mapping[str, Any]]] = {}
    for r in runs:
        by.setdefault(r["variant"], []).append(r)
    out: dict[str, dict[str, Any]] = {}
    for name, rs in by.items():
        against = rs[0].get("anchor", paired_with)
        anchor = {r["seed"]: r["test"] for r in by.get(against, []) if "test" in r}
        done = [r for r in rs if "test" in r]
        entry: dict[str, Any] = {"group": rs[0]["group"], "method": rs[0]["method"]}
        for decoding in ("greedy", "sampling"):
            values = [r["test"][decoding] for r in done if decoding in r["test"]]
            if values:
                entry[decoding] = mean_std(values)
            both = [
                (r["test"], anchor[r["seed"]])
                for r in done
                if r["seed"] in anchor and decoding in r["test"] and decoding in anchor[r["seed"]]
            ]
            if both and name != against:
                diff = paired_difference(both, decoding)
                entry.setdefault("paired", {"against": against})[decoding] = diff
        skipped = sorted({r["skipped"] for r in rs if "skipped" in r})
        if skipped:
            entry["skipped"] = skipped
            entry["skipped_seeds"] = len(rs) - len(done)
        entry["responses"] = (
            mean_std([r["data"]["responses"] for r in rs]) if rs[0].get("data") else None
        )
        out[name] = entry
    return out
