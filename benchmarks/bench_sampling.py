"""Sampling throughput of the package's samplers, side by side in one run (figures, not
pass/fail).

For each batch size and engine — ``decode`` (:class:`dqo_tutorial.decoding.DecodeSampler`),
``generate`` (:class:`dqo_tutorial.sampling.HFSampler`, dynamic KV cache) and
``generate-static`` (the same with a static cache, which transformers compiles on a GPU) — the
same prompts are sampled at τ = 1 with log μ recorded (as ``build_dataset`` records it at
τ ≠ 1); a first, untimed call per setting warms up (and compiles). Printed per setting: seconds,
responses/s, response tokens/s, mean response length, cut share, on CUDA the peak memory, and
whether the responses equal those of the first setting of the same engine family: ``decode``
at every batch size (its rows have their own streams), ``generate`` vs ``generate-static`` at
one batch size.

    python benchmarks/bench_sampling.py [--model toy|smollm2|PATH] [--task toy|gsm8k]
        [--prompts 256] [--samples 4] [--batch-sizes 256,2048]
        [--engines decode,generate,generate-static] [--max-new-tokens N]
        [--device cpu|cuda] [--dtype float32|bfloat16]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from dqo_tutorial.decoding import DecodeSampler
from dqo_tutorial.models import load_model_and_tokenizer
from dqo_tutorial.sampling import HFSampler
from dqo_tutorial.tasks import get_task


def sampler_of(engine: str, model, tok, batch_size: int):
    if engine == "decode":
        return DecodeSampler(model, tok, batch_size=batch_size)
    cache = "static" if engine == "generate-static" else "dynamic"
    return HFSampler(model, tok, batch_size=batch_size, kv_cache=cache)


def run_setting(model, tok, prompt_ids, args, batch_size: int, engine: str) -> dict:
    sampler = sampler_of(engine, model, tok, batch_size)
    law = dict(num_samples=args.samples, temperature=1.0, top_p=1.0,
               max_new_tokens=args.max_new_tokens, seed=0)  # fmt: skip
    sampler.sample(prompt_ids[: max(1, batch_size // args.samples)], **law)  # warm-up/compile
    if model.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    gens = sampler.sample(prompt_ids, **law)
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    tokens = sum(len(g.response_ids) for g in gens)
    return {
        "batch_size": batch_size,
        "engine": engine,
        "seconds": seconds,
        "responses_per_s": len(gens) / seconds,
        "tokens_per_s": tokens / seconds,
        "mean_tokens": tokens / len(gens),
        "cut_share": sum(not g.finished for g in gens) / len(gens),
        "peak_mib": torch.cuda.max_memory_allocated() / 2**20
        if model.device.type == "cuda"
        else None,
        "responses": [g.response_ids for g in gens],
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="toy")
    p.add_argument("--task", default="toy")
    p.add_argument("--prompts", type=int, default=256)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--batch-sizes", default="256,2048")
    p.add_argument("--engines", default="decode,generate,generate-static")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: the task's")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, else float32")
    p.add_argument("--json", help="also write the rows (without responses) to this file")
    args = p.parse_args(argv)
    task = get_task(args.task)
    args.max_new_tokens = args.max_new_tokens or task.max_new_tokens
    dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    model, tok = load_model_and_tokenizer(args.model, device=args.device, dtype=dtype)
    problems = task.load("train", None, args.prompts)
    prompt_ids = [tok(task.format_prompt(q.question, tok), add_special_tokens=False)["input_ids"]
                  for q in problems]  # fmt: skip
    print(f"torch {torch.__version__}, {args.model} on {args.device} ({dtype}), threads "
          f"{torch.get_num_threads()}; {len(prompt_ids)} prompts x {args.samples} samples, "
          f"{args.max_new_tokens} new tokens at most")  # fmt: skip
    rows, first = [], {}
    for bs in (int(x) for x in args.batch_sizes.split(",")):
        for engine in args.engines.split(","):
            row = run_setting(model, tok, prompt_ids, args, bs, engine)
            family = "decode" if engine == "decode" else f"generate-{bs}"
            first.setdefault(family, row["responses"])
            row["same_responses"] = row.pop("responses") == first[family]
            rows.append(row)
            peak = "" if row["peak_mib"] is None else f"  peak {row['peak_mib']:.0f} MiB"
            print(f"batch {bs:>5}  {engine:<16} {row['seconds']:8.1f} s  "
                  f"{row['responses_per_s']:8.1f} resp/s  {row['tokens_per_s']:9.0f} tok/s  "
                  f"mean {row['mean_tokens']:.0f} tok, cut {row['cut_share']:.0%}  same "
                  f"{row['same_responses']}{peak}", flush=True)  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
