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
    # top-p < 1: test_a_nucleus_behaviour_law_is_rescored_under_the_training_numerics


# --------------------------------------------------------------------------------------------
# dropout: off while training (TrainConfig.disable_dropout), and never while π_ref is re-scored
# --------------------------------------------------------------------------------------------


def dropout_gpt2(tok):
    """A tiny GPT-2 with every dropout at 0.1 (GPT-2's own default), in train mode as a
    checkpoint arrives in a training script."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=64,
                     resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)  # fmt: skip
    return GPT2LMHeadModel(cfg).train()


def mu_is_ref_rows(model, vocab: int):
    """Sampled-dataset rows with μ = π_ref scored by ``model`` in eval mode (no dropout)."""
    from conftest import sampled_rows

    model.eval()
    rows = sampled_rows(model, vocab)
    model.train()
    return [{**r, "behavior_logps": r["ref_logps"]} for r in rows]


@pytest.mark.parametrize("method", ["dqo", "dro"])
def test_with_dropout_in_the_model_step_0_weights_are_1_and_the_kl_is_0(tmp_path, method):
    """GPT-2 with dropout 0.1, μ = π_ref: at step 0 every importance weight must be 1 and the KL
    estimate 0 (up to the batch-shape noise of one forward pass). With dropout on in the
    training forward (and in the reference pass) they were off by up to 0.11 and 1e-3."""
    from dqo_tutorial.models import tiny_tokenizer
    from dqo_tutorial.train import BehaviorLaw, TrainConfig, train

    tok = tiny_tokenizer()
    model = dropout_gpt2(tok)
    rows = mu_is_ref_rows(model, len(tok))
    cfg = TrainConfig(method=method, model="tiny", task="toy", batch_size=4, max_steps=1,
                      policy_lr=1e-4, value_lr=1e-3, mixed_precision="no",
                      lr_scheduler="constant", warmup_ratio=0.0, checkpoint_every=1000)  # fmt: skip
    assert cfg.disable_dropout  # the default, as in TRL's trainers
    train(cfg, tmp_path, policy=model, tokenizer=tok, rows=rows, progress=False,
          behavior=BehaviorLaw(1.0, 1.0))  # fmt: skip
    step1 = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[0])
    assert step1["log_ratio_abs_max"] < 1e-5
    assert abs(step1["kl_theta_ref"]) < 1e-7
    if method == "dqo":
        assert step1["is_weight_mean"] == pytest.approx(1.0, abs=1e-5)
        assert step1["is_weight_max"] == pytest.approx(1.0, abs=1e-5)
    assert all(m.p == 0 for m in model.modules() if isinstance(m, nn.Dropout))


def test_the_reference_is_scored_in_eval_mode_even_with_dropout_kept():
    """``disable_dropout: false`` keeps dropout in training, but the re-scored log π_ref is
    π_ref's: eval-mode scoring (an independent forward in eval mode), and the model's mode is
    restored afterwards."""
    from accelerate import Accelerator

    from dqo_tutorial.collate import DQOCollator
    from dqo_tutorial.modeling import per_token_logprobs
    from dqo_tutorial.models import tiny_tokenizer
    from dqo_tutorial.train import BehaviorLaw, build_examples, score_reference

    tok = tiny_tokenizer()
    model = dropout_gpt2(tok)
    examples = build_examples("dqo", mu_is_ref_rows(model, len(tok)))
    acc = Accelerator(cpu=True, mixed_precision="no")
    score_reference(acc, model, examples, batch_size=3, behavior=BehaviorLaw(1.0, 1.0))
    assert model.training
    model.eval()
    for ex in examples:
        b = DQOCollator(0)([{k: ex[k] for k in ("input_ids", "action_mask")}])
        with torch.no_grad():
            ref = per_token_logprobs(model, b["input_ids"], b["attention_mask"])[0]
        m = b["action_mask"][0].bool()
        torch.testing.assert_close(torch.tensor(ex["ref_logps"])[m], ref[m], atol=1e-5, rtol=0)


# --------------------------------------------------------------------------------------------
# top-p < 1: log μ re-scored with the nucleus, under the training numerics
# --------------------------------------------------------------------------------------------


def naive_nucleus_logprob(logits: torch.Tensor, token: int, tau: float, top_p: float) -> float:
    """log μ(token) of one position by hand: softmax(z/τ), tokens taken most likely first while
    the mass before them is < top_p (the one crossing top_p included), renormalised; −inf
    outside. Float64, a Python loop over the sorted vocabulary."""
    p = torch.softmax(logits.double() / tau, -1)
    order = torch.argsort(p, descending=True).tolist()
    kept, mass = [], 0.0
    for a in order:
        if mass >= top_p:
            break
        kept.append(a)
        mass += float(p[a])
    if token not in kept:
        return -math.inf
    return math.log(float(p[token]) / mass)


def bf16_nucleus_rows(top_p: float, n_prompts: int = 3):
    """Responses drawn by the decode loop from the toy π_ref with bf16 *weights* at top-p (its
    log μ recorded in the sampler's numerics), while training keeps float32 weights."""
    import copy

    from dqo_tutorial.collate import DQOCollator
    from dqo_tutorial.decoding import DecodeSampler
    from dqo_tutorial.modeling import per_token_logprobs
    from dqo_tutorial.models import load_model_and_tokenizer
    from dqo_tutorial.tasks import get_task

    model, tok = load_model_and_tokenizer("toy", device="cpu")
    task = get_task("toy")
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    prompts = [tok(task.format_prompt(p.question, tok), add_special_tokens=False)["input_ids"]
               for p in task.load("test", None, n_prompts)]  # fmt: skip
    gens = DecodeSampler(bf16, tok, 8).sample(prompts, num_samples=2, temperature=1.0,
                                              top_p=top_p, max_new_tokens=24, seed=3)  # fmt: skip
    rows = []
    for g in gens:
        ids = g.prompt_ids + g.response_ids
        mask = [0] * len(g.prompt_ids) + [1] * len(g.response_ids)
        b = DQOCollator(tok.pad_token_id)([{"input_ids": ids, "action_mask": mask}])
        with torch.no_grad():
            ref = per_token_logprobs(bf16, b["input_ids"], b["attention_mask"])[0]
        ref = (ref * b["action_mask"][0]).tolist()
        rows.append({"prompt_index": g.prompt_index, "sample_index": g.sample_index,
                     "input_ids": ids, "action_mask": mask, "ref_logps": ref,
                     "behavior_logps": [0.0] * len(g.prompt_ids) + g.behavior_logps,
                     "reward": 0.0, "terminal": g.finished})  # fmt: skip
    return model, tok, rows


def test_a_nucleus_behaviour_law_is_rescored_under_the_training_numerics():
    """top-p 0.9, a bf16 sampler, fp32 + bf16 autocast training: the re-scored log μ equals the
    nucleus law of the training forward (by hand, :func:`naive_nucleus_logprob`), not the
    sampler's numbers (which were kept before: off by up to ~0.1 per token); a token that falls
    outside the re-scored nucleus keeps its stored value and is counted."""
    from accelerate import Accelerator

    from dqo_tutorial.collate import DQOCollator
    from dqo_tutorial.train import BehaviorLaw, build_examples, score_reference

    top_p = 0.9
    model, tok, rows = bf16_nucleus_rows(top_p)
    examples = build_examples("dqo", rows)
    stored = [list(ex["behavior_logps"]) for ex in examples]
    out_of_nucleus = examples[0]  # a token no nucleus holds: the stored value stays
    j = out_of_nucleus["action_mask"].index(1)
    out_of_nucleus["input_ids"][j], stored[0][j] = 3, -7.25
    out_of_nucleus["behavior_logps"][j] = -7.25
    acc = Accelerator(cpu=True, mixed_precision="bf16")
    model = acc.prepare(model)  # its forward under bf16 autocast, as in training
    out = score_reference(acc, model, examples, batch_size=3, behavior=BehaviorLaw(1.0, top_p))
    assert out["behavior_logps"] == "re-scored nucleus (τ = 1.0, top-p = 0.9)"
    assert out["behavior_outside_nucleus"] >= 1
    moved = worst = 0.0
    for ex, before in zip(examples, stored):
        b = DQOCollator(tok.pad_token_id)([{k: ex[k] for k in ("input_ids", "action_mask")}])
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(input_ids=b["input_ids"]).logits[0].float()
        for col in [c for c, a in enumerate(ex["action_mask"]) if a]:
            want = naive_nucleus_logprob(logits[col - 1], ex["input_ids"][col], 1.0, top_p)
            got = ex["behavior_logps"][col]
            if want == -math.inf:
                assert got == before[col]
            else:
                worst = max(worst, abs(got - want))
                moved = max(moved, abs(got - before[col]))
    print(f"re-scored vs by hand: {worst:.2e}; stored vs re-scored: {moved:.2e}")
    assert worst < 1e-3  # bf16 autocast: the batch-shape noise of one forward pass
    assert moved > 2e-2  # the sampler's numbers really were off, by more than that
