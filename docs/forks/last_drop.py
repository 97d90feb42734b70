"""Where do DQO's learned critics put their largest drop at 12 operations? (docs/forks.md §1)

On the wrong π_ref responses `dqo-tutorial credit` scores (50 held-out forks-12ops problems × 4,
seed 0), the share whose most negative one-step advantage r_h + V_φ(s_{h+1}) − V_φ(s_h) is the
last token (where the outcome enters), and the mean absolute advantage before it and at it, for seed
0's learned critics at λ = 1, 0 and 0.95. Needs the study's runs on disk (outputs/forks-claims):

    python docs/forks/last_drop.py > docs/forks/study/credit-12ops-seed0/last-drop.txt
"""

from __future__ import annotations

import numpy as np

from dqo_tutorial.credit_study import _signals, held_out_responses
from dqo_tutorial.viz import load_checkpoint

STUDY = "outputs/forks-claims"
RUNS = {"λ = 1": "dqo-forks-12-ops-2839c88f", "λ = 0": "dqo-λ-0-forks-12-ops-c10022c2",
        "λ = 0.95": "dqo-λ-0-95-forks-12-ops-4014d597"}  # fmt: skip


def main() -> None:
    ref = load_checkpoint(f"{STUDY}/reference-forks-5bf61e22/policy", "π_ref")
    found = held_out_responses(ref, task="forks-12ops", n_problems=50, k=4, seed=0)
    items = [f for f in found if f.blameable]
    print("| learned critic | wrong responses | largest drop at the last token | "
          "mean abs. advantage before it | at it |\n|---|---|---|---|---|")  # fmt: skip
    for name, folder in RUNS.items():
        run = load_checkpoint(f"{STUDY}/runs/seed-0/{folder}/train", name)
        adv = [np.asarray(_signals(run, ref.policy, i, 0.1)["critic"]) for i in items]
        last = np.mean([int(np.argmin(a)) == len(a) - 1 for a in adv])
        before = np.mean([np.abs(a[:-1]).mean() for a in adv])
        at = np.mean([abs(a[-1]) for a in adv])
        print(f"| {name} | {len(items)} | {100 * last:.1f} % | {before:.4f} | {at:.4f} |")


if __name__ == "__main__":
    main()
