"""The toy-claims figures (bare Figures: no pyplot state, no backend switch)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..artifacts import save_figure_atomically
from .sweeps import (
    CONTRASTS,
    DATA_AXES,
    SWEEP_METHODS,
    contrasts,
    critic_signals,
    sweep_points,
)
from .variants import FORK_DATA_OPS

__all__ = [
    "plot_accuracy",
    "plot_lambda",
    "plot_curves",
    "plot_sweep",
    "plot_critic_signals",
]


def plot_accuracy(
    summary: Mapping[str, Any], runs: Sequence[Mapping[str, Any]], path: Path
) -> None:
    """Per variant: greedy and sampling accuracy, mean ± std over seeds, one dot per seed."""
    from matplotlib.figure import Figure

    names = [n for n, e in summary.items() if "greedy" in e]
    fig = Figure(figsize=(max(6.0, 0.55 * len(names) + 2), 4.8))
    ax = fig.subplots()
    width = 0.38
    for k, decoding in enumerate(("greedy", "sampling")):
        xs = [i + (k - 0.5) * width for i in range(len(names))]
        means = [summary[n][decoding]["mean"] for n in names]
        stds = [
            0.0 if math.isnan(summary[n][decoding]["std"]) else summary[n][decoding]["std"]
            for n in names
        ]
        ax.bar(xs, means, width, yerr=stds, capsize=2, label=f"{decoding} (mean ± std over seeds)")
        for x, n in zip(xs, names):
            seeds = [r["test"][decoding] for r in runs if r["variant"] == n and "test" in r]
            ax.plot([x] * len(seeds), seeds, "k.", markersize=3)
    ref = summary.get("π_ref", {}).get("greedy", {}).get("mean")
    if ref is not None:
        ax.axhline(ref, color="0.4", linestyle=":", linewidth=1, label="π_ref greedy")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("test accuracy (strict)")
    ax.set_ylim(0, 1)
    ax.legend(loc="upper right", fontsize=7)
    ax.set_title("Toy task: every variant, dots = seeds")
    save_figure_atomically(fig, path)


def plot_lambda(summary: Mapping[str, Any], path: Path) -> None:
    """DQO's accuracy against λ (λ = 1 is DQO itself), mean ± std over seeds."""
    from matplotlib.figure import Figure

    points = [
        (lam, name)
        for lam, name in ((0.0, "DQO, λ=0"), (0.95, "DQO, λ=0.95"), (1.0, "DQO"))
        if "greedy" in summary.get(name, {})
    ]
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.subplots()
    for decoding, marker in (("greedy", "o-"), ("sampling", "s--")):
        lams = [lam for lam, _ in points]
        means = [summary[n][decoding]["mean"] for _, n in points]
        stds = [
            0.0 if math.isnan(summary[n][decoding]["std"]) else summary[n][decoding]["std"]
            for _, n in points
        ]
        ax.errorbar(lams, means, yerr=stds, fmt=marker, capsize=3, label=f"DQO {decoding}")
    for name, style in (("π_ref", ":"), ("DRO", "-.")):
        if "greedy" in summary.get(name, {}):
            ax.axhline(
                summary[name]["greedy"]["mean"],
                color="0.4",
                linestyle=style,
                linewidth=1,
                label=f"{name} greedy",
            )
    ax.set_xlabel("λ of the λ-return")
    ax.set_ylabel("test accuracy (strict)")
    ax.set_title("DQO vs λ (mean ± std over seeds)")
    ax.legend(fontsize=7)
    save_figure_atomically(fig, path)


def plot_curves(runs: Sequence[Mapping[str, Any]], reference: float, path: Path) -> None:
    """Dev greedy accuracy during training, per method: mean over seeds, band = ± std."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4.0))
    ax = fig.subplots()
    by: dict[str, list[list[list[float]]]] = {}
    for r in runs:
        if r.get("curve") and r["method"] != "reference":
            by.setdefault(r["variant"], []).append(r["curve"])
    for name, curves in by.items():
        n = min(len(c) for c in curves)
        steps = [0] + [curves[0][i][0] for i in range(n)]
        vals = [[reference] + [c[i][1] for i in range(n)] for c in curves]
        mean = [statistics.fmean(col) for col in zip(*vals)]
        std = [statistics.stdev(col) if len(col) > 1 else 0.0 for col in zip(*vals)]
        (line,) = ax.plot(steps, mean, marker="o", markersize=3, label=name)
        ax.fill_between(
            steps,
            [m - s for m, s in zip(mean, std)],
            [m + s for m, s in zip(mean, std)],
            color=line.get_color(),
            alpha=0.15,
        )
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("dev greedy accuracy")
    ax.set_title("Learning curves (mean ± std over seeds; step 0 = π_ref)")
    ax.legend(fontsize=7)
    save_figure_atomically(fig, path)


def plot_sweep(
    summary: Mapping[str, Any], runs: Sequence[Mapping[str, Any]], axis: str, path: Path
) -> None:
    """A sweep (:data:`~.sweeps.SWEEPS`): left, greedy accuracy per method against the swept
    quantity (mean ± std over seeds); right, the paired differences of
    :data:`~.sweeps.CONTRASTS` with their 95 % intervals (seeds × problems)."""
    from matplotlib.figure import Figure

    points = sweep_points(runs, axis)
    xs = list(points)
    fig = Figure(figsize=(10.5, 4.0))
    left, right = fig.subplots(1, 2)
    for name in SWEEP_METHODS[axis]:
        have = [x for x in xs if "greedy" in points[x].get(name, {})]
        means = [points[x][name]["greedy"]["mean"] for x in have]
        stds = [points[x][name]["greedy"]["std"] for x in have]
        stds = [0.0 if math.isnan(v) else v for v in stds]
        left.errorbar(have, means, yerr=stds, marker="o", capsize=3, label=name)
    diffs = contrasts(runs, axis)
    heads = [f"{a} − {b}" for a, b in CONTRASTS[axis]]
    for k, head in enumerate(heads):
        have = [x for x in xs if head in diffs.get(x, {})]
        got = [diffs[x][head] for x in have]
        offset = k - (len(heads) - 1) / 2  # side by side: multiplicative on a log axis
        span = max(xs) - min(xs) if len(xs) > 1 else 1
        place = ([x * 1.04**offset for x in have] if axis in DATA_AXES
                 else [x + offset * 0.02 * span for x in have])  # fmt: skip
        mean = [d["mean"] for d in got]
        low = [d["mean"] - d.get("ci95", [d["mean"]] * 2)[0] for d in got]
        high = [d.get("ci95", [d["mean"]] * 2)[1] - d["mean"] for d in got]
        right.errorbar(place, mean, yerr=[low, high], marker="s", capsize=3,
                       label=f"{head} (95 % CI)")  # fmt: skip
    right.axhline(0, color="0.4", linewidth=1)
    x_label = ("training prompts (× 8 responses)" if axis in DATA_AXES
               else "operations per problem")  # fmt: skip
    for ax in (left, right):
        ax.set_xlabel(x_label)
        ax.set_xticks(xs)
        ax.legend(fontsize=7)
        if axis in DATA_AXES:
            ax.set_xscale("log")
            ax.minorticks_off()  # (no "3 × 10¹" labels between the points)
            ax.set_xticks(xs, [str(x) for x in xs])
    left.set_ylabel("test greedy accuracy (strict)")
    right.set_ylabel("paired greedy difference")
    name = {"forks": "Fork chains",
            "forks data size": f"Fork chains ({FORK_DATA_OPS} ops), data size at fixed steps",
            "forks comparison": "Fork chains: the methods compared",
            "forks oracle precision": "Fork chains: the oracle from 64 rollouts per state"
            }.get(axis, f"Toy {axis}")  # fmt: skip
    fig.suptitle(f"{name}: mean ± std over seeds; right: 95 % intervals, seeds × problems")
    save_figure_atomically(fig, path)


def plot_critic_signals(runs: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Why a critic hurts (:func:`~.sweeps.critic_signals`): per fork length, DQO's mean
    residual δ per step (mean over seeds) for each critic; right, greedy test accuracy against
    the second-half δ mean, one point per (length, critic)."""
    from matplotlib.figure import Figure

    found = critic_signals(runs)
    fig = Figure(figsize=(5.0 * (len(found) + 1), 4.0))
    axes = fig.subplots(1, len(found) + 1)
    names = list(dict.fromkeys(n for row in found.values() for n in row))
    colors = {n: f"C{k}" for k, n in enumerate(names)}
    for ax, (x, row) in zip(axes, found.items()):
        for name, e in row.items():
            if "delta_curve" in e:
                curve = e["delta_curve"]
                ax.plot(range(1, len(curve) + 1), curve, color=colors[name], label=name)
        ax.axhline(0, color="0.4", linewidth=1)
        ax.set_title(f"{x} operations")
        ax.set_xlabel("optimiser step")
        ax.set_ylabel("δ mean = V + βρ − target (tokens)")
        ax.legend(fontsize=7)
    right = axes[-1]
    for marker, (x, row) in zip("os^v", found.items()):
        for name, e in row.items():
            if "delta_mean" in e:
                right.scatter(e["delta_mean"], 100 * e["greedy"], color=colors[name],
                              marker=marker)  # fmt: skip
        # (the colours are the curves' critics: one legend entry per length's marker)
        right.scatter([], [], color="0.4", marker=marker, label=f"{x} operations")
    right.set_xlabel("δ mean, second half of training")
    right.set_ylabel("test greedy accuracy (%)")
    right.set_title("colours: the critics of the curves")
    right.legend(fontsize=7)
    fig.suptitle("Fork chains: the critic's bias against its target, and what it costs "
                 "(means over seeds)")  # fmt: skip
    save_figure_atomically(fig, path)
