"""The trainer's engine where CPU defaults never go: fp16 loss scaling with two optimisers.

DRO and DQO step two models (policy and value), each with its own optimiser, under *one* loss
scaler. The order GradScaler documents for several optimisers is: unscale each optimiser once,
clip, step each, update the scale once. These tests drive :func:`dqo_tutorial.train.optimizer_step`
with a real ``torch.amp.GradScaler`` on the CPU (Accelerate creates one only on accelerators, so
the test hands it to a CPU Accelerator) and compare every update with the one computed from the
unscaled gradients by hand.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from dqo_tutorial.train import optimizer_step


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    """Accelerate keeps one process-wide state; these tests switch mixed precision."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    yield
    AcceleratorState._reset_state()


def fp16_accelerator(monkeypatch, init_scale: float = 2.0**16):
    """A CPU Accelerator with two prepared models that then behaves like an fp16 one: a real
    GradScaler scales the loss in ``backward`` and ``unscale_gradients`` / ``clip_grad_norm_``
    unscale through it. (The forward passes stay float32, so the hand-computed gradients are
    exact: the test is about the scaling, not fp16 rounding.)"""
    from accelerate import Accelerator

    acc = Accelerator(cpu=True, mixed_precision="no")
    prepared = two_models(acc)
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale, growth_interval=2)
    monkeypatch.setattr(acc, "scaler", scaler)
    for opt in prepared[1]:  # what AcceleratedOptimizer(..., scaler=scaler) would have set up
        opt.__setstate__({"scaler": scaler})
    monkeypatch.setattr(acc, "native_amp", True)
    monkeypatch.setattr(type(acc), "mixed_precision", property(lambda self: "fp16"))
    return acc, *prepared


def two_models(acc, lr: float = 1.0):
    """Policy- and value-like models with SGD (the update is −lr × the clipped gradient, so a
    gradient divided by the scale twice shows up 65,536× too small) and constant schedules."""
    torch.manual_seed(0)
    models = [nn.Linear(3, 2), nn.Linear(3, 1)]
    opts = [torch.optim.SGD(m.parameters(), lr=lr) for m in models]
    scheds = [torch.optim.lr_scheduler.LambdaLR(o, lambda s: 1.0 / (1 + s)) for o in opts]
    prepared = acc.prepare(*models, *opts)
    return list(prepared[:2]), list(prepared[2:]), scheds


def loss_of(models, x):
    return models[0](x).square().sum() + 3 * models[1](x).sum()


def reference_grads(models, x):
    """The true (unscaled) gradients of the same loss, by a plain backward pass."""
    clones = [type(m)(m.in_features, m.out_features) for m in models]
    for c, m in zip(clones, models):
        c.load_state_dict(m.state_dict())
    loss_of(clones, x).backward()
    return [[p.grad.clone() for p in c.parameters()] for c in clones]


def test_two_optimisers_under_one_scaler_see_their_true_gradients(monkeypatch):
    acc, models, opts, scheds = fp16_accelerator(monkeypatch)
    x = torch.randn(5, 3)
    expected = reference_grads(models, x)
    before = [[p.detach().clone() for p in m.parameters()] for m in models]
    acc.backward(loss_of(models, x))  # the scaled loss: grads are 65,536× the true ones

    norms, skipped = optimizer_step(acc, list(zip(models, opts, scheds)), max_grad_norm=1e9)

    assert not skipped
    for m, b, g, n in zip(models, before, expected, norms):
        true_norm = torch.linalg.vector_norm(torch.cat([t.flatten() for t in g]))
        assert n == pytest.approx(float(true_norm), rel=1e-6)  # the norm of the true gradient
        for p, p0, gp in zip(m.parameters(), b, g):
            torch.testing.assert_close(p.detach(), p0 - gp, rtol=1e-6, atol=1e-6)
    # one update of the scale per step (growth_interval 2: a second update would grow it)
    assert acc.scaler.get_scale() == 2.0**16
    assert acc.scaler._get_growth_tracker() == 1
    assert [s.get_last_lr()[0] for s in scheds] == [0.5, 0.5]  # each schedule stepped once


def test_clipping_uses_each_models_own_true_norm(monkeypatch):
    acc, models, opts, scheds = fp16_accelerator(monkeypatch)
    x = torch.randn(5, 3)
    expected = reference_grads(models, x)
    before = [[p.detach().clone() for p in m.parameters()] for m in models]
    acc.backward(loss_of(models, x))
    optimizer_step(acc, list(zip(models, opts, scheds)), max_grad_norm=0.5)
    for m, b, g in zip(models, before, expected):
        norm = float(torch.linalg.vector_norm(torch.cat([t.flatten() for t in g])))
        scale = min(1.0, 0.5 / (norm + 1e-6))
        for p, p0, gp in zip(m.parameters(), b, g):
            torch.testing.assert_close(p.detach(), p0 - scale * gp, rtol=1e-5, atol=1e-6)


def test_an_overflow_skips_the_whole_step_and_halves_the_scale_once(monkeypatch):
    acc, models, opts, scheds = fp16_accelerator(monkeypatch)
    x = torch.randn(5, 3)
    acc.backward(loss_of(models, x))
    next(models[1].parameters()).grad[0, 0] = math.inf  # the value model overflows
    before = [[p.detach().clone() for p in m.parameters()] for m in models]

    _, skipped = optimizer_step(acc, list(zip(models, opts, scheds)), max_grad_norm=1.0)

    assert skipped
    for m, b in zip(models, before):  # neither model moves ...
        for p, p0 in zip(m.parameters(), b):
            assert torch.equal(p.detach(), p0)
    assert [s.get_last_lr()[0] for s in scheds] == [1.0, 1.0]  # ... nor any schedule
    assert acc.scaler.get_scale() == 2.0**15


def test_without_a_scaler_the_step_is_plain_clip_and_step():
    from accelerate import Accelerator

    acc = Accelerator(cpu=True, mixed_precision="no")
    models, opts, scheds = two_models(acc)
    x = torch.randn(5, 3)
    expected = reference_grads(models, x)
    before = [[p.detach().clone() for p in m.parameters()] for m in models]
    acc.backward(loss_of(models, x))
    _, skipped = optimizer_step(acc, list(zip(models, opts, scheds)), max_grad_norm=1e9)
    assert not skipped
    for m, b, g in zip(models, before, expected):
        for p, p0, gp in zip(m.parameters(), b, g):
            torch.testing.assert_close(p.detach(), p0 - gp)


# --------------------------------------------------------------------------------------------
# matched numerics: the trainer re-scores log π_ref with its own forward pass
# --------------------------------------------------------------------------------------------


def bf16_sampled_rows(n: int = 12):
    """Toy gold solutions scored as a GPU sampler scores them — bf16 *weights* — while the trainer
    keeps float32 weights under bf16 autocast. μ = π_ref (τ = 1, top-p = 1)."""
    import copy

    from dqo_tutorial.collate import DQOCollator, tokenize_example
    from dqo_tutorial.modeling import per_token_logprobs
    from dqo_tutorial.models import load_model_and_tokenizer
    from dqo_tutorial.tasks import get_task

    model, tok = load_model_and_tokenizer("toy", device="cpu")
    task = get_task("toy")
    rows = []
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    for i, p in enumerate(task.load("test", None, n)):
        prompt, gold = task.format_prompt(p.question, tok), task.gold_solution(p)
        ex = tokenize_example(tok, prompt, gold, add_eos=True)
        b = DQOCollator(tok.pad_token_id)([ex])
        with torch.no_grad():
            ref = per_token_logprobs(bf16, b["input_ids"], b["attention_mask"])[0]
        ref = (ref * b["action_mask"][0]).tolist()
        rows.append(
            {
                "prompt_index": i // 2, "sample_index": i % 2, "input_ids": ex["input_ids"],
                "action_mask": ex["action_mask"], "ref_logps": ref, "behavior_logps": ref,
                "reward": float(i % 3 == 0), "terminal": True,
            }
        )  # fmt: skip
    return model, tok, rows


@pytest.mark.parametrize("method", ["dqo", "dpo", "dro"])
def test_at_step_0_the_policy_equals_the_reference_under_bf16_autocast(tmp_path, method):
    from dqo_tutorial.train import BehaviorLaw, TrainConfig, train

    model, tok, rows = bf16_sampled_rows()
    cfg = TrainConfig(
        method=method, model="toy", task="toy", batch_size=2 if method == "dpo" else 4,
        max_steps=1, policy_lr=1e-4, value_lr=1e-3, mixed_precision="bf16",
        lr_scheduler="constant", warmup_ratio=0.0, checkpoint_every=1000,
    )  # fmt: skip
    summary = train(cfg, tmp_path, policy=model, tokenizer=tok, rows=rows, progress=False,
                    behavior=BehaviorLaw(1.0, 1.0))  # fmt: skip
    step1 = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[0])
    # the sampler's bf16-weight numbers really were off (what the old trainer compared with) ...
    assert summary["reference"]["stored_ref_abs_diff_max"] > 1e-2
    # ... while the first forward pass of training sees ρ = 0 up to batch-shape noise
    assert step1["log_ratio_abs_max"] < 1e-3
    assert step1["kl_theta_ref"] < 1e-6
    if method == "dqo":  # μ = π_ref: every prefix weight starts at 1
        assert step1["is_weight_mean"] == pytest.approx(1.0, abs=1e-3)
        assert step1["is_weight_max"] == pytest.approx(1.0, abs=1e-3)
    if method == "dpo":
        assert abs(step1["dpo_margin"]) < 1e-3


def test_a_tempered_behaviour_law_is_rescored_at_its_temperature(tmp_path):
    """τ = 0.7: log μ is re-scored as log softmax(z/τ) by the training forward pass (compared
    with an independent forward pass at τ), not copied from log π_ref."""
    from accelerate import Accelerator

    from dqo_tutorial.collate import DQOCollator
    from dqo_tutorial.modeling import per_token_logprobs
    from dqo_tutorial.train import BehaviorLaw, build_examples, score_reference

    model, tok, rows = bf16_sampled_rows(4)
    examples = build_examples("dqo", rows)
    acc = Accelerator(cpu=True, mixed_precision="no")
    out = score_reference(acc, model, examples, batch_size=3, behavior=BehaviorLaw(0.7, 1.0))
    assert out["behavior_logps"] == "re-scored at τ = 0.7"
    for ex in examples:
        b = DQOCollator(tok.pad_token_id)([{k: ex[k] for k in ("input_ids", "action_mask")}])
        with torch.no_grad():
            mu = per_token_logprobs(model, b["input_ids"], b["attention_mask"], 0.7)[0]
            ref = per_token_logprobs(model, b["input_ids"], b["attention_mask"])[0]
        m = b["action_mask"][0].bool()
        torch.testing.assert_close(torch.tensor(ex["behavior_logps"])[m], mu[m], atol=1e-5, rtol=0)
        torch.testing.assert_close(torch.tensor(ex["ref_logps"])[m], ref[m], atol=1e-5, rtol=0)
    # top-p < 1: the nucleus is the sampler's; log μ is kept as stored
    examples = build_examples("dqo", rows)
    stored = [list(ex["behavior_logps"]) for ex in examples]
    out = score_reference(acc, model, examples, batch_size=3, behavior=BehaviorLaw(1.0, 0.9))
    assert [ex["behavior_logps"] for ex in examples] == stored
    assert out["behavior_logps"] == "stored (top-p < 1)"
