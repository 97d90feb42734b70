"""The toy-claims sweeps (:data:`SWEEPS`: the horizon and the data size) read per sweep point,
and their markdown table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .stats import summarize_runs
from .tables import pct

__all__ = [
    "SWEEPS",
    "SWEEP_METHODS",
    "sweep_points",
    "sweep_table",
    "flip",
]


SWEEPS = ("horizon", "data-size sweep")


SWEEP_METHODS = {
    "horizon": ("π_ref", "RFT", "DRO", "DQO", "DQO, α=0.5 exact Φ"),
    "data-size sweep": ("RFT", "DRO", "DQO"),
}


def sweep_points(runs: Sequence[Mapping[str, Any]], axis: str) -> dict[Any, dict[str, Any]]:
    """Per sweep point (operations, or training prompts): :func:`~.stats.summarize_runs` of its
    methods, keyed by the method's short name. The data-size sweep's middle point is the
    baselines' runs at the sweep's seeds (the same training, not a second copy)."""
    if axis == "horizon":
        picked = [dict(r, point=r["ops"]) for r in runs if r["group"] == "horizon"]
    else:
        sweep = [r for r in runs if r["group"] == "data-size sweep"]
        seeds = {r["seed"] for r in sweep}
        names = SWEEP_METHODS[axis]
        middle = [r for r in runs if r["group"] == "baselines" and r["variant"] in names
                  and r["seed"] in seeds]  # fmt: skip
        picked = [dict(r, point=r["prompts"]) for r in sweep + (middle if sweep else [])]
    points: dict[Any, dict[str, Any]] = {}
    for x in sorted({r["point"] for r in picked}):
        here = [
            dict(r, variant=_short(r["variant"]), anchor="DQO") for r in picked if r["point"] == x
        ]
        points[x] = summarize_runs(here)
    return points


def _short(variant: str) -> str:
    """A sweep variant's method name: ``"DQO, 6 ops"`` → ``"DQO"``."""
    for name in sorted({n for ns in SWEEP_METHODS.values() for n in ns}, key=len, reverse=True):
        if variant == name or variant.startswith(name + ", "):
            return name
    return variant


def sweep_table(summary: Mapping[str, Any], runs: Sequence[Mapping[str, Any]], axis: str) -> str:
    """Markdown: per sweep point, greedy accuracy per method (mean ± std over seeds) and the
    paired DQO − DRO and DQO − RFT greedy differences with their 95 % intervals and sign
    counts; "" if the sweep did not run."""
    points = sweep_points(runs, axis)
    if not points:
        return ""
    names = SWEEP_METHODS[axis]
    x_name = "operations" if axis == "horizon" else "training prompts"
    lines = [
        f"| {x_name} | "
        + " | ".join(f"{n} greedy" for n in names)
        + " | DQO − DRO [95 % CI] (seeds > 0) | DQO − RFT [95 % CI] (seeds > 0) |",
        "|---" * (len(names) + 3) + "|",
    ]
    for x, summ in points.items():
        cells = [pct(summ[n]["greedy"]) if "greedy" in summ.get(n, {}) else "–" for n in names]
        diffs = [pct(flip(summ[n]["paired"]["greedy"]), "+")
                 if "greedy" in summ.get(n, {}).get("paired", {}) else "–"
                 for n in ("DRO", "RFT")]  # fmt: skip
        lines.append(f"| {x} | " + " | ".join(cells + diffs) + " |")
    return "\n".join(lines)


def flip(diff: Mapping[str, Any]) -> dict[str, Any]:
    """X − DQO → DQO − X (the mean and the interval change sign, the sign counts swap)."""
    out = dict(diff, mean=0.0 - diff["mean"] + 0.0)  # (+ 0.0: no "-0.0" in the tables)
    if "seeds_above_0" in diff:
        out["seeds_above_0"], out["seeds_below_0"] = diff["seeds_below_0"], diff["seeds_above_0"]
    if "ci95" in diff:
        out["ci95"] = [0.0 - diff["ci95"][1] + 0.0, 0.0 - diff["ci95"][0] + 0.0]
    return out
