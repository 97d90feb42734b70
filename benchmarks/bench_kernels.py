"""Kernel benchmarks, measured side by side in one run (figures, not pass/fail).

1. ``lambda_return``: the vectorised reverse scan vs the naive per-row loop (B=64, T=1024).
2. ``gather_logprobs`` vs a full float32 ``log_softmax`` at B=8, T=1024, V=49,152: peak memory
   above the logits themselves (and time), forward and forward+backward. On CPU the peak is the
   process's peak RSS, each variant measured in a fresh subprocess; on CUDA it is
   ``torch.cuda.max_memory_allocated``.
3. The LM head + log-prob, forward+backward at B·T = 8 × 1,024 rows, D = 576 (SmolLM2-135M),
   V = 49,152: the materialised head (``h Wᵀ`` → ``gather_logprobs``) vs the fused
   ``linear_logprobs``; peak memory above the hidden states and weights, in fresh subprocesses.

    python benchmarks/bench_kernels.py [--device cpu|cuda] [--dtype bfloat16|float32]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from dqo_tutorial import kernels, naive

MiB = 2**20


def bench_lambda_return(b: int = 64, t: int = 1024, repeats: int = 5) -> dict:
    g = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(b, t, generator=g), torch.randn(b, t, generator=g)
    mask = torch.zeros(b, t, dtype=torch.bool)
    lengths = torch.randint(t // 4, t - 1, (b,), generator=g)
    for i, n in enumerate(lengths.tolist()):  # half left-, half right-padded rows
        if i % 2:
            mask[i, t - n :] = True
        else:
            mask[i, 1 : 1 + n] = True
    boot = torch.randn(b, generator=g)

    def timed(fn, n):
        fn()  # warm-up
        start = time.perf_counter()
        for _ in range(n):
            out = fn()
        return (time.perf_counter() - start) / n, out

    t_vec, g_vec = timed(lambda: kernels.lambda_return(rewards, values, mask, 0.95, boot), repeats)
    t_naive, g_naive = timed(lambda: naive.lambda_return(rewards, values, mask, 0.95, boot), 1)
    err = (g_vec.double() - g_naive).abs().max().item()
    return {
        "B": b,
        "T": t,
        "vectorised_ms": 1e3 * t_vec,
        "naive_ms": 1e3 * t_naive,
        "speedup": t_naive / t_vec,
        "max_abs_diff": err,
    }


def _memory_now(device: str) -> int:
    """The baseline of a peak measurement: allocated bytes (CUDA, peak counter reset) or the
    process's peak RSS so far (CPU)."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _peak_since(device: str, base: int) -> int:
    """Peak bytes above ``base`` (:func:`_memory_now`)."""
    if device == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base


def _peak_child(variant: str, device: str, dtype: str, b: int, t: int, v: int) -> dict:
    """Runs in a fresh process: allocate logits, measure the variant's peak memory and time."""
    torch.manual_seed(0)
    dt = getattr(torch, dtype)
    logits = torch.randn(b, t, v, device=device, dtype=dt)
    tokens = torch.randint(0, v, (b, t), device=device)
    backward = variant.endswith("+backward")
    if backward:
        logits.requires_grad_()

    def full(z, y):
        return torch.log_softmax(z.float(), dim=-1).gather(-1, y[..., None]).squeeze(-1)

    fn = kernels.gather_logprobs if variant.startswith("gather_logprobs") else full
    base = _memory_now(device)
    start = time.perf_counter()
    out = fn(logits, tokens)
    if backward:
        out.sum().backward()
    peak = _peak_since(device, base)
    elapsed = time.perf_counter() - start
    return {
        "variant": variant,
        "peak_extra_mib": peak / MiB,
        "seconds": elapsed,
        "logits_mib": logits.numel() * logits.element_size() / MiB,
    }


def _head_child(variant: str, device: str, dtype: str, n: int, d: int, v: int) -> dict:
    """Runs in a fresh process: one head forward+backward, materialised or fused."""
    torch.manual_seed(0)
    dt = getattr(torch, dtype)
    hidden = torch.randn(n, d, device=device, dtype=dt, requires_grad=True)
    weight = (0.02 * torch.randn(v, d, device=device, dtype=dt)).requires_grad_()
    tokens = torch.randint(0, v, (n,), device=device)
    base = _memory_now(device)
    start = time.perf_counter()
    if variant == "head_fused+backward":
        out = kernels.linear_logprobs(hidden, weight, tokens)
    else:
        out = kernels.gather_logprobs(hidden @ weight.T, tokens)
    out.sum().backward()
    peak = _peak_since(device, base)
    return {
        "variant": variant,
        "peak_extra_mib": peak / MiB,
        "seconds": time.perf_counter() - start,
        "logits_mib": n * v * hidden.element_size() / MiB,
        "sum": float(out.detach().sum()),
    }


def _run_child(*args: str) -> dict:
    cmd = [sys.executable, __file__, "--child", *args]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def bench_head(device: str, dtype: str, n: int = 8 * 1024, d: int = 576, v: int = 49_152) -> list:
    return [
        _run_child(variant, "--device", device, "--dtype", dtype, "--shape", f"{n},{d},{v}")
        for variant in ("head_materialised+backward", "head_fused+backward")
    ]


def bench_gather(device: str, dtype: str, b: int = 8, t: int = 1024, v: int = 49_152) -> list:
    rows = []
    for variant in (
        "full_log_softmax",
        "gather_logprobs",
        "full_log_softmax+backward",
        "gather_logprobs+backward",
    ):
        cmd = [
            sys.executable,
            __file__,
            "--child",
            variant,
            "--device",
            device,
            "--dtype",
            dtype,
            "--shape",
            f"{b},{t},{v}",
        ]
        rows.append(
            json.loads(
                subprocess.run(cmd, check=True, capture_output=True, text=True)
                .stdout.strip()
                .splitlines()[-1]
            )
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--shape", default="8,1024,49152", help="B,T,V for gather_logprobs")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    b, t, v = map(int, args.shape.split(","))
    if args.child:
        child = _head_child if args.child.startswith("head_") else _peak_child
        print(json.dumps(child(args.child, args.device, args.dtype, b, t, v)))
        return

    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}")
    lr = bench_lambda_return()
    print(
        f"\nlambda_return  B={lr['B']} T={lr['T']}  vectorised {lr['vectorised_ms']:.1f} ms  "
        f"naive loop {lr['naive_ms']:.0f} ms  speed-up x{lr['speedup']:.0f}  "
        f"(max |diff| {lr['max_abs_diff']:.1e})"
    )

    rows = bench_gather(args.device, args.dtype, b, t, v)
    print(
        f"\ngather_logprobs vs float32 log_softmax  B={b} T={t} V={v} logits {args.dtype} "
        f"({rows[0]['logits_mib']:.0f} MiB)"
    )
    print(f"{'variant':<28}{'peak above logits (MiB)':>26}{'time (s)':>10}")
    for r in rows:
        print(f"{r['variant']:<28}{r['peak_extra_mib']:>26.0f}{r['seconds']:>10.2f}")
    for suffix in ("", "+backward"):
        full, ours = (
            next(r for r in rows if r["variant"] == n + suffix)
            for n in ("full_log_softmax", "gather_logprobs")
        )
        print(
            f"memory ratio full/ours{suffix or ' (forward)'}: "
            f"x{full['peak_extra_mib'] / max(ours['peak_extra_mib'], 1):.1f}"
        )

    mat, fused = bench_head(args.device, args.dtype)
    print(
        f"\nLM head + log-prob, forward+backward, 8192 rows x D=576 -> V=49152, {args.dtype} "
        f"(logits would be {mat['logits_mib']:.0f} MiB)"
    )
    for r in (mat, fused):
        print(f"{r['variant']:<28}{r['peak_extra_mib']:>26.0f}{r['seconds']:>10.2f}")
    print(
        f"memory fused/materialised: {fused['peak_extra_mib'] / max(mat['peak_extra_mib'], 1):.2f}"
        f"  time fused/materialised: {fused['seconds'] / mat['seconds']:.2f}"
        f"  (|Σ log p| difference {abs(fused['sum'] - mat['sum']):.2e})"
    )


if __name__ == "__main__":
    main()
