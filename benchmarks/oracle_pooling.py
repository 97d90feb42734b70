"""The oracle critic's rollouts, unpooled vs pooled along the prefix tree, side by side in one run.

Both estimators label the same sampled rows (every sample of the first ``--prompts`` prompts of
a fork-chain dataset) with π_ref's success probability at the oracle's anchors
(:mod:`dqo_tutorial.oracle`, k rollouts per anchor); printed per estimator: distinct states,
rollouts drawn, tokens generated, wall time, and the mean anchor value (both are unbiased for the
same V, so the means differ by Monte-Carlo noise only). Rollouts and tokens do not depend on the
machine's load; wall time does.

    python benchmarks/oracle_pooling.py --task forks-6ops \\
        --data outputs/forks-claims/data/forks-6ops-100p/seed-0/exact \\
        --reference outputs/forks-claims/reference-forks-5bf61e22/policy
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from dqo_tutorial.decoding import DecodeSampler, Generation
from dqo_tutorial.models import load_model_and_tokenizer
from dqo_tutorial.oracle import ORACLE_DELTA, anchor_positions
from dqo_tutorial.sampling import monte_carlo_potentials
from dqo_tutorial.tasks import get_task
from dqo_tutorial.train import load_rows


class Counting:
    """A sampler that counts what the wrapped one draws."""

    def __init__(self, inner):
        self.inner, self.rows, self.tokens = inner, 0, 0

    def sample(self, prompt_ids, **kw):
        return self._count(self.inner.sample(prompt_ids, **kw))

    def sample_counts(self, prompt_ids, counts, **kw):
        return self._count(self.inner.sample_counts(prompt_ids, counts, **kw))

    def _count(self, out):
        self.rows += len(out)
        self.tokens += sum(len(g.response_ids) for g in out)
        return out


def _inputs(rows):
    gens, golds, positions = [], [], []
    for r in rows:
        n = len(r["input_ids"]) - sum(r["action_mask"])
        gens.append(
            Generation(
                r["prompt_index"],
                r["sample_index"],
                list(r["input_ids"][:n]),
                list(r["input_ids"][n:]),
                r["terminal"],
                r["response"],
                None,
            )
        )
        golds.append(r["gold"])
        positions.append(anchor_positions(r["ref_logps"][n:], r["terminal"], ORACLE_DELTA))
    return gens, golds, positions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--reference", required=True)
    ap.add_argument("--task", required=True)
    ap.add_argument("--prompts", type=int, default=25)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load_model_and_tokenizer(args.reference, device="cpu")
    task = get_task(args.task)
    rows = [r for r in load_rows(args.data) if r["prompt_index"] < args.prompts]
    gens, golds, positions = _inputs(rows)
    report = {"rows": len(rows), "anchors": sum(map(len, positions)), "k": args.k}
    for pooled in (False, True):
        sampler = Counting(DecodeSampler(model, tok, 256))
        t = time.perf_counter()
        found = monte_carlo_potentials(
            model,
            tok,
            gens,
            golds,
            k=args.k,
            temperature=1.0,
            top_p=1.0,
            max_new_tokens=task.max_new_tokens,
            seed=0,
            batch_size=256,
            grader=task.is_correct,
            sampler=sampler,
            positions=positions,
            pooled=pooled,
        )
        report["pooled" if pooled else "unpooled"] = {
            "rollouts": sampler.rows,
            "tokens": sampler.tokens,
            "wall_s": round(time.perf_counter() - t, 1),
            "mean_value": round(statistics.fmean(v for f in found for _, v in f), 4),
        }
    for key in ("rollouts", "tokens", "wall_s"):
        report[f"{key}_ratio"] = round(report["pooled"][key] / report["unpooled"][key], 3)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
