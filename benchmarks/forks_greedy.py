"""π_ref's greedy accuracy on the fork chains, per length (docs/forks.md): 200 dev problems of
every length 2 … 12, strict grading. Usage:

    python benchmarks/forks_greedy.py MODEL_DIR OUT.json
"""

from __future__ import annotations

import json
import sys

from dqo_tutorial.forks import LENGTHS
from dqo_tutorial.sampling import generate
from dqo_tutorial.tasks import get_task
from dqo_tutorial.viz import load_checkpoint


def main(model: str, out: str, n: int = 200) -> None:
    ref = load_checkpoint(model, "π_ref")
    accuracy = {}
    for length in LENGTHS:
        task = get_task(f"forks-{length}ops")
        problems = task.load("dev", None, n)
        prompts = [task.format_prompt(p.question, ref.tokenizer) for p in problems]
        gens = generate(ref.policy, ref.tokenizer, prompts, temperature=0.0, batch_size=n,
                        max_new_tokens=task.max_new_tokens, record_logps=False)  # fmt: skip
        right = sum(task.is_correct(g.text, problems[g.prompt_index].gold, "strict") for g in gens)
        accuracy[length] = right / len(gens)
        print(length, accuracy[length], flush=True)
    with open(out, "w") as f:
        json.dump({"model": model, "dev_problems": n, "greedy": accuracy}, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
