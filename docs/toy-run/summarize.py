"""Write docs/toy-run/results.json, the committed record of the last full-size toy comparison
that notebook 08 reads (issue 19: no number in the text is typed in).

    dqo-tutorial run --config configs/toy.yaml --out outputs/toy     # ~7 min on a 2-core CPU
    python docs/toy-run/summarize.py outputs/toy docs/toy-run/results.json

Keeps the pipeline's results.json (accuracies, train steps and times, data summary) minus the
bulky per-run configs, plus every model's per-problem outcomes from its ``outputs.jsonl``:
``greedy`` a string of 0/1 (one per test problem, in problem order) and ``sampling`` a string
of digits (the number of correct samples of each problem, out of ``num_samples``), so that
paired and clustered standard errors can be recomputed without the 15,000 raw records.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from dqo_tutorial import evaluate


def summarize(run_dir: Path) -> dict:
    payload = json.loads((run_dir / "results.json").read_text())
    models = {}
    for name, res in sorted(payload["results"].items()):
        if "skipped" in res:
            models[name] = {"skipped": res["skipped"]}
            continue
        lines = (run_dir / "eval" / name / "outputs.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        greedy = evaluate.per_problem_outcomes(records, "greedy")
        sampling = evaluate.per_problem_outcomes(records, "sampling")
        models[name] = {
            "accuracy": {d: res["accuracy"][d]["strict"] for d in ("greedy", "sampling")},
            "train_steps": res.get("train_steps"),
            "train_s": res.get("train_s"),
            "greedy": "".join(str(int(o[0])) for o in greedy),
            "sampling": "".join(str(sum(o)) for o in sampling),
            "num_samples": res["decoding"]["num_samples"],
        }
        if "credit" in res:  # the credit stage: blame of the model's signal (and critic)
            models[name]["credit"] = res["credit"]
    return {
        "made_by": "dqo-tutorial run --config configs/toy.yaml; docs/toy-run/summarize.py",
        "config": payload["config"],
        "data": payload["data"],
        "wall_s": payload["wall_s_this_run"],
        "models": models,
    }


if __name__ == "__main__":
    run_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.write_text(json.dumps(summarize(run_dir), indent=1, sort_keys=True) + "\n")
