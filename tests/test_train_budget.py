"""Micro-batches by token budget (``TrainConfig.micro_batch_tokens``) and pre-tensorised examples.

The budget changes how a process's share of a window is cut, never the window: every loss is a
sum over the window divided by its item count N, so the gradient of one step must be the one of a
single micro-batch holding the whole window (computed here independently: one collated batch and
one backward pass, no trainer code but the loss). The two-process case lives in
tests/test_distributed.py.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import sampled_rows
from hypothesis import given, settings
from hypothesis import strategies as st

import dqo_tutorial.train as train_mod
from dqo_tutorial.collate import DQOCollator
from dqo_tutorial.errors import ConfigError
from dqo_tutorial.modeling import pack_rows
from dqo_tutorial.train import (
    METHODS,
    TrainConfig,
    build_examples,
    compute_losses,
    item_count,
    micro_batch_cost,
    tensorise_examples,
    token_budget_split,
    train,
)


def sft_rows():
    """Gold solutions of varied lengths (the numbers have 1 to 6 digits)."""
    return [
        {"prompt": f"Q: {a}+{a}=\nA:\n", "response": f"{a}+{a}={2 * a}\n#### {2 * a}"}
        for a in (0, 3, 12, 47, 250, 999, 4321, 77777)
    ]


def cfg_for(method: str, **kw) -> TrainConfig:
    base = dict(
        method=method, model="tiny", task="toy", policy_lr=3e-3, value_lr=3e-3, beta=0.5,
        warmup_ratio=0.0, lr_scheduler="constant", mixed_precision="no", checkpoint_every=1000,
    )  # fmt: skip
    return TrainConfig(**{**base, **kw})


def sequences(method: str, examples):
    """The sequences of a micro-batch, as the trainer collates them (DPO: chosen, rejected)."""
    if method == "dpo":
        return [e["chosen"] for e in examples] + [e["rejected"] for e in examples]
    return list(examples)


# --------------------------------------------------------------------------------------------
# the split: a hand-computed case, then properties against the real packer
# --------------------------------------------------------------------------------------------


def test_token_budget_split_by_hand():
    lengths = [7, 3, 5, 3, 10, 2, 4]  # sorted: 2 (i5), 3 (i1), 3 (i3), 4 (i6), 5 (i2), 7, 10
    # budget 12, padded: 3 × 3 = 9 ✓, + the 4 → 4 × 4 = 16 ✗ | 4, 5 → 2 × 5 ✓, + 7 → 21 ✗ | ...
    assert token_budget_split(lengths, 12) == [[5, 1, 3], [6, 2], [0], [4]]
    # budget 8: the 10 alone costs more than the budget and gets a micro-batch of its own
    assert token_budget_split(lengths, 8) == [[5, 1], [3, 6], [2], [0], [4]]
    # count 6 > 4: the largest micro-batch is halved until there are 6
    assert token_budget_split(lengths, 12, count=6) == [[5], [1], [3], [6, 2], [0], [4]]
    # packed: 2, 2, 2 fill one row of the 6 → 2 rows × 6 = 12 ✓ (padded: 4 × 6 = 24 ✗)
    assert token_budget_split([2, 2, 2, 6], 12, packed=True) == [[0, 1, 2, 3]]
    assert token_budget_split([2, 2, 2, 6], 12) == [[0, 1, 2], [3]]
    # DPO pairs count both sequences: by their longest, (2, 2) → 4 rows × 5 = 20 ✗ with (3, 5)
    pairs = [(3, 5), (2, 2), (6, 1)]
    assert token_budget_split(pairs, 12) == [[1], [0], [2]]
    # packed, budget 15: 2, 2, 3, 5 → rows [5], [3, 2], [2] → 15 ✓; + (6, 1) → 4 rows × 6 ✗
    assert token_budget_split(pairs, 15, packed=True) == [[1, 0], [2]]
    assert micro_batch_cost([2, 2, 3, 5], packed=True) == 15
    with pytest.raises(ValueError, match="cannot cut 7 examples into 8"):
        token_budget_split(lengths, 12, count=8)


def real_cost(lengths: list[int], packed: bool) -> int:
    """rows × T of the tensor the model runs, from the collator and the real packer."""
    batch = DQOCollator(0)([{"input_ids": [1] * n, "action_mask": [1] * n} for n in lengths])
    rows = batch["input_ids"].shape[0]
    if packed:
        rows = pack_rows(batch["input_ids"], batch["attention_mask"]).input_ids.shape[0]
    return rows * batch["input_ids"].shape[1]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(st.integers(1, 40), st.tuples(st.integers(1, 40), st.integers(1, 40))),
        min_size=1,
        max_size=24,
    ),  # fmt: skip
    st.integers(1, 120),
    st.booleans(),
    st.data(),
)
def test_token_budget_split_respects_the_budget_as_the_packer_packs(lengths, budget, packed, data):
    seqs = [(n,) if isinstance(n, int) else n for n in lengths]
    natural = len(token_budget_split(lengths, budget, packed=packed))
    count = data.draw(st.integers(0, len(lengths)))
    groups = token_budget_split(lengths, budget, packed=packed, count=count)
    assert len(groups) == max(natural, count)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))  # each once
    flat = [i for g in groups for i in g]
    keys = [(max(seqs[i]), sum(seqs[i]), i) for i in flat]
    assert keys == sorted(keys)  # consecutive runs of the length-sorted examples
    for g in groups:
        cost = real_cost([n for i in g for n in seqs[i]], packed)
        assert cost <= budget or len(g) == 1, (g, cost)


# --------------------------------------------------------------------------------------------
# one trainer step: the gradient of one micro-batch holding the whole window
# --------------------------------------------------------------------------------------------


# per method: (examples per micro-batch, micro-batches) with batch_size × grad_accum = all the
# examples, so the window is the whole data set (no permutation needed for the reference)
SHAPES = {"sft": (4, 2), "rft": (4, 2), "dpo": (5, 1), "dro": (13, 1), "dqo": (8, 2)}


def one_step_with_spies(method, cfg, tiny_model, tiny_tok, data, tmp_path, monkeypatch):
    """Run one step of ``train``; return its micro-batches, examples, gradients (captured
    before the optimiser, which is skipped) and the models, with their parameters unchanged."""
    seen: dict = {}
    window = train_mod._window

    def spy_window(cfg, accelerator, plan, examples, collator, step):
        seen["micro"] = window(cfg, accelerator, plan, examples, collator, step)
        seen["examples"] = examples
        return seen["micro"]

    def spy_step(accelerator, updates, max_grad_norm):
        seen["models"] = [m for m, _, _ in updates]
        seen["grads"] = [[p.grad.clone() if p.grad is not None else torch.zeros_like(p)
                          for p in m.parameters()] for m in seen["models"]]  # fmt: skip
        return [0.0] * len(updates), False

    monkeypatch.setattr(train_mod, "_window", spy_window)
    monkeypatch.setattr(train_mod, "optimizer_step", spy_step)
    policy = copy.deepcopy(tiny_model)
    train(cfg, tmp_path, policy=policy, tokenizer=tiny_tok, rows=data, progress=False)
    return seen


def whole_window_gradients(method, cfg, seen, pad_token_id):
    """The reference: every example of the window in one collated batch, one backward pass."""
    batch = DQOCollator(pad_token_id)(sequences(method, seen["examples"]))
    n = item_count(method, batch)
    policy, value = (seen["models"] + [None])[:2]
    for m in seen["models"]:
        m.zero_grad(set_to_none=True)
    pl, vl, stats = compute_losses(method, batch, policy, value, cfg, n)
    (pl + (vl if vl is not None else 0)).backward()
    grads = [[p.grad if p.grad is not None else torch.zeros_like(p) for p in m.parameters()]
             for m in seen["models"]]  # fmt: skip
    return grads, n, stats


@pytest.mark.parametrize("packing", [True, False])
@pytest.mark.parametrize("method", METHODS)
def test_a_token_budget_gives_the_gradient_of_the_whole_window(
    method, packing, tiny_model, tiny_tok, tmp_path, monkeypatch
):
    rows = sampled_rows(tiny_model, len(tiny_tok))
    data = sft_rows() if method == "sft" else rows
    examples = build_examples(method, data, tokenizer=tiny_tok)
    batch_size, grad_accum = SHAPES[method]
    assert batch_size * grad_accum == len(examples)
    longest = max(len(s["input_ids"]) for s in sequences(method, examples))
    lengths = {len(s["input_ids"]) for s in sequences(method, examples)}
    assert len(lengths) > 2  # rows of different lengths
    budget = 3 * longest  # a DPO pair is 2 rows: one or two pairs per micro-batch
    cfg = cfg_for(method, batch_size=batch_size, grad_accum=grad_accum, max_steps=1,
                  micro_batch_tokens=budget, packing=packing, value_model="separate")  # fmt: skip
    seen = one_step_with_spies(method, cfg, tiny_model, tiny_tok, data, tmp_path, monkeypatch)

    micro = seen["micro"]
    assert len(micro) > 1 and len(micro) != grad_accum, len(micro)
    for b in micro:  # the budget holds for the tensor the model runs
        rows_run = b["packing"].input_ids.shape[0] if packing else b["input_ids"].shape[0]
        single = b["input_ids"].shape[0] == (2 if method == "dpo" else 1)
        assert rows_run * b["input_ids"].shape[1] <= budget or single
    assert all(torch.is_tensor(e["input_ids"]) for e in sequences(method, seen["examples"]))

    got = seen["grads"]
    want, n, stats = whole_window_gradients(method, cfg, seen, tiny_tok.pad_token_id)
    assert sum(int(item_count(method, b)) for b in micro) == int(n)
    for model_got, model_want in zip(got, want, strict=True):
        for g, w in zip(model_got, model_want, strict=True):
            torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)
        assert any(g.abs().sum() > 0 for g in model_got)  # a real gradient, not zeros


# the statistics whose denominator is the method's item (tokens, pairs, responses): the log must
# hold the whole window's value, however the window is cut
EXACT_STATS = {
    "sft": ["nll"],
    "rft": ["nll"],
    "dpo": ["dpo_margin", "dpo_accuracy", "log_ratio_abs_max"],
    "dro": ["value_error", "log_ratio_abs_max"],
    "dqo": ["kl_theta_ref", "delta_mean", "delta_abs_mean", "value_error", "is_weight_mean",
            "is_weight_max", "is_clip_rate"],
}  # fmt: skip


@pytest.mark.parametrize("budget", [0, 1])
@pytest.mark.parametrize("method", ["sft", "dqo"])
def test_logged_statistics_are_the_window_mean_whatever_the_split(
    method, budget, tiny_model, tiny_tok, tmp_path, monkeypatch
):
    """Per-token statistics are token-weighted over the micro-batches (they were one vote per
    micro-batch: the mean of 2 micro-batch means ≠ the window's mean when their token counts
    differ). ``budget`` 1: every example alone; 0: ``grad_accum`` fixed micro-batches."""
    rows = sampled_rows(tiny_model, len(tiny_tok))
    data = sft_rows() if method == "sft" else rows
    batch_size, grad_accum = SHAPES[method]
    cfg = cfg_for(method, batch_size=batch_size, grad_accum=grad_accum, max_steps=1,
                  micro_batch_tokens=budget)  # fmt: skip
    seen = one_step_with_spies(method, cfg, tiny_model, tiny_tok, data, tmp_path, monkeypatch)
    counts = {int(item_count(method, b)) for b in seen["micro"]}
    assert len(counts) > 1  # micro-batches of different sizes
    _, _, stats = whole_window_gradients(method, cfg, seen, tiny_tok.pad_token_id)
    line = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[0])
    for key in EXACT_STATS[method]:
        assert line[key] == pytest.approx(float(stats[key]), rel=1e-5, abs=1e-5), key
    assert ("micro_batches" in line) == bool(budget)


@pytest.mark.parametrize("method", ["dpo", "dro"])
def test_pair_and_response_statistics_are_exact_under_a_budget(
    method, tiny_model, tiny_tok, tmp_path, monkeypatch
):
    """DPO's margin and accuracy are per pair, DRO's value error per response: exact too. The
    data's π_ref is another model and is not re-scored, so that margins and ratios are not 0."""
    from dqo_tutorial.models import tiny_causal_lm

    rows = sampled_rows(tiny_causal_lm(len(tiny_tok), seed=1), len(tiny_tok))
    monkeypatch.setattr(train_mod, "_reference_pass", lambda *a, **k: {})
    batch_size, grad_accum = SHAPES[method]
    cfg = cfg_for(method, batch_size=batch_size, grad_accum=grad_accum, max_steps=1,
                  micro_batch_tokens=40)  # fmt: skip
    seen = one_step_with_spies(method, cfg, tiny_model, tiny_tok, rows, tmp_path, monkeypatch)
    assert len({int(item_count(method, b)) for b in seen["micro"]}) > 1
    _, _, stats = whole_window_gradients(method, cfg, seen, tiny_tok.pad_token_id)
    line = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[0])
    for key in EXACT_STATS[method]:
        assert line[key] == pytest.approx(float(stats[key]), rel=1e-5, abs=1e-5), key
        assert abs(line[key]) > 1e-3, key  # not a vacuous 0


def test_a_negative_budget_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match=r"TrainConfig.micro_batch_tokens: must be >= 0") as e:
        TrainConfig(micro_batch_tokens=-1)
    assert "\n" not in str(e.value)
    assert TrainConfig().micro_batch_tokens == 0  # off by default


def test_a_run_stored_before_the_budget_existed_still_matches():
    """Off (0) is left out of the identity a resume compares; a budget is part of it."""
    import dataclasses

    stored = dataclasses.asdict(TrainConfig())
    del stored["micro_batch_tokens"]  # a train_config.json written before the field
    assert TrainConfig.identity_of(stored) == TrainConfig().identity()
    assert TrainConfig.identity_of(stored) != TrainConfig(micro_batch_tokens=512).identity()


# --------------------------------------------------------------------------------------------
# pre-tensorised examples
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pad_to", [None, 8])
@pytest.mark.parametrize("side", ["left", "right"])
def test_the_collator_pads_tensors_as_it_pads_lists(side, pad_to, tiny_model, tiny_tok):
    lists = build_examples("dqo", sampled_rows(tiny_model, len(tiny_tok)))[:6]
    tensors = tensorise_examples(copy.deepcopy(lists))
    assert tensors[0]["input_ids"].dtype == torch.long
    assert tensors[0]["ref_logps"].dtype == torch.float32
    assert isinstance(tensors[0]["terminal"], bool)  # scalars stay
    collate = DQOCollator(tiny_tok.pad_token_id, padding_side=side, pad_to_multiple_of=pad_to)
    a, b = collate(lists), collate(tensors)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0)
    with pytest.raises(ValueError, match="per-token field 'rewards' has length"):
        collate([{**tensors[0], "rewards": tensors[0]["rewards"][:-1]}])


def test_dpo_pairs_are_tensorised_on_both_sides(tiny_model, tiny_tok):
    pairs = tensorise_examples(build_examples("dpo", sampled_rows(tiny_model, len(tiny_tok))))
    assert all(torch.is_tensor(p[side]["rewards"]) for p in pairs for side in pairs[0])
