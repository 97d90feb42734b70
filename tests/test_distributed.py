"""Two processes (gloo, CPU) see the same global batch, the same learning rates and compute the
same loss as one process.

The trainer's windows are cut from a per-epoch permutation that depends only on the seed; each of
W processes takes a contiguous 1/W of a window and every loss is divided by the window's item
count all-reduced over processes. So ``batch_size=2`` on 2 processes must reproduce
``batch_size=4`` on 1 process: same logged losses, same parameters after the update. The
processes are started by torchrun (PyTorch's launcher; ``accelerate launch`` uses it too on GPUs,
but on CPUs it only starts several processes through MPI).

The schedule is the one users choose (cosine with warm-up), not ``constant``: a scheduler stepped
once per process per optimiser step (Accelerate's default for a prepared scheduler) runs W× fast,
which a constant schedule hides. The learning rate of every logged step is compared with the
closed-form cosine, for both process counts.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys

import pytest
import torch
from adam_compare import FLOOR, adam_scale, assert_runs_agree, compare
from conftest import sampled_rows
from datasets import Dataset

from dqo_tutorial.models import tiny_causal_lm, tiny_tokenizer


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    tok = tiny_tokenizer()
    model = tiny_causal_lm(len(tok))
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    Dataset.from_list(sampled_rows(model, len(tok), n_prompts=4, n_samples=4)).save_to_disk(
        str(root / "data" / "dataset")
    )
    return root


def train_args(assets, out, method, batch_size):
    return [
        "-m", "dqo_tutorial.cli", "train", "--out", str(out), "--method", method,
        "--model", str(assets / "model"), "--data", str(assets / "data"), "--task", "toy",
        "--batch-size", str(batch_size), "--max-steps", str(STEPS), "--policy-lr", "1e-3",
        "--value-lr", "2e-3", "--beta", "0.5", "--mixed-precision", "no",
        "--lr-scheduler", "cosine", "--warmup-ratio", "0.25",
    ]  # fmt: skip


STEPS = 4


def cosine_with_warmup(peak: float, steps: int, warmup: int) -> list[float]:
    """The learning rate used at each optimiser step 1 … steps, written out independently of
    transformers: linear warm-up from 0 over ``warmup`` steps, then a half cosine down to 0."""
    out = []
    for s in range(steps):
        if s < warmup:
            out.append(peak * s / warmup)
        else:
            out.append(peak * 0.5 * (1 + math.cos(math.pi * (s - warmup) / (steps - warmup))))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args, processes: int):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    if processes == 1:
        cmd = [sys.executable, *args]
    else:
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
            "--master_port", str(free_port()), *args,
        ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.parametrize("method", ["dqo", "dpo"])
def test_two_processes_equal_one_on_the_same_global_batch(assets, tmp_path, method):
    per_pair = method == "dpo"
    one, two = tmp_path / "one", tmp_path / "two"
    launch(train_args(assets, one, method, 2 if per_pair else 4), processes=1)
    launch(train_args(assets, two, method, 1 if per_pair else 2), processes=2)

    logs = [[json.loads(x) for x in (d / "log.jsonl").read_text().splitlines()] for d in (one, two)]
    assert [r["num_items"] for r in logs[0]] == [r["num_items"] for r in logs[1]]
    assert len(logs[0]) == len(logs[1]) == STEPS
    expected = cosine_with_warmup(1e-3, STEPS, warmup=1)  # int(0.25 × 4) warm-up steps
    for log in logs:
        assert [r["policy_lr"] for r in log] == pytest.approx(expected, abs=1e-12)
        if method == "dqo":
            value = cosine_with_warmup(2e-3, STEPS, warmup=1)
            assert [r["value_lr"] for r in log] == pytest.approx(value, abs=1e-12)
    for a, b in zip(*logs):
        assert b["policy_loss"] == pytest.approx(a["policy_loss"], rel=1e-5)
        if method == "dqo":
            assert b["value_loss"] == pytest.approx(a["value_loss"], rel=1e-5)
    assert json.loads((two / "train_summary.json").read_text())["processes"] == 2

    # parameters where AdamW's step is defined by the gradient, not by its rounding noise
    assert_runs_agree(one, two, assets / "model", value=method == "dqo")


def test_two_processes_sample_the_dataset_one_process_samples(tmp_path):
    """Under torchrun each process samples the shards s ≡ rank (mod 2) into the shared folder;
    the main process writes the dataset. Every shard has its own derived seed, so the dataset is
    the one-process dataset, row for row and column for column."""
    from datasets import load_from_disk

    def sample_args(out):
        return ["-m", "dqo_tutorial.cli", "sample", "--task", "toy", "--model", "toy",
                "--limit", "10", "--num-samples", "3", "--shard-size", "3", "--batch-size", "4",
                "--out", str(out)]  # fmt: skip

    one, two = tmp_path / "one", tmp_path / "two"
    launch(sample_args(one), processes=1)
    done = launch(sample_args(two), processes=2)
    assert done.stdout.count('"summary"') == 1  # one report, from the main process
    a, b = (load_from_disk(str(d / "dataset")) for d in (one, two))
    assert len(a) == 30 and a.column_names == b.column_names
    for column in a.column_names:
        assert a[column] == b[column], column
    manifests = [json.loads((d / "manifest.json").read_text()) for d in (one, two)]
    assert manifests[0]["counts"] == manifests[1]["counts"] == {
        "prompts": 10, "samples": 30, "shards": 4}  # fmt: skip
    rates = ("samples_per_s", "tokens_per_s")  # timings differ, the data do not
    assert [{k: v for k, v in m["summary"].items() if k not in rates} for m in manifests] == [
        {k: v for k, v in manifests[0]["summary"].items() if k not in rates}] * 2  # fmt: skip


def test_two_processes_with_a_token_budget_agree_on_the_micro_batch_count(assets, tmp_path):
    """``micro_batch_tokens`` cuts each process's share by tokens; here the two shares of every
    window split into 3 and 2 micro-batches on their own, so the processes must agree on 3 (one
    all-reduce; FSDP would hang otherwise) and still give one process's parameters (which cuts
    its whole window into 5)."""
    from datasets import load_from_disk

    from dqo_tutorial.train import _window_order, build_examples, token_budget_split

    steps, budget = 2, 18
    rows = load_from_disk(str(assets / "data" / "dataset"))
    lengths = [len(e["input_ids"]) for e in build_examples("dqo", rows)]
    local, whole = [], []
    for step in range(steps):
        window = _window_order(len(lengths), 8, step // 2, 0)[step % 2]  # 2 windows an epoch
        cut = [len(token_budget_split([lengths[i] for i in window[r * 4 :][:4]], budget,
                                      packed=True)) for r in range(2)]  # fmt: skip
        local.append(cut)
        whole.append(len(token_budget_split([lengths[i] for i in window], budget, packed=True)))
    assert all(a != b for a, b in local), local  # the shares split differently

    def args(out, batch_size):
        a = train_args(assets, out, "dqo", batch_size)
        a[a.index("--max-steps") + 1] = str(steps)
        return [*a, "--grad-accum", "2", "--micro-batch-tokens", str(budget)]

    one, two = tmp_path / "one", tmp_path / "two"
    launch(args(one, 4), processes=1)
    launch(args(two, 2), processes=2)
    logs = [[json.loads(x) for x in (d / "log.jsonl").read_text().splitlines()] for d in (one, two)]
    assert [r["micro_batches"] for r in logs[0]] == whole
    assert [r["micro_batches"] for r in logs[1]] == [max(c) for c in local]
    assert [r["num_items"] for r in logs[0]] == [r["num_items"] for r in logs[1]]
    for a, b in zip(*logs, strict=True):
        for key in ("policy_loss", "value_loss", "kl_theta_ref", "delta_mean", "value_error"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), key
    # parameters where AdamW's step is defined by the gradient, not by its rounding noise
    assert_runs_agree(one, two, assets / "model", value=True)


def _adam_run(grad_noise: float = 0.0, drop_example: bool = False, zero: int = 1):
    """AdamW on a linear model whose first ``zero`` input features are always 0, so the gradient
    of those weight columns is exactly 0 — unless ``grad_noise`` (one ulp of rounding, as another
    machine's kernels leave it) is added there; ``drop_example``: a real bug (one example's
    gradient lost)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(100, 3)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    x, y = torch.randn(8, 100), torch.randn(8, 3)
    x[:, :zero] = 0
    for _ in range(3):
        opt.zero_grad()
        rows = slice(0, 7) if drop_example else slice(None)
        ((model(x[rows]) - y[rows]) ** 2).sum().div(8).backward()
        model.weight.grad[:, :zero] += grad_noise
        opt.step()
    betas = opt.param_groups[0]["betas"]
    scale = {n: adam_scale(opt.state[p], betas) for n, p in model.named_parameters()}
    return {n: p.detach().clone() for n, p in model.named_parameters()}, scale, start


def test_the_adam_comparison_ignores_rounding_noise_and_still_catches_a_lost_gradient():
    """The comparison the two-process tests use. A 2e-8 gradient where the other run has 0
    moves the entry by ~lr (a plain ``assert_close`` fails, as it did on a fresh clone), and
    the comparison leaves exactly those entries out (3 of 303 moved); a lost example's gradient
    still fails it, and so do too many noise-defined entries (30 of 303)."""
    a, scale_a, start = _adam_run()
    b, scale_b, _ = _adam_run(grad_noise=2e-8)
    assert (b["weight"][:, 0] - a["weight"][:, 0]).abs().min() > 5e-4  # an lr-sized step
    with pytest.raises(AssertionError):
        torch.testing.assert_close(b["weight"], a["weight"], rtol=1e-4, atol=2e-5)
    assert (scale_b["weight"][:, 0] < FLOOR).all() and (scale_a["weight"][:, 1:] > FLOOR).all()
    report = compare(a, b, scale_a, scale_b, start, atol=2e-5, rtol=1e-4)
    assert report["max_abs_diff"] < 1e-7 and report["left_out_share"] == 3 / 303
    c, scale_c, _ = _adam_run(drop_example=True)
    with pytest.raises(AssertionError, match="weight"):  # assert_close names the parameter
        compare(a, c, scale_a, scale_c, start, atol=2e-5, rtol=1e-4)
    (a, scale_a, _), (b, scale_b, _) = _adam_run(zero=10), _adam_run(2e-8, zero=10)
    with pytest.raises(AssertionError, match="30 of 303 moved entries disagree"):
        compare(a, b, scale_a, scale_b, start, atol=2e-5, rtol=1e-4)
