"""The toy-claims sweeps (:data:`SWEEPS`: the toy's horizon and data size, the fork chains'
lengths and data size) read per sweep point, and their markdown table."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from .stats import paired_difference, summarize_runs
from .tables import pct
from .variants import (
    BIASED_FLAT,
    DEAD_FLAT,
    FORK_COMPARISON_NAMES,
    FORK_DATA_OPS,
    FORK_METHOD_NAMES,
    POOLED_NAMES,
    PRECISE_NAMES,
    RAISED_FLAT_AT_095,
)

__all__ = [
    "SWEEPS",
    "SWEEP_METHODS",
    "sweep_points",
    "sweep_table",
    "flip",
    "CONTRASTS",
    "DATA_AXES",
    "CRITIC_SIGNALS",
    "critic_signals",
    "signals_table",
    "contrasts",
]


SWEEPS = ("horizon", "data-size sweep", "forks", "forks data size", "forks comparison",
          "forks oracle precision")  # fmt: skip

DATA_AXES = ("data-size sweep", "forks data size")
"""The sweeps whose points are training prompts (the others': operations)."""


_FLAT, _ORACLE, _L0_ORACLE = "DQO, flat critic", "DQO, oracle critic", "DQO, λ=0, oracle critic"

SWEEP_METHODS = {
    "horizon": ("π_ref", "RFT", "DRO", "DQO", "DQO, α=0.5 exact Φ"),
    "data-size sweep": ("RFT", "DRO", "DQO"),
    "forks": FORK_METHOD_NAMES,
    "forks data size": ("DRO", "DQO", _FLAT, _ORACLE, "DQO, no IS"),
    "forks comparison": ("π_ref", "DRO", "DQO", *FORK_COMPARISON_NAMES),
    "forks oracle precision": (_FLAT, _ORACLE, _L0_ORACLE, *PRECISE_NAMES, *POOLED_NAMES),
}


CONTRASTS = {
    "horizon": (("DQO", "DRO"), ("DQO", "RFT")),
    "data-size sweep": (("DQO", "DRO"), ("DQO", "RFT")),
    "forks": (
        ("DQO", "DRO"),
        (_ORACLE, _FLAT),
        ("DQO", _FLAT),
        (_L0_ORACLE, _FLAT),
        (DEAD_FLAT, _FLAT),
        (DEAD_FLAT, _ORACLE),
        ("DQO, λ=0", _FLAT),
        (_L0_ORACLE, "DQO, λ=0"),
        ("DQO, λ=0.95", _FLAT),
        ("DQO, value warm-up ×5", "DQO"),
        *((name, _FLAT) for name in BIASED_FLAT),
        ("DQO, λ=0.95", "DQO"),
        ("DQO, λ=0.95", "DQO, λ=0.95, flat critic"),
        (RAISED_FLAT_AT_095, "DQO, λ=0.95, flat critic"),
    ),
    "forks data size": (("DQO", "DRO"), (_ORACLE, _FLAT), ("DQO", _FLAT), ("DQO, no IS", "DQO")),
    "forks comparison": (
        ("DQO, knobs tuned", "DRO, knobs tuned"),
        ("DQO", "DRO"),
        ("DQO", "RFT"),
        ("DQO", "DPO"),
        ("DQO, α=0.5 exact Φ", "DQO"),
        ("DQO, knobs tuned", "DQO"),
        ("DRO, knobs tuned", "DRO"),
    ),
    "forks oracle precision": (
        (PRECISE_NAMES[1], PRECISE_NAMES[0]),
        (PRECISE_NAMES[2], PRECISE_NAMES[0]),
        (PRECISE_NAMES[2], _L0_ORACLE),
        (PRECISE_NAMES[1], _ORACLE),
        (PRECISE_NAMES[0], _FLAT),
        (POOLED_NAMES[0], _ORACLE),
        (POOLED_NAMES[1], _L0_ORACLE),
    ),
}
"""The paired differences each sweep reports per point. The fork chains' bound: what the oracle
critic buys over no critic (the flat one, V ≡ its mean: DRO's gradient at the token level) at
λ = 1 and at λ = 0, and what the learned critic buys at each (λ = 0: the critic is the whole
credit; λ = 1: a baseline) and what it leaves of the λ = 0 oracle's, the learned critic at
λ = 0.95 against the flat one, the oracle with the flat value on dead states against both (is
the flat critic's push on an error's continuation its edge?), and the flat critic shifted up
and down (is bias what hurts?), and
at λ = 0.95 the learned critic, and the raised flat critic against the flat one (does λ < 1
undo the bias?).
The fork chains' data size at fixed steps: DQO against DRO and the bound per size, and DQO
without IS at the largest. The fork chains' comparison: the knob-tuned DQO against the
knob-tuned DRO (the headline), then each method against DQO at the common budget. The
precise oracle: the bound again from 64 rollouts per state, and what the precision buys; the
pooled oracle against the unpooled one (the same k: pooling should change nothing)."""


def _picked(runs: Sequence[Mapping[str, Any]], axis: str) -> list[dict[str, Any]]:
    """The runs of a sweep, each with its ``point`` (operations, or training prompts). A
    data-size sweep's middle point is other runs at its seeds (the same training, not a second
    copy): the toy's baselines, or the ``forks`` set's runs at :data:`FORK_DATA_OPS`
    (they train the same 48 steps). The fork comparison (with ``forks-compare-long``) adds the
    bound's π_ref, DRO and DQO at its lengths."""
    groups = _AXIS_GROUPS.get(axis, (axis,))
    if axis in ("horizon", "forks"):
        return [dict(r, point=r["ops"]) for r in runs if r["group"] in groups]
    sweep = [r for r in runs if r["group"] in groups]
    seeds, names = {r["seed"] for r in sweep}, SWEEP_METHODS[axis]
    x = "prompts" if axis in DATA_AXES else "ops"
    if axis == "data-size sweep":
        middle = [r for r in runs if r["group"] == "baselines" and r["variant"] in names]
    else:  # the bound's runs: at the data sweep's length, or at the lengths the
        # comparison and the precise oracle ran
        lengths = {FORK_DATA_OPS} if axis in DATA_AXES else {r["ops"] for r in sweep}
        middle = [r for r in runs if r["group"] in _FORK_GROUPS and r.get("ops") in lengths
                  and _short(r["variant"]) in names]  # fmt: skip
    return [dict(r, point=r[x]) for r in sweep + [r for r in middle if r["seed"] in seeds]]


_FORK_GROUPS = ("forks", "forks long", "forks 12 ops")
"""The groups of the fork chains' bound (π_ref, DRO, DQO and the critics) per length."""

_AXIS_GROUPS = {"forks": _FORK_GROUPS, "forks comparison": ("forks comparison",
                                                           "forks comparison long")}  # fmt: skip
"""The sweeps read from several groups (the longer chains' sets join the shorter ones'); every
other sweep is its own group."""


def sweep_points(runs: Sequence[Mapping[str, Any]], axis: str) -> dict[Any, dict[str, Any]]:
    """Per sweep point (:func:`_picked`): :func:`~.stats.summarize_runs` of its methods, keyed
    by the method's short name."""
    picked = _picked(runs, axis)
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


def contrasts(runs: Sequence[Mapping[str, Any]], axis: str, decoding: str = "greedy") -> dict:
    """Per sweep point, each of :data:`CONTRASTS` [axis] as ``"A − B"`` →
    :func:`~.stats.paired_difference` over the seeds where both ran (the horizon and the data
    size: each method's pairing with its point's DQO, flipped)."""
    if axis in ("horizon", "data-size sweep"):
        return _against_dqo(sweep_points(runs, axis), decoding)
    picked = [r for r in _picked(runs, axis) if "test" in r]
    out: dict[Any, dict[str, Any]] = {}
    for x in sorted({r["point"] for r in picked}):
        by = {(_short(r["variant"]), r["seed"]): r["test"] for r in picked if r["point"] == x}
        row = {}
        for a, b in CONTRASTS[axis]:
            both = [(by[a, s], by[b, s]) for (n, s) in by if n == a and (b, s) in by
                    and decoding in by[a, s] and decoding in by[b, s]]  # fmt: skip
            if both:
                row[f"{a} − {b}"] = paired_difference(both, decoding)
        out[x] = row
    return out


def sweep_table(summary: Mapping[str, Any], runs: Sequence[Mapping[str, Any]], axis: str) -> str:
    """Markdown: per sweep point, greedy accuracy per method (mean ± std over seeds) and the
    paired greedy differences of :data:`CONTRASTS` with their 95 % intervals and sign counts;
    "" if the sweep did not run."""
    points = sweep_points(runs, axis)
    if not points:
        return ""
    names = SWEEP_METHODS[axis]
    x_name = "training prompts" if axis in DATA_AXES else "operations"
    diffs = contrasts(runs, axis)
    heads = [f"{a} − {b}" for a, b in CONTRASTS[axis]]
    lines = [
        f"| {x_name} | " + " | ".join(f"{n} greedy" for n in names) + " | "
        + " | ".join(f"{h} [95 % CI] (seeds > 0)" for h in heads) + " |",
        "|---" * (len(names) + len(heads) + 1) + "|",
    ]  # fmt: skip
    for x, summ in points.items():
        cells = [pct(summ[n]["greedy"]) if "greedy" in summ.get(n, {}) else "–" for n in names]
        cells += [pct(diffs[x][h], "+") if h in diffs.get(x, {}) else "–" for h in heads]
        lines.append(f"| {x} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _against_dqo(points: Mapping[Any, Mapping[str, Any]], decoding: str) -> dict:
    """DQO − DRO and DQO − RFT from the points' summaries (each paired with its DQO)."""
    return {
        x: {f"DQO − {n}": flip(summ[n]["paired"][decoding])
            for n in ("DRO", "RFT") if decoding in summ.get(n, {}).get("paired", {})}
        for x, summ in points.items()
    }  # fmt: skip


def flip(diff: Mapping[str, Any]) -> dict[str, Any]:
    """X − DQO → DQO − X (the mean and the interval change sign, the sign counts swap)."""
    out = dict(diff, mean=0.0 - diff["mean"] + 0.0)  # (+ 0.0: no "-0.0" in the tables)
    if "seeds_above_0" in diff:
        out["seeds_above_0"], out["seeds_below_0"] = diff["seeds_below_0"], diff["seeds_above_0"]
    if "ci95" in diff:
        out["ci95"] = [0.0 - diff["ci95"][1] + 0.0, 0.0 - diff["ci95"][0] + 0.0]
    return out


CRITIC_SIGNALS = ("DQO", "DQO, value warm-up ×5", "DQO, flat critic", *BIASED_FLAT,
                  "DQO, oracle critic", "DQO, λ=0.95", "DQO, λ=0.95, flat critic",
                  RAISED_FLAT_AT_095)  # fmt: skip
"""The fork runs whose training signals tell why a critic hurts: DQO's learned V_φ (with its
two warm-ups), the flat critic, the flat critic shifted, and the oracle; at λ = 0.95 the
learned, flat and raised flat critics."""


def critic_signals(runs: Sequence[Mapping[str, Any]]) -> dict[Any, dict[str, dict[str, Any]]]:
    """Per fork length and :data:`CRITIC_SIGNALS` name: the mean over seeds of each
    second-half training signal (:func:`~.jobs.training_signals`), greedy test accuracy, the
    seed count and the δ mean per step averaged over seeds (``delta_curve``)."""
    out: dict[Any, dict[str, dict[str, Any]]] = {}
    for r in _picked(runs, "forks"):
        name = _short(r["variant"])
        if name in CRITIC_SIGNALS and "second_half" in r.get("train", {}) and "test" in r:
            out.setdefault(r["point"], {}).setdefault(name, {"runs": []})["runs"].append(r)
    for row in out.values():
        for e in row.values():
            got = e.pop("runs")
            keys = set.intersection(*(set(r["train"]["second_half"]) for r in got))
            e |= {k: statistics.fmean(r["train"]["second_half"][k] for r in got) for k in keys}
            e |= {"greedy": statistics.fmean(r["test"]["greedy"] for r in got), "seeds": len(got)}
            curves = [r["train"]["delta_curve"] for r in got if "delta_curve" in r["train"]]
            if curves and len({len(c) for c in curves}) == 1:
                e["delta_curve"] = [statistics.fmean(c) for c in zip(*curves)]
    return {x: {n: row[n] for n in CRITIC_SIGNALS if n in row} for x, row in sorted(out.items())}


_SIGNAL_COLUMNS = ("delta_mean", "log_ratio_mean", "is_weight_mean", "kl_theta_ref")


def signals_table(runs: Sequence[Mapping[str, Any]]) -> str:
    """Markdown of :func:`critic_signals` ("" without fork runs that logged them)."""
    found = critic_signals(runs)
    if not found:
        return ""
    lines = ["| operations | critic | δ mean, 2nd half | log-ratio of the data, 2nd half | "
             "IS weight, 2nd half | KL to π_ref, 2nd half | greedy | seeds |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for x, row in found.items():
        for name, e in row.items():
            cells = [f"{e[k]:+.3f}" if k in e else "–" for k in _SIGNAL_COLUMNS]
            lines.append(f"| {x} | {name} | " + " | ".join(cells)
                         + f" | {100 * e['greedy']:.1f} | {e['seeds']} |")  # fmt: skip
    return "\n".join(lines)
