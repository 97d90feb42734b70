"""Training-step throughput of DQO, our DPO and TRL's DPOTrainer, side by side in one run.

Same model, same batch of token sequences for every method: P GSM8K prompts (chat template
applied), each with its gold solution (chosen) and the gold solution of another problem
(rejected), i.e. 2P sequences, chosen rows first then rejected rows, right-padded. The ids are
checked to be identical across the three methods (TRL tokenises the texts itself).

A step is a full optimiser step: forward + backward + gradient clipping (max norm 1, as the
package's trainer and ``transformers.Trainer`` do) + ``torch.optim.AdamW`` step + zero_grad.

1. ``dqo``: ``compute_losses("dqo", ...)`` on the policy and a separate ``ValueModel`` (a copy
   of the trunk + scalar head), both losses backward, both optimiser steps. Stored reference and
   behaviour log-probs (as in the offline dataset), prefix importance weights, λ = 1.
2. ``dpo (ours)``: ``compute_losses("dpo", ...)`` with stored (precomputed) reference
   log-probs: one policy forward/backward per step, no reference model in memory.
3. ``trl dpo (precomputed ref)``: ``DPOTrainer.training_step`` (forward + backward through
   TRL's fused LM head) + the same clipping and AdamW step, with
   ``precompute_ref_log_probs=True`` (reference log-probs computed once at trainer construction
   and read from the batch): the like-for-like comparison with 2.
4. ``trl dpo (live ref)``: the same with a reference model in memory and its no-grad forward in
   every step (TRL's default mode); ``--no-live-ref`` skips it.

Tokens/s counts real (non-pad) tokens of the batch per median step time. Then the DQO step is
split into phases with simple timers (a device synchronisation at each boundary): the policy
and value forwards are timed by hooks on the two modules inside ``compute_losses``; the rest of
``compute_losses`` (log-prob gather, λ-returns, importance weights, losses) is reported as
"log-probs + DQO kernels"; the policy and value losses are backpropagated separately (their
graphs are disjoint, so this gives the same gradients as one backward of their sum). Every
figure is the median over ``--repeats`` steps after ``--warmup`` steps (the phase timing reuses
the warm DQO models). The methods run one after the other, each training its own fresh copy of
the model, so on a shared CPU other processes can skew one method more than another (the load
average is printed). No autocast anywhere: ``--dtype`` is the dtype of the weights. On CUDA
the peak memory of each method (``torch.cuda.max_memory_allocated``: its models, optimiser
states, activations) is printed too.

    python benchmarks/bench_train.py [--model smollm2|tiny|PATH] [--device cpu|cuda]
                                     [--dtype fp32|bf16] [--pairs 4] [--repeats 3] [--warmup 1]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch

from dqo_tutorial.collate import DQOCollator, tokenize_example
from dqo_tutorial.gsm8k import format_gold_solution, format_prompt, load_gsm8k
from dqo_tutorial.modeling import ValueModel, per_token_logprobs
from dqo_tutorial.models import (
    load_model_and_tokenizer,
    resolve_dtype,
    tiny_causal_lm,
    tiny_tokenizer,
)
from dqo_tutorial.train import TrainConfig, build_examples, compute_losses

MiB = 2**20
LR = 1e-6
# dense bf16 tensor-core peaks (vendor data sheets, TFLOP/s) for the MFU column
PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "L4": 121.0}
MAX_GRAD_NORM = 1.0


# --------------------------------------------------------------------------------------------
# model, texts and the shared batch
# --------------------------------------------------------------------------------------------


def load_model(spec: str, device: str, dtype: torch.dtype):
    """The model on the CPU (each method copies it to ``device``) and its tokenizer."""
    if spec == "tiny":
        tok = tiny_tokenizer()
        model = tiny_causal_lm(len(tok), n_layers=4, hidden=128, heads=4, max_positions=2048)
        return model.to(dtype), tok
    model, tok = load_model_and_tokenizer(spec, device="cpu", dtype=dtype)
    return model, tok


def make_texts(tokenizer, pairs: int) -> list[dict[str, str]]:
    """P (prompt, chosen, rejected): gold solution vs another problem's gold solution."""
    problems = load_gsm8k("train", "embedded", 2 * pairs)
    return [
        {
            "prompt": format_prompt(problems[i].question, tokenizer),
            "chosen": format_gold_solution(problems[i].answer),
            "rejected": format_gold_solution(problems[i + pairs].answer),
        }
        for i in range(pairs)
    ]


def sampled_rows(texts, tokenizer, reference: torch.nn.Module, device) -> list[dict[str, Any]]:
    """The 2P sequences in the sampled-dataset row format (chosen rows first, then rejected):
    stored log π_ref = log μ from one no-grad forward of the reference, reward 1 / 0, terminal."""
    order = [(t["prompt"], t["chosen"], i, 1.0) for i, t in enumerate(texts)]
    order += [(t["prompt"], t["rejected"], i, 0.0) for i, t in enumerate(texts)]
    examples = [tokenize_example(tokenizer, p, r, add_eos=True) for p, r, _, _ in order]
    batch = DQOCollator(tokenizer.pad_token_id, "right")(
        [{"input_ids": e["input_ids"], "action_mask": e["action_mask"]} for e in examples]
    )
    ref = copy.deepcopy(reference).to(device)
    with torch.no_grad():
        logps = per_token_logprobs(
            ref, batch["input_ids"].to(device), batch["attention_mask"].to(device)
        )
    logps = torch.where(batch["action_mask"].to(device), logps, 0.0).cpu()
    del ref
    rows = []
    for k, (e, (_, _, prompt_index, reward)) in enumerate(zip(examples, order)):
        stored = logps[k, : len(e["input_ids"])].tolist()
        rows.append(
            {
                "prompt_index": prompt_index,
                "input_ids": e["input_ids"],
                "action_mask": e["action_mask"],
                "ref_logps": stored,
                "behavior_logps": stored,
                "reward": reward,
                "terminal": e["terminal"],
            }
        )
    return rows


def to_device(batch: dict[str, Any], device) -> dict[str, Any]:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


# --------------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------------


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed_steps(step: Callable[[], Any], warmup: int, repeats: int, device) -> list[float]:
    """Seconds per call of ``step`` (synchronised), after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def optimiser_step(model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
    torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
    opt.step()
    opt.zero_grad(set_to_none=True)


def reset_peak(device) -> None:
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_mib(device) -> float | None:
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated() / MiB
    return None


# --------------------------------------------------------------------------------------------
# the methods
# --------------------------------------------------------------------------------------------


def bench_ours(method, base, rows, tokenizer, args) -> dict[str, Any]:
    """Our DQO (policy + separate value model) or DPO (stored reference log-probs) step."""
    reset_peak(args.device)
    policy = copy.deepcopy(base).to(args.device).train()
    cfg = TrainConfig(method=method, beta=args.beta)
    collator = DQOCollator(tokenizer.pad_token_id, "right")
    examples = build_examples(method, rows, pairs_per_prompt=1)
    if method == "dpo":  # chosen rows first, then rejected rows: TRL's order
        examples = [e["chosen"] for e in examples] + [e["rejected"] for e in examples]
    batch = to_device(collator(examples), args.device)
    num_items = batch["input_ids"].shape[0] // 2 if method == "dpo" else batch["action_mask"].sum()
    value = ValueModel.from_causal_lm(policy).train() if method == "dqo" else None
    opt_p = torch.optim.AdamW(policy.parameters(), lr=LR)
    opt_v = torch.optim.AdamW(value.parameters(), lr=10 * LR) if value is not None else None
    losses = []

    def step() -> None:
        pl, vl, _ = compute_losses(method, batch, policy, value, cfg, num_items)
        (pl if vl is None else pl + vl).backward()
        losses.append(pl.item())
        optimiser_step(policy, opt_p)
        if value is not None:
            optimiser_step(value, opt_v)

    times = timed_steps(step, args.warmup, args.repeats, args.device)
    out = {"times": times, "peak_mib": peak_mib(args.device), "first_loss": losses[0]}
    out["batch"] = {k: batch[k].cpu() for k in ("input_ids", "attention_mask", "action_mask")}
    if method == "dqo":
        out["phases"] = dqo_phases(batch, policy, value, cfg, num_items, opt_p, opt_v, args)
    return out


def dqo_phases(batch, policy, value, cfg, num_items, opt_p, opt_v, args) -> dict[str, float]:
    """Median seconds of each phase of the DQO step (timers with a sync at each boundary).

    Runs right after the throughput steps on the same, already warm models: no extra warm-up."""
    dev = args.device
    marks: dict[str, float] = {}

    def hooks(module: torch.nn.Module, name: str) -> list[Any]:
        def pre(*_):
            sync(dev)
            marks[name + "_start"] = time.perf_counter()

        def post(*_):
            sync(dev)
            marks[name + "_end"] = time.perf_counter()

        return [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]

    handles = hooks(policy, "policy") + hooks(value, "value")
    phases: dict[str, list[float]] = {}

    def record(name: str, seconds: float) -> None:
        phases.setdefault(name, []).append(seconds)

    try:
        for _ in range(args.repeats):
            sync(dev)
            t0 = time.perf_counter()
            pl, vl, _ = compute_losses("dqo", batch, policy, value, cfg, num_items)
            sync(dev)
            t1 = time.perf_counter()
            pl.backward()
            sync(dev)
            t2 = time.perf_counter()
            vl.backward()
            sync(dev)
            t3 = time.perf_counter()
            optimiser_step(policy, opt_p)
            optimiser_step(value, opt_v)
            sync(dev)
            t4 = time.perf_counter()
            fwd_p = marks["policy_end"] - marks["policy_start"]
            fwd_v = marks["value_end"] - marks["value_start"]
            record("policy forward (model)", fwd_p)
            record("value forward (model)", fwd_v)
            record("log-probs + DQO kernels", (t1 - t0) - fwd_p - fwd_v)
            record("policy backward", t2 - t1)
            record("value backward", t3 - t2)
            record("value forward + backward", fwd_v + (t3 - t2))
            record("optimisers (clip + AdamW, both)", t4 - t3)
            record("total (instrumented)", t4 - t0)
    finally:
        for h in handles:
            h.remove()
    return {name: statistics.median(v) for name, v in phases.items()}


def trl_config_kwargs(args, out_dir: str, precompute: bool) -> dict[str, Any]:
    from trl import DPOConfig

    kwargs = dict(
        output_dir=out_dir,
        report_to=[],
        beta=args.beta,
        loss_type=["sigmoid"],
        use_cpu=torch.device(args.device).type == "cpu",
        bf16=False,  # no autocast: the weights' dtype is --dtype, as for our methods
        fp16=False,
        max_length=None,
        per_device_train_batch_size=args.pairs,
        precompute_ref_log_probs=precompute,
        dataloader_num_workers=0,
        max_grad_norm=MAX_GRAD_NORM,
        learning_rate=LR,
    )
    # TRL turns activation checkpointing on by default; ours runs without it. transformers 5
    # renamed the field (gradient_checkpointing is its deprecated alias).
    fields = {f.name for f in dataclasses.fields(DPOConfig)}
    ckpt = (
        "activation_checkpointing"
        if "activation_checkpointing" in fields
        else "gradient_checkpointing"
    )
    kwargs[ckpt] = False
    return kwargs


def bench_trl(base, texts, tokenizer, args, precompute: bool) -> dict[str, Any]:
    """TRL's DPOTrainer: training_step (forward + backward) + clip + AdamW step."""
    import datasets
    import huggingface_hub.constants
    from trl import DPOConfig, DPOTrainer

    huggingface_hub.constants.HF_HUB_DISABLE_TELEMETRY = True  # no usage ping from the trainer
    datasets.disable_progress_bars()
    os.environ.setdefault("TQDM_DISABLE", "1")  # TRL's reference-log-prob progress bar
    # TRL 1.16 still calls the pre-rename `is_gradient_checkpointing` of transformers 5.x.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")
    reset_peak(args.device)
    policy = copy.deepcopy(base).to(args.device)
    # Precomputed mode: no reference in memory; TRL computes the reference log-probs with the
    # policy itself at construction (policy == reference then). Live mode: a frozen copy.
    ref = None if precompute else copy.deepcopy(base).to(args.device)
    opt = torch.optim.AdamW(policy.parameters(), lr=LR)
    with tempfile.TemporaryDirectory() as out_dir:
        trainer = DPOTrainer(
            model=policy,
            ref_model=ref,
            args=DPOConfig(**trl_config_kwargs(args, out_dir, precompute)),
            train_dataset=datasets.Dataset.from_list(texts),
            processing_class=tokenizer,
            optimizers=(opt, None),
        )
        rows = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
        inputs = trainer._prepare_inputs(trainer.data_collator(rows))
        # Set by Trainer's own loop before it calls training_step; we call training_step directly.
        trainer.current_gradient_accumulation_steps = 1
        losses = []

        def step() -> None:
            loss = trainer.training_step(trainer.model, inputs)
            losses.append(loss.item())
            optimiser_step(trainer.model, opt)

        times = timed_steps(step, args.warmup, args.repeats, args.device)
        out = {"times": times, "peak_mib": peak_mib(args.device), "first_loss": losses[0]}
        out["batch"] = {
            "input_ids": inputs["input_ids"].cpu(),
            "attention_mask": inputs["attention_mask"].cpu(),
            "action_mask": inputs["completion_mask"].cpu().bool(),
        }
        trainer.accelerator.free_memory()  # drop the accelerator's references to the models
    return out


def matmul_params(model: torch.nn.Module) -> tuple[int, int]:
    """(N, head): parameters that take part in a matrix product per token — all but the input
    embedding (a lookup), the LM head counted once even when tied to it — and the head's share."""
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    total = sum(p.numel() for p in model.parameters())
    tied = head is emb
    return total - emb.numel() + (head.numel() if tied else 0), head.numel()


def step_flops(method: str, model: torch.nn.Module, lengths: list[int]) -> float:
    """Model FLOPs of one training step (PaLM's convention, no recomputation counted):
    forward + backward = 6·N·T for the matrix products plus 6·L·d·Σᵢ Tᵢ² for causal attention
    (T real tokens, Tᵢ the length of sequence i). DQO adds the value model (N − head + d, its
    scalar head); TRL's live mode adds the reference's forward (a third of a training pass)."""
    cfg = model.config
    n, head = matmul_params(model)
    tokens, attn = (
        sum(lengths),
        6 * cfg.num_hidden_layers * cfg.hidden_size * sum(t * t for t in lengths),
    )
    policy = 6 * n * tokens + attn
    if method.startswith("dqo"):
        return policy + 6 * (n - head + cfg.hidden_size) * tokens + attn
    if "live ref" in method:
        return policy + (policy / 3)
    return policy


def same_batch(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="smollm2", help="smollm2, tiny, or a model path/hub id")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="fp32", help="weights' dtype: fp32, bf16, fp16")
    p.add_argument("--pairs", type=int, default=4, help="P pairs = 2P sequences per batch")
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="the device's dense bf16 peak for the MFU column (default: looked up by GPU name)",
    )
    p.add_argument("--no-trl", action="store_true", help="skip TRL's DPOTrainer")
    p.add_argument("--no-live-ref", action="store_true", help="skip TRL with a live reference")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = resolve_dtype(args.dtype)
    torch.manual_seed(0)

    base, tok = load_model(args.model, args.device, dtype)
    n_params = sum(p.numel() for p in base.parameters())
    texts = make_texts(tok, args.pairs)
    rows = sampled_rows(texts, tok, base, args.device)
    n_tokens = sum(len(r["input_ids"]) for r in rows)
    n_actions = sum(sum(r["action_mask"]) for r in rows)
    lengths = [len(r["input_ids"]) for r in rows]

    versions = f"torch {torch.__version__}"
    try:
        import transformers
        import trl

        versions += f", transformers {transformers.__version__}, trl {trl.__version__}"
    except ImportError:
        args.no_trl = True
    print(f"{versions}; device {args.device}, dtype {dtype}, threads {torch.get_num_threads()}")
    print(
        f"model {args.model} ({n_params / 1e6:.1f} M parameters); batch: {len(rows)} sequences "
        f"({args.pairs} pairs) of {min(lengths)}-{max(lengths)} tokens (mean "
        f"{n_tokens / len(rows):.0f}), {n_tokens} real tokens ({n_actions} response tokens), "
        f"padded to {len(rows)} x {max(lengths)}"
    )
    print(f"median of {args.repeats} steps after {args.warmup} warm-up step(s); AdamW, clip 1.0\n")

    if torch.device(args.device).type == "cpu" and hasattr(os, "getloadavg"):
        print(f"load average before: {os.getloadavg()[0]:.2f} (other processes skew CPU timings)")
    results: dict[str, dict[str, Any]] = {}
    results["dqo (policy + value model)"] = bench_ours("dqo", base, rows, tok, args)
    results["dpo (ours, stored ref)"] = bench_ours("dpo", base, rows, tok, args)
    if not args.no_trl:
        results["trl dpo (precomputed ref)"] = bench_trl(base, texts, tok, args, True)
        if not args.no_live_ref:
            results["trl dpo (live ref model)"] = bench_trl(base, texts, tok, args, False)

    if torch.device(args.device).type == "cpu" and hasattr(os, "getloadavg"):
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    batches = [r["batch"] for r in results.values()]
    identical = all(same_batch(batches[0], b) for b in batches[1:])
    print(f"identical token ids, attention and action/completion masks: {identical}")
    if not identical:
        print("WARNING: the methods did not see the same sequences; ratios are not comparable")

    cuda = torch.device(args.device).type == "cuda"
    peak = args.peak_tflops
    if peak is None and cuda:
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
        print(f"GPU {name}; dense bf16 peak {peak} TFLOP/s" if peak else f"GPU {name}")
    header = f"{'method':<30}{'step (s)':>10}{'min-max (s)':>16}{'tokens/s':>11}{'1st loss':>10}"
    header += f"{'TFLOP/s':>9}" + (f"{'MFU':>7}" if peak else "")
    print("\n" + header + (f"{'peak MiB':>10}" if cuda else ""))
    tps = {}
    for name, r in results.items():
        med = statistics.median(r["times"])
        tps[name] = n_tokens / med
        spread = f"{min(r['times']):.3f}-{max(r['times']):.3f}"
        line = f"{name:<30}{med:>10.3f}{spread:>16}{tps[name]:>11.0f}{r['first_loss']:>10.4f}"
        tflops = step_flops(name, base, lengths) / med / 1e12
        line += f"{tflops:>9.2f}" + (f"{tflops / peak:>7.1%}" if peak else "")
        print(line + (f"{r['peak_mib']:>10.0f}" if cuda else ""))

    print("(TFLOP/s: model FLOPs of the step (step_flops: 6·N·T + causal attention) per second)")
    print(
        "(1st loss: the policy loss of the first step; log 2 for DPO, whose policy starts at "
        "the reference)"
    )
    dqo, dpo = tps["dqo (policy + value model)"], tps["dpo (ours, stored ref)"]
    ratios = [("DQO / DPO (ours)", dqo / dpo)]
    for name in ("trl dpo (precomputed ref)", "trl dpo (live ref model)"):
        if name in tps:
            ratios.append((f"TRL {name[8:]} / DPO (ours)", tps[name] / dpo))
            ratios.append((f"TRL {name[8:]} / DQO (ours)", tps[name] / dqo))
    print("\nratios of tokens/s")
    for label, ratio in ratios:
        print(f"  {label:<42}{ratio:6.2f}")

    phases = results["dqo (policy + value model)"]["phases"]
    total = phases["total (instrumented)"]
    print("\nwhere the DQO step's time goes (median s, share of the instrumented total)")
    for name, sec in phases.items():
        print(f"  {name:<36}{sec:>9.3f}{100 * sec / total:>7.1f}%")
    print(
        "  (value forward + backward double-counts its two rows above; the phases add up to "
        "the total up to hook overhead)"
    )


if __name__ == "__main__":
    main()
