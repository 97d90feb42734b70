"""Print docs/forks.md's accuracy and contrast tables from the committed study, per fork axis.

The page's tables are pasted from this output; tests/test_forks.py checks every row against
docs/forks/study/results.json independently of this script.

    python docs/forks/page_tables.py [axis ...]    # default: every axis, the signals, the knobs
    python docs/forks/page_tables.py replication   # the 12-operation replication
    python docs/forks/page_tables.py learned       # the learned critics at 12 operations
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from dqo_tutorial.experiments.sweeps import (
    CONTRASTS,
    DATA_AXES,
    SWEEP_METHODS,
    contrasts,
    signals_table,
    sweep_points,
)

DECODINGS = ("greedy", "sampling")
AXES = ("forks", "forks data size", "forks comparison", "forks oracle precision")


def _header(first: str, points, axis: str) -> str:
    unit = "prompts" if axis in DATA_AXES else "ops"
    cols = [f"{x} {unit} {d}" for x in points for d in DECODINGS]
    return f"| {first} | " + " | ".join(cols) + " |\n|---" + "|---" * len(cols) + "|"


def accuracy_table(runs, axis: str) -> str:
    points = sweep_points(runs, axis)
    lines = [_header("method", points, axis)]
    for name in SWEEP_METHODS[axis]:
        cells = [f"{100 * e['mean']:.1f} ± {100 * e['std']:.1f}" if e else "–"
                 for x in points for d in DECODINGS
                 for e in [points[x].get(name, {}).get(d)]]  # fmt: skip
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(e) -> str:
    """A paired difference in points: mean [95 % interval] (seeds above 0 / seeds)."""
    low, high = e["ci95"]
    return (f"{100 * e['mean']:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}] "
            f"({e['seeds_above_0']}/{e['n_seeds']})")  # fmt: skip


def contrast_table(runs, axis: str) -> str:
    points = sweep_points(runs, axis)
    by = {d: contrasts(runs, axis, d) for d in DECODINGS}
    lines = [_header("A − B (points)", points, axis)]
    for a, b in CONTRASTS[axis]:
        head, cells = f"{a} − {b}", []
        for x in points:
            for d in DECODINGS:
                e = by[d].get(x, {}).get(head)
                cells.append("–" if e is None else _cell(e))
        lines.append(f"| {head} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def knob_table(knob_tuning) -> str:
    """Dev greedy of every knob set (the tuning seed's data; the chosen one in bold) and its
    mean δ over training's second half (a rounded zero printed +0.000: ``+ 0.0`` drops −0)."""
    lines = ["| task | method | knob set | dev greedy (seed 0) | δ mean, 2nd half |",
             "|---|---|---|---|---|"]  # fmt: skip
    for k in knob_tuning:
        knobs = ", ".join(f"{n} = {v}" for n, v in sorted(k["knobs"].items())) or "defaults"
        dev = f"{100 * k['dev']:.1f}"
        delta = k["second_half"].get("delta_mean")
        lines.append(f"| {k['task']} | {k['method'].upper()} | {knobs} | "
                     f"{f'**{dev}**' if k['chosen'] else dev} | "
                     f"{'–' if delta is None else f'{round(delta, 3) + 0.0:+.3f}'} |")  # fmt: skip
    return "\n".join(lines)


REPLICATION = ("DQO, λ=0, oracle critic − DQO, flat critic",
               "DQO, oracle critic − DQO, flat critic")  # fmt: skip
"""The replication's contrasts at 12 operations (docs/forks/replication-12ops.md; the first,
sampled, on its own seeds: the primary one)."""


LEARNED = ("DQO, λ=0 − DQO, flat critic", "DQO, λ=0, oracle critic − DQO, λ=0",
           "DQO, λ=0.95 − DQO, flat critic")  # fmt: skip
"""The learned critics' contrasts at 12 operations, seeds 0–9 (docs/forks/learned-critic-12ops.md;
the first, sampled: the primary one)."""


def twelve_ops_table(fresh, earlier, heads, seeds=("5–9", "0–9")) -> str:
    """Contrasts at 12 operations on seeds 5–9 (``fresh``) and pooled with the study's 0–4."""
    lines = ["| A − B (points), 12 ops | seeds | greedy | sampling |", "|---|---|---|---|"]
    twelve = [r for r in earlier if r.get("ops") == 12]
    runs_of = {"5–9": fresh, "0–9": twelve + fresh}
    for head in heads:
        for label in seeds:
            cells = [_cell(contrasts(runs_of[label], "forks", d)[12][head]) for d in DECODINGS]
            lines.append(f"| {head} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    study = Path(__file__).resolve().parent / "study"
    payload = json.loads((study / "results.json").read_text())
    runs = payload["runs"]
    twelve = {"replication": (REPLICATION, ("5–9", "0–9")), "learned": (LEARNED, ("0–9",))}
    if len(sys.argv) == 2 and sys.argv[1] in twelve:
        fresh = json.loads((study / "replication-12ops.json").read_text())["runs"]
        print(twelve_ops_table(fresh, runs, *twelve[sys.argv[1]]))
        return
    for axis in sys.argv[1:] or AXES:
        print(f"## {axis}\n\n{accuracy_table(runs, axis)}\n\n{contrast_table(runs, axis)}\n")
    if not sys.argv[1:]:
        print(f"## training signals\n\n{signals_table(runs)}\n")
        print(f"## knob sets\n\n{knob_table(payload['knob_tuning'])}")


if __name__ == "__main__":
    main()
