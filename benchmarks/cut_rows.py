"""How many rows the one outcome rule (dqo_tutorial/rewards.py) changes, per method.

    python benchmarks/cut_rows.py outputs/toy/data [more dataset dirs ...]

Before the rule, RFT, DPO and DRO read the text-graded ``reward`` of every row — a length-cut
response showing ``#### N`` counted as correct — while DQO treated the same row as unfinished.
Now a cut response has no outcome: RFT never takes it, DPO pairs only finished responses, DRO
leaves it out, DQO keeps it (bootstrapped). This prints, for each dataset, the rows each method
trains on under the text-graded reading and under the rule.
"""

from __future__ import annotations

import sys

from dqo_tutorial.train import build_examples, dpo_pairs, load_rows


def counts(data: str) -> dict[str, tuple[int, int]]:
    rows = load_rows(data)
    graded = [dict(r, terminal=True) for r in rows]  # every row read by its text grade
    rows = list(rows)
    cut_correct = [r["reward"] > 0.5 and not r["terminal"] for r in rows]
    return {
        "rows": (len(rows), len(rows)),
        "cut rows": (sum(not r["terminal"] for r in rows),) * 2,
        "cut rows graded correct": (sum(cut_correct),) * 2,
        "RFT positives": (len(build_examples("rft", graded)), len(build_examples("rft", rows))),
        "DPO pairs": (len(dpo_pairs(graded)), len(dpo_pairs(rows))),
        "DRO responses": (len(graded), len(build_examples("dro", rows))),
        "DQO responses": (len(rows), len(build_examples("dqo", rows))),
    }


if __name__ == "__main__":
    for data in sys.argv[1:]:
        print(f"{data}: (text-graded → one rule)")
        for name, (old, new) in counts(data).items():
            change = "" if old == new else f" ({new - old:+d})"
            print(f"  {name:<24} {old:>6} → {new:<6}{change}")
