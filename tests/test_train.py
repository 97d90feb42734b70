"""The trainer: every method learns, exact gradient accumulation, resume, gradient isolation."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch
from conftest import sampled_rows
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from dqo_tutorial.collate import DQOCollator
from dqo_tutorial.errors import ConfigError
from dqo_tutorial.modeling import ValueModel, per_token_logprobs
from dqo_tutorial.train import (
    METHODS,
    TrainConfig,
    build_examples,
    compute_losses,
    dpo_pairs,
    finished_summary,
    item_count,
    token_rewards,
    train,
)


@pytest.fixture
def rows(tiny_model, tiny_tok):
    return sampled_rows(tiny_model, len(tiny_tok))


def sft_rows():
    return [
        {"prompt": f"Q: {a}+{a}=\nA:\n", "response": f"{a}+{a}={2 * a}\n#### {2 * a}"}
        for a in range(8)
    ]


def cfg_for(method: str, **kw) -> TrainConfig:
    base = dict(
        method=method,
        model="tiny",
        task="toy",
        policy_lr=3e-3,
        value_lr=3e-3,
        beta=0.5,
        warmup_ratio=0.0,
        lr_scheduler="constant",
        mixed_precision="no",
        checkpoint_every=1000,
    )
    return TrainConfig(**{**base, **kw})


def data_for(method: str, rows):
    return sft_rows() if method == "sft" else rows


def losses_from_log(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_learns_and_updates_every_parameter(
    method, tiny_model, tiny_tok, rows, tmp_path
):
    data = data_for(method, rows)
    n = len(build_examples(method, data, tokenizer=tiny_tok))
    batch = n // 2 if method == "dpo" else n  # DPO: pairs; full-batch steps make the log honest
    batch = max(batch, 1)
    cfg = cfg_for(method, batch_size=batch, max_steps=12)
    init = copy.deepcopy(tiny_model)
    train(cfg, tmp_path, policy=tiny_model, tokenizer=tiny_tok, rows=data, progress=False)
    log = losses_from_log(tmp_path)
    assert len(log) == 12
    # full-batch: the logged loss of step k is the loss on the same data before update k
    key = "policy_loss"
    assert log[-1][key] < log[0][key], [r[key] for r in log]
    if method in ("dro", "dqo"):
        assert log[-1]["value_loss"] < log[0]["value_loss"]

    trained = AutoModelForCausalLM.from_pretrained(tmp_path / "policy")
    before = dict(init.named_parameters())
    for name, p in trained.named_parameters():
        assert not torch.equal(p, before[name]), f"{method}: policy parameter {name} unchanged"
    if method in ("dro", "dqo"):
        value = load_file(tmp_path / "value_model.safetensors")
        value_init = ValueModel.from_causal_lm(init).state_dict()
        assert set(value) == set(value_init)
        for name, p in value.items():
            assert not torch.equal(p, value_init[name]), (
                f"{method}: value parameter {name} unchanged"
            )
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    assert summary["steps"] == 12 and summary["method"] == method


@pytest.mark.parametrize("method", ["sft", "dpo", "dro", "dqo"])
def test_gradient_accumulation_4x1_equals_1x4(method, tiny_model, tiny_tok, rows, tmp_path):
    from adam_compare import assert_runs_agree

    data = data_for(method, rows)
    for i, (bs, ga) in enumerate([(4, 1), (1, 4), (2, 2)]):
        model = copy.deepcopy(tiny_model)
        cfg = cfg_for(method, batch_size=bs, grad_accum=ga, max_steps=3)
        train(cfg, tmp_path / str(i), policy=model, tokenizer=tiny_tok, rows=data, progress=False)
        losses = [r["policy_loss"] for r in losses_from_log(tmp_path / str(i))]
        if i == 0:
            ref_losses = losses
        else:
            assert losses == pytest.approx(ref_losses, rel=1e-5, abs=1e-7)
    # Parameters: AdamW's step m/(√v + ε) is ~lr whatever the gradient's size, so where a
    # gradient is at float-noise level (e.g. LM-head rows of tokens with probability ~0) the
    # summation order of the micro-batches decides it; compared where the step is defined
    for i in (1, 2):
        assert_runs_agree(tmp_path / "0", tmp_path / str(i), tiny_model,
                          value=method in ("dro", "dqo"))  # fmt: skip


def _models_for(method: str, tiny_model) -> tuple:
    """The policy, a value model with a non-zero head (DRO/DQO; else None) and all parameters."""
    policy = tiny_model.train()
    value = ValueModel.from_causal_lm(policy) if method in ("dro", "dqo") else None
    if value is not None:
        with torch.no_grad():
            value.head.proj.weight.normal_(0, 0.1)
    return policy, value, list(policy.parameters()) + (list(value.parameters()) if value else [])


@pytest.mark.parametrize("method", METHODS)
def test_micro_batch_gradients_add_up_to_the_window_gradient(method, tiny_model, tiny_tok, rows):
    """The exact statement behind gradient accumulation: Σ_micro ∇L_micro(N_window) = ∇L_window."""
    cfg = cfg_for(method, value_model="separate")
    examples = build_examples(method, data_for(method, rows), tokenizer=tiny_tok)[:4]
    collator = DQOCollator(tiny_tok.pad_token_id)

    def collate(exs):
        if method == "dpo":
            exs = [e["chosen"] for e in exs] + [e["rejected"] for e in exs]
        return collator(exs)

    policy, value, params = _models_for(method, tiny_model)

    def grads(batches):
        for p in params:
            p.grad = None
        n = sum(item_count(method, b) for b in batches)
        for b in batches:
            pl, vl, _ = compute_losses(method, b, policy, value, cfg, n)
            (pl + (vl if vl is not None else 0)).backward()
        return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]

    whole = grads([collate(examples)])
    micro = grads([collate([e]) for e in examples])
    for a, b in zip(whole, micro):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("method", ["dqo", "dpo"])
def test_resume_after_interruption_reproduces_the_uninterrupted_run(
    method, tiny_model, tiny_tok, rows, tmp_path
):
    cfg = cfg_for(method, batch_size=2, max_steps=7, checkpoint_every=2, lr_scheduler="cosine")
    full = tmp_path / "full"
    train(
        cfg, full, policy=copy.deepcopy(tiny_model), tokenizer=tiny_tok, rows=rows, progress=False
    )

    class Interrupt(Exception):
        pass

    def stop_at_5(step, stats):
        if step == 5:
            raise Interrupt

    cut = tmp_path / "cut"
    with pytest.raises(Interrupt):
        train(
            cfg,
            cut,
            policy=copy.deepcopy(tiny_model),
            tokenizer=tiny_tok,
            rows=rows,
            progress=False,
            callback=stop_at_5,
        )
    assert sorted(p.name for p in (cut / "checkpoints").glob("step-*")) == [
        "step-000002",
        "step-000004",
    ]
    # a fresh process would reload π_ref from cfg.model; here we hand it the same π_ref again
    train(cfg, cut, policy=copy.deepcopy(tiny_model), tokenizer=tiny_tok, rows=rows, progress=False)

    a = AutoModelForCausalLM.from_pretrained(full / "policy").state_dict()
    b = AutoModelForCausalLM.from_pretrained(cut / "policy").state_dict()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=0)
    if method == "dqo":
        va, vb = (load_file(d / "value_model.safetensors") for d in (full, cut))
        for name in va:
            torch.testing.assert_close(vb[name], va[name], rtol=0, atol=0)
    la, lb = losses_from_log(full), losses_from_log(cut)
    assert [r["step"] for r in lb] == list(range(1, 8))
    assert [r["policy_loss"] for r in lb] == [r["policy_loss"] for r in la]


def test_a_different_config_does_not_resume(tiny_model, tiny_tok, rows, tmp_path):
    train(
        cfg_for("rft", batch_size=2, max_steps=1),
        tmp_path,
        policy=tiny_model,
        tokenizer=tiny_tok,
        rows=rows,
        progress=False,
    )
    with pytest.raises(ValueError, match="beta"):
        train(
            cfg_for("rft", batch_size=2, max_steps=1, beta=0.1),
            tmp_path,
            policy=tiny_model,
            tokenizer=tiny_tok,
            rows=rows,
            progress=False,
        )


@pytest.mark.parametrize("value_model", ["separate", "shared"])
@pytest.mark.parametrize("method", ["dro", "dqo"])
def test_policy_and_value_gradients_never_cross(method, value_model, tiny_model, tiny_tok, rows):
    from dqo_tutorial.modeling import ValueHead

    cfg = cfg_for(method, value_model=value_model)
    policy = tiny_model.train()
    if value_model == "separate":
        value = ValueModel.from_causal_lm(policy)
    else:
        value = ValueHead(policy.config.hidden_size, detach_input=True)
    with torch.no_grad():  # a non-zero head, so that V depends on its input
        head = value.head if value_model == "separate" else value
        head.proj.weight.normal_(0, 0.1)
    examples = build_examples(method, rows, tokenizer=tiny_tok)
    batch = DQOCollator(tiny_tok.pad_token_id)(examples)
    n = item_count(method, batch)

    pl, vl, _ = compute_losses(method, batch, policy, value, cfg, n)
    pl.backward()
    assert all(p.grad is None or not p.grad.any() for p in value.parameters())
    assert any(p.grad is not None and p.grad.any() for p in policy.parameters())
    policy.zero_grad(set_to_none=True)

    pl, vl, _ = compute_losses(method, batch, policy, value, cfg, n)
    vl.backward()
    assert all(p.grad is None or not p.grad.any() for p in policy.parameters())
    assert any(p.grad is not None and p.grad.any() for p in value.parameters())


def test_build_examples_by_hand(tiny_tok):
    rows = [
        {
            "prompt_index": 0,
            "input_ids": [5, 6, 7],
            "action_mask": [0, 1, 1],
            "reward": 1.0,
            "terminal": True,
            "ref_logps": [0, -1, -2],
            "behavior_logps": [0, -1, -1],
        },
        {
            "prompt_index": 0,
            "input_ids": [5, 8],
            "action_mask": [0, 1],
            "reward": 0.0,
            "terminal": True,
            "ref_logps": [0, -3],
            "behavior_logps": [0, -3],
        },
        {
            "prompt_index": 0,
            "input_ids": [5, 9],
            "action_mask": [0, 1],
            "reward": 0.0,
            "terminal": False,
            "ref_logps": [0, -3],
            "behavior_logps": [0, -3],
        },
        {
            "prompt_index": 1,
            "input_ids": [4, 9],
            "action_mask": [0, 1],
            "reward": 0.0,
            "terminal": True,
            "ref_logps": [0, -3],
            "behavior_logps": [0, -3],
        },
    ]
    rft = build_examples("rft", rows)
    assert rft == [{"input_ids": [5, 6, 7], "action_mask": [0, 1, 1]}]
    dpo = build_examples("dpo", rows)
    assert len(dpo) == 1  # prompt 0: one correct, two wrong → one pair; prompt 1: no correct one
    assert dpo[0]["chosen"]["input_ids"] == [5, 6, 7]
    assert dpo[0]["rejected"]["input_ids"] in ([5, 8], [5, 9])
    dqo = build_examples("dqo", rows)
    assert [e["rewards"] for e in dqo] == [[0, 0, 1.0], [0, 0.0], [0, 0.0], [0, 0.0]]
    batch = DQOCollator(0)(dqo)
    assert item_count("dqo", batch) == 5
    assert item_count("dro", batch) == 4
    sft = build_examples(
        "sft", [{"prompt": "Q: 1\nA:\n", "response": "#### 1"}], tokenizer=tiny_tok
    )
    assert sft[0]["input_ids"][-1] == tiny_tok.eos_token_id and sft[0]["action_mask"][-1] == 1


@given(
    st.lists(st.tuples(st.integers(0, 4), st.booleans(), st.booleans()), max_size=40),
    st.integers(1, 5),
    st.integers(0, 3),
)
def test_dpo_pairs_match_a_per_prompt_count(rows, per_prompt, seed):
    data = [{"prompt_index": p, "reward": float(ok), "terminal": t} for p, ok, t in rows]
    pairs = dpo_pairs(data, per_prompt, seed)
    used = [i for pair in pairs for i in pair]
    assert len(used) == len(set(used))  # every response at most once
    for c, r in pairs:
        assert data[c]["reward"] == 1.0 and data[r]["reward"] == 0.0
        assert data[c]["terminal"] and data[r]["terminal"]  # cut responses have no outcome
        assert data[c]["prompt_index"] == data[r]["prompt_index"]
    for p in range(5):  # as many pairs as the rarer side allows, capped
        pos = sum(1 for q, ok, t in rows if q == p and ok and t)
        neg = sum(1 for q, ok, t in rows if q == p and not ok and t)
        got = sum(1 for c, _ in pairs if data[c]["prompt_index"] == p)
        assert got == min(pos, neg, per_prompt)
    assert dpo_pairs(data, per_prompt, seed) == pairs  # seeded


def test_process_rewards_use_zero_terminal_potential():
    # prompt of 2 tokens, response of 4; boundaries after 1 and 3 response tokens
    row = {
        "input_ids": [1, 2, 3, 4, 5, 6],
        "action_mask": [0, 0, 1, 1, 1, 1],
        "reward": 1.0,
        "terminal": True,
        "step_boundaries": [1, 3],
        "step_phi": [1.0, 0.0],
        "phi_start": 1.0,
    }
    # shaping α(Φ' − Φ): 1→1 at h=1, 1→0 at h=3, 0→0 (terminal, Φ = 0) at h=4; reward 1 at the end
    assert token_rewards(row, 0.5) == [0, 0, 0.0, 0.0, -0.5, 1.0]
    cut = {**row, "terminal": False, "reward": 0.0}
    assert token_rewards(cut, 0.5) == [0, 0, 0.0, 0.0, -0.5, 0.0]
    # the shaped return telescopes to α(Φ_end − Φ(s_1)) + R: policy-invariant (Ng et al.)
    assert sum(token_rewards({**row, "step_phi": [0.3, 0.9]}, 2.0)) == pytest.approx(
        2 * (0 - 1) + 1
    )
    with pytest.raises(ValueError, match="sampled with process rewards"):
        token_rewards({k: v for k, v in row.items() if k != "step_phi"}, 0.5)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="TrainConfig.method"):
        TrainConfig(method="ppo")
    with pytest.raises(ValueError, match="TrainConfig.lam"):
        TrainConfig(lam=1.5)
    with pytest.raises(ValueError, match="TrainConfig.is_mode"):
        TrainConfig(is_mode="token")
    with pytest.raises(ValueError, match="unknown task"):
        TrainConfig(task="no-such-task")
    with pytest.raises(ValueError, match="TrainConfig.value_extra_layers.*separate"):
        TrainConfig(value_model="shared", value_extra_layers=2)
    with pytest.raises(ValueError, match="TrainConfig.value_head_width"):
        TrainConfig(value_head_width=-1)
    # fields added later, at their off value, keep the identity of runs stored before them
    old_run = {k: v for k, v in TrainConfig().identity().items() if "value_extra" not in k}
    assert TrainConfig.identity_of(old_run) == TrainConfig().identity()


def test_a_bigger_critic_trains_and_the_explorer_loads_it(tiny_model, tiny_tok, rows, tmp_path):
    """value_extra_layers / value_head_width end to end: the trainer builds the deeper, wider
    V_φ, logs the tokens of every step, and the explorer rebuilds it from the run's config."""
    from dqo_tutorial.viz import load_checkpoint

    cfg = cfg_for("dqo", batch_size=4, max_steps=2, value_extra_layers=1, value_head_width=8)
    train(cfg, tmp_path, policy=tiny_model, tokenizer=tiny_tok, rows=rows, progress=False)
    log = losses_from_log(tmp_path)
    assert all(line["tokens"] > 0 for line in log) and len(log) == 2
    ckpt = load_checkpoint(str(tmp_path))
    assert len(ckpt.value_model.trunk.layers) == tiny_model.config.num_hidden_layers + 1
    assert ckpt.value_model.head.hidden[0].out_features == 8


def test_too_little_data_names_the_way_out(tiny_model, tiny_tok, rows, tmp_path):
    with pytest.raises(ValueError, match="batch_size"):
        train(
            cfg_for("dqo", batch_size=64),
            tmp_path,
            policy=tiny_model,
            tokenizer=tiny_tok,
            rows=rows,
            progress=False,
        )


@pytest.mark.parametrize("method", METHODS)
def test_value_warmup_holds_back_the_policy_of_value_methods_only(
    method, tiny_model, tiny_tok, rows, tmp_path
):
    """One configuration serves every method (the pipeline's ``train`` section): a value
    warm-up of 3 steps must freeze the policy of DRO/DQO for exactly 3 steps and must not touch
    SFT/RFT/DPO, which have no V_φ (a regression: they once sat out the warm-up too)."""
    data = data_for(method, rows)
    cfg = cfg_for(method, batch_size=2, max_steps=5, value_warmup_steps=3)
    train(cfg, tmp_path, policy=tiny_model, tokenizer=tiny_tok, rows=data, progress=False)
    lrs = [r["policy_lr"] for r in losses_from_log(tmp_path)]
    frozen = 3 if method in ("dro", "dqo") else 0
    assert lrs[:frozen] == [0.0] * frozen
    assert all(lr == pytest.approx(3e-3) for lr in lrs[frozen:]), lrs


def test_a_warmup_that_outlasts_training_is_an_error(tiny_model, tiny_tok, rows, tmp_path):
    cfg = cfg_for("dqo", batch_size=2, max_steps=3, value_warmup_steps=3)
    with pytest.raises(ValueError, match="value_warmup_steps: 3 warm-up steps of 3"):
        train(cfg, tmp_path, policy=tiny_model, tokenizer=tiny_tok, rows=rows, progress=False)


def test_probe_sees_the_current_policy_and_joins_the_log(tiny_model, tiny_tok, rows, tmp_path):
    cfg = cfg_for("dqo", batch_size=2, max_steps=5, checkpoint_every=100)
    seen = []

    def probe(policy):
        assert not policy.training and not torch.is_grad_enabled()
        weight = policy.get_input_embeddings().weight
        seen.append(weight.detach().clone())
        return {"probe_norm": float(weight.norm())}

    policy = copy.deepcopy(tiny_model)
    train(
        cfg,
        tmp_path,
        policy=policy,
        tokenizer=tiny_tok,
        rows=rows,
        progress=False,
        probe=probe,
        probe_every=2,
    )
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "probe_norm" in r] == [2, 4, 5]  # every 2 and the last
    final = AutoModelForCausalLM.from_pretrained(tmp_path / "policy")
    torch.testing.assert_close(seen[-1], final.get_input_embeddings().weight)  # the trained one
    assert not torch.equal(seen[0], seen[-1])
    assert policy.training  # back in train mode after each probe
    with pytest.raises(ValueError, match="probe_every"):
        train(
            cfg,
            tmp_path / "bad",
            policy=copy.deepcopy(tiny_model),
            tokenizer=tiny_tok,
            rows=rows,
            progress=False,
            probe=probe,
        )


def test_one_outcome_rule_for_cut_responses_in_every_method():
    """A length-cut response has no outcome, even when its text was graded correct: RFT never
    takes it as a positive, DPO puts it in no pair, DRO leaves it out, DQO keeps it with no
    outcome reward (bootstrapped). Hand-built rows, one per (reward, terminal) case."""
    from dqo_tutorial.rewards import outcome

    cases = [(1.0, True), (0.0, True), (1.0, False), (0.0, False)]  # row i
    rows = [
        {"prompt_index": 0, "sample_index": i, "input_ids": [5, 6, 7, 8],
         "action_mask": [0, 0, 1, 1], "ref_logps": [0.0] * 4, "behavior_logps": [0.0] * 4,
         "reward": r, "terminal": t}
        for i, (r, t) in enumerate(cases)
    ]  # fmt: skip
    assert [outcome(r) for r in rows] == [1.0, 0.0, None, None]
    rft = build_examples("rft", rows)
    assert len(rft) == 1 and rft[0]["input_ids"] == rows[0]["input_ids"]
    assert dpo_pairs(rows, pairs_per_prompt=4) == [(0, 1)]
    assert [e["reward"] for e in build_examples("dro", rows)] == [1.0, 0.0]
    dqo = build_examples("dqo", rows)
    assert len(dqo) == 4
    assert [e["rewards"][-1] for e in dqo] == [1.0, 0.0, 0.0, 0.0]  # no outcome on a cut row
    assert [e["terminal"] for e in dqo] == [True, True, False, False]


def test_self_normalised_importance_weights_are_exact_under_accumulation(
    tiny_model, tiny_tok, rows, tmp_path
):
    """is_normalize divides by the mean weight of the whole window, not of each micro-batch:
    4 × 1, 1 × 4 and 2 × 2 give the same losses and gradient norms (per micro-batch
    normalisation differed by 0.48 / 0.80 here), and 4 × 1's first loss is the kernel's
    normalised loss on the window as one batch (an independent computation)."""
    from dqo_tutorial.kernels import dqo_loss

    logs = []
    for i, (bs, ga) in enumerate([(4, 1), (1, 4), (2, 2)]):
        cfg = cfg_for("dqo", batch_size=bs, grad_accum=ga, max_steps=2, is_normalize=True)
        model = copy.deepcopy(tiny_model)
        train(cfg, tmp_path / str(i), policy=model, tokenizer=tiny_tok, rows=rows, progress=False)
        logs.append(losses_from_log(tmp_path / str(i)))
    for log in logs[1:]:
        for a, b in zip(logs[0], log):
            for key in ("policy_loss", "value_loss", "policy_grad_norm", "value_grad_norm"):
                assert b[key] == pytest.approx(a[key], rel=1e-5), key

    # step 1 of 4 × 1 by hand: the window the trainer drew, V = 0 (a fresh head), the kernel
    from dqo_tutorial.train import _window_order

    examples = build_examples("dqo", rows)
    window = [examples[i] for i in _window_order(len(examples), 4, 0, 0)[0]]
    batch = DQOCollator(tiny_tok.pad_token_id)(window)
    value = ValueModel.from_causal_lm(tiny_model)
    with torch.no_grad():
        from dqo_tutorial.modeling import per_token_logprobs

        logps = per_token_logprobs(tiny_model, batch["input_ids"], batch["attention_mask"])
        v = value(batch["input_ids"], batch["attention_mask"])
    boot = torch.where(batch["terminal"], torch.zeros_like(v.final), v.final)
    pl, vl, _ = dqo_loss(
        logps, batch["ref_logps"], v.values, batch["rewards"], batch["action_mask"], beta=0.5,
        bootstrap=boot, behavior_logps=batch["behavior_logps"], is_normalize=True,
    )  # fmt: skip
    assert logs[0][0]["policy_loss"] == pytest.approx(float(pl), rel=1e-5)
    assert logs[0][0]["value_loss"] == pytest.approx(float(vl), rel=1e-5)


def test_report_to_tensorboard_logs_the_same_metrics_and_does_not_change_the_run(
    tiny_model, tiny_tok, rows, tmp_path
):
    """report_to: Accelerate's TensorBoard tracker gets every step's metrics (read back from
    the event files, offline); the run's identity ignores it, so switching it resumes."""
    pytest.importorskip("tensorboard")  # the [tensorboard] extra; in the dev extra for CI
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = cfg_for("dqo", batch_size=4, max_steps=3, report_to="tensorboard")
    data = data_for("dqo", rows)
    train(cfg, tmp_path, policy=copy.deepcopy(tiny_model), tokenizer=tiny_tok, rows=data,
          progress=False)  # fmt: skip
    log = losses_from_log(tmp_path)
    events = list((tmp_path / "trackers").rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file"
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    for key in ("policy_loss", "value_loss", "kl_theta_ref", "policy_lr"):
        logged = [(e.step, e.value) for e in acc.Scalars(key)]
        assert logged == [(r["step"], pytest.approx(r[key], rel=1e-6)) for r in log], key
    quiet = dataclasses.replace(cfg, report_to="none")
    assert finished_summary(quiet, tmp_path) is not None  # the same run, reported elsewhere
    with pytest.raises(ConfigError, match="report_to: must be one of"):
        cfg_for("dqo", report_to="mlflow")


def test_a_new_method_is_one_registered_unit(tiny_model, tiny_tok, rows, tmp_path):
    """Register a throwaway method (likelihood of the *wrong* samples' first tokens, an unlikely
    but legal loss) and train it through the unchanged trainer."""
    from dqo_tutorial import methods

    def examples(rows, ctx):
        return [{"input_ids": list(r["input_ids"]), "action_mask": list(r["action_mask"])}
                for r in rows if r["reward"] == 0.0]  # fmt: skip

    def loss(batch, fwd, cfg, n):
        mask = batch["action_mask"]
        nll = -methods.masked_sum(fwd.logps, mask)
        return nll / n, None, {"nll_wrong": nll.detach() / mask.sum()}

    unit = methods.Method("wrong-nll", examples, lambda b: b["action_mask"].sum(), loss)
    with pytest.raises(ConfigError, match="method"):
        cfg_for("wrong-nll")
    methods.register(unit)
    try:
        cfg = cfg_for("wrong-nll", batch_size=2, max_steps=2)
        init = copy.deepcopy(tiny_model)
        summary = train(cfg, tmp_path, policy=tiny_model, tokenizer=tiny_tok, rows=rows,
                        progress=False)  # fmt: skip
        log = losses_from_log(tmp_path)
        assert summary["steps"] == 2 and all("nll_wrong" in r for r in log)
        n_wrong = sum(r["reward"] == 0.0 for r in rows)
        assert summary["num_examples"] == n_wrong
        moved = any(not torch.equal(a, b) for a, b in
                    zip(init.parameters(), tiny_model.parameters(), strict=True))  # fmt: skip
        assert moved
    finally:
        methods.unregister("wrong-nll")
    with pytest.raises(ConfigError, match="method"):
        cfg_for("wrong-nll")


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("method", METHODS)
def test_packed_and_padded_micro_batches_give_the_same_losses_and_gradients(
    method, padding_side, tiny_model, tiny_tok, rows
):
    """cfg.packing runs every forward on packed rows and scatters the outputs back, so the
    tested kernels see the same (B, T) tensors: losses and gradients equal to 1e-5 (float32)."""
    examples = build_examples(method, data_for(method, rows), tokenizer=tiny_tok)[:6]
    if method == "dpo":  # chosen rows first, then rejected: what the trainer collates
        examples = [e["chosen"] for e in examples] + [e["rejected"] for e in examples]
    method_batch = DQOCollator(tiny_tok.pad_token_id, padding_side=padding_side)(examples)
    policy, value, params = _models_for(method, tiny_model)
    n = item_count(method, method_batch)
    out = []
    for packing in (False, True):
        cfg = cfg_for(method, value_model="separate", packing=packing)
        for p in params:
            p.grad = None
        pl, vl, _ = compute_losses(method, method_batch, policy, value, cfg, n)
        (pl + (vl if vl is not None else 0)).backward()
        grads = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]
        out.append((pl.detach(), None if vl is None else vl.detach(), grads))
    (pl0, vl0, g0), (pl1, vl1, g1) = out
    torch.testing.assert_close(pl1, pl0, atol=1e-5, rtol=1e-5)
    if vl0 is not None:
        torch.testing.assert_close(vl1, vl0, atol=1e-5, rtol=1e-5)
    for a, b in zip(g0, g1):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("packing", [True, False])
@pytest.mark.parametrize("value_model", ["separate", "shared"])
def test_dro_reads_v_of_the_prompt_from_a_prompt_only_value_pass(
    value_model, packing, tiny_model, tiny_tok, rows
):
    """DRO's V(x) comes from V_φ run over the prompt tokens only; by causality it must equal
    V_φ read at the first action of a full-sequence pass (computed here by hand)."""
    from dqo_tutorial.kernels import dro_loss, masked_sum
    from dqo_tutorial.modeling import ValueHead

    cfg = cfg_for("dro", value_model=value_model, packing=packing)
    examples = build_examples("dro", data_for("dro", rows), tokenizer=tiny_tok)[:6]
    batch = DQOCollator(tiny_tok.pad_token_id, padding_side="left")(examples)
    policy = tiny_model.train()
    if value_model == "separate":
        value = ValueModel.from_causal_lm(policy)
        head = value.head
    else:
        value = head = ValueHead(policy.config.hidden_size, detach_input=True)
    with torch.no_grad():
        head.proj.weight.normal_(0, 0.1)
    n = item_count("dro", batch)
    pl, vl, _ = compute_losses("dro", batch, policy, value, cfg, n)

    ids, att, mask = batch["input_ids"], batch["attention_mask"], batch["action_mask"]
    logps, hidden = per_token_logprobs(policy, ids, att, output_hidden=True)
    full = value(hidden, att) if value_model == "shared" else value(ids, att)
    v_x = full.values.gather(1, mask.long().argmax(1, keepdim=True)).squeeze(1)
    seq = masked_sum(logps, mask, dim=1)
    seq_ref = masked_sum(batch["ref_logps"], mask, dim=1)
    pl_hand, vl_hand = dro_loss(seq, seq_ref, v_x, batch["reward"], cfg.beta, num_items=n)
    torch.testing.assert_close(pl, pl_hand, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(vl, vl_hand, atol=1e-6, rtol=1e-5)


def test_host_syncs_per_step_do_not_grow_with_the_micro_batches(
    tiny_model, tiny_tok, rows, tmp_path, monkeypatch
):
    """The step's statistics stay on the device until one transfer at its end: the calls that
    copy a floating-point tensor to the host (item, tolist, float, int) in a whole run are the
    same with 1 and with 4 micro-batches per step (on the old code: 12 more per micro-batch).
    Integer lengths (the packed layout) are read on the CPU at collation, before the device."""
    counts = {"n": 0}
    for name in ("item", "tolist", "__float__", "__int__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _original=original, **k):
            counts["n"] += self.dtype.is_floating_point  # losses and statistics, not lengths
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)

    def syncs(batch_size: int, grad_accum: int) -> int:
        counts["n"] = 0
        cfg = cfg_for("dqo", batch_size=batch_size, grad_accum=grad_accum, max_steps=2)
        out = tmp_path / f"b{batch_size}x{grad_accum}"
        train(cfg, out, policy=copy.deepcopy(tiny_model), tokenizer=tiny_tok, rows=rows,
              progress=False)  # fmt: skip
        return counts["n"]

    one, four = syncs(4, 1), syncs(1, 4)
    assert four - one <= 2, (one, four)
