"""The markdown tables of the toy-claims ``results.md``: every variant, and the tuning grid
with what each method's chosen budget costs (the sweeps' tables: :mod:`.sweeps`)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from .stats import mean_std

__all__ = [
    "pct",
    "results_table",
    "budget_table",
]


def pct(r: Mapping[str, Any], sign: str = "") -> str:
    """``mean ± std`` in percent (points); with a ``ci95``, the interval after it; with a sign
    count, how many seeds are above 0 (``(4/5 > 0)``)."""
    std = "" if math.isnan(r["std"]) else f" ± {100 * r['std']:.1f}"
    ci = r.get("ci95")
    ci = f" [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]" if ci else ""
    above = f" ({r['seeds_above_0']}/{r['n_seeds']} > 0)" if "seeds_above_0" in r else ""
    return f"{100 * r['mean']:{sign}.1f}{std}{ci}{above}"


def results_table(summary: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown: per variant, greedy and sampling accuracy as mean ± std over seeds (%), and the
    paired differences to its DQO anchor (points: mean ± std over seeds [95 % interval over
    seeds × problems, :func:`~.stats.paired_interval`] (seeds above 0 / seeds))."""
    lines = [
        "| group | variant | greedy (mean ± std) | sampling τ=1 (mean ± std) "
        "| greedy − DQO, paired [95 % CI] (seeds > 0) "
        "| sampling − DQO, paired [95 % CI] (seeds > 0) | seeds "
        "| responses |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def cell(e: Mapping[str, Any], decoding: str) -> str:
        return pct(e[decoding]) if decoding in e else "–"

    def paired(e: Mapping[str, Any], decoding: str) -> str:
        return pct(e["paired"][decoding], "+") if decoding in e.get("paired", {}) else "–"

    for name, e in summary.items():
        seeds = e["greedy"]["n_seeds"] if "greedy" in e else 0
        diffs = f"{paired(e, 'greedy')} | {paired(e, 'sampling')}"
        if "skipped" in e:
            reason = "; ".join(e["skipped"])
            n = e.get("skipped_seeds", 0)
            lines.append(
                f"| {e['group']} | {name} | skipped ({n} seed{'s' * (n != 1)}): {reason} "
                f"| {cell(e, 'sampling')} | {diffs} | {seeds} | – |"
            )
            continue
        resp = f"{e['responses']['mean']:.0f}" if e.get("responses") else "–"
        lines.append(
            f"| {e['group']} | {name} | {cell(e, 'greedy')} | {cell(e, 'sampling')} | {diffs} "
            f"| {seeds} | {resp} |"
        )
    return "\n".join(lines)


def budget_table(
    tuning: Sequence[Mapping[str, Any]],
    chosen: Mapping[str, Mapping[str, Any]],
    runs: Sequence[Mapping[str, Any]],
) -> str:
    """Markdown: the tuning grid (dev greedy % per policy lr × epochs, the chosen trial in bold)
    and, per method, what its chosen budget costs — optimiser steps, tokens seen (prompt and
    response tokens of the training batches) and training wall time, mean over the baseline
    runs' seeds — next to its test accuracy."""
    trials = sorted({(r["epochs"], r["policy_lr"]) for r in tuning})
    head = " | ".join(f"{lr:g} × {e} ep" for e, lr in trials)
    lines = [f"| dev greedy (%) | {head} | chosen |", "|---" * (len(trials) + 2) + "|"]
    for m in dict.fromkeys(r["method"] for r in tuning):
        cells = []
        for e, lr in trials:
            r = next(r for r in tuning if (r["method"], r["epochs"], r["policy_lr"]) == (m, e, lr))
            value = "–" if r["dev"] is None else f"{100 * r['dev']:.1f}"
            pick = chosen.get(m) == {"policy_lr": lr, "epochs": e}
            cells.append(f"**{value}**" if pick else value)
        c = chosen.get(m, {})
        lines.append(
            f"| {m} | {' | '.join(cells)} | {c.get('policy_lr', 0):g} × {c.get('epochs')} |"
        )
    lines += [
        "",
        "| method | lr × epochs | steps | tokens seen | train wall (s) | greedy | sampling |",
        "|---|---|---|---|---|---|---|",
    ]
    for m, c in chosen.items():
        base = [r for r in runs if r["group"] == "baselines" and r["method"] == m and "test" in r]
        trained = [r["train"] for r in base if "train" in r]
        if not trained:
            continue
        steps = statistics.fmean(t["steps"] for t in trained)
        tokens = statistics.fmean(t.get("tokens", 0) for t in trained)
        wall = statistics.fmean(t["wall_s"] for t in trained)
        acc = {d: mean_std([r["test"][d] for r in base]) for d in ("greedy", "sampling")}
        lines.append(
            f"| {m} | {c['policy_lr']:g} × {c['epochs']} | {steps:.0f} | {tokens / 1e3:,.0f} k "
            f"| {wall:.0f} | {pct(acc['greedy'])} | {pct(acc['sampling'])} |"
        )
    return "\n".join(lines)
