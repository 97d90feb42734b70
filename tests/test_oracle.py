"""The oracle critic (dqo_tutorial.oracle) and the fixed critics it feeds into DQO's loss.

References are independent of the code under test: hand-computed values, an exact enumeration
of a small tabular language model, and the policy-gradient residual derived by hand."""

from __future__ import annotations

import itertools
import math
import random

import pytest
import torch
from conftest import sampled_rows

from dqo_tutorial import toy
from dqo_tutorial.errors import ConfigError
from dqo_tutorial.methods import Forward, fixed_critic, get_method
from dqo_tutorial.oracle import anchor_positions, chained_values, with_oracle_values
from dqo_tutorial.train import TrainConfig, train

# --------------------------------------------------------------------------------------------
# anchors and chaining, by hand
# --------------------------------------------------------------------------------------------


def test_anchors_are_the_prompt_the_uncertain_tokens_and_a_cut_rows_end():
    lp = [math.log(p) for p in (0.999, 0.5, 0.99, 0.97)]
    assert anchor_positions(lp, terminal=True, delta=0.02) == [0, 1, 3]
    assert anchor_positions(lp, terminal=False, delta=0.02) == [0, 1, 3, 4]
    assert anchor_positions([], terminal=True, delta=0.02) == [0]


def test_chaining_copies_the_value_after_each_action_with_its_bound():
    lp = [math.log(p) for p in (0.5, 0.99, 0.3, 0.999)]
    values, boot, bound = chained_values({0: 0.5, 2: 0.2}, lp, outcome=1.0, terminal=True)
    assert values == pytest.approx([0.5, 0.2, 0.2, 1.0])  # h = 3 copies R
    assert bound == pytest.approx([0.0, 0.01, 0.0, 0.001])
    assert boot == 0.0
    values, boot, bound = chained_values({0: 0.5, 2: 0.2, 4: 0.7}, lp, outcome=0.0, terminal=False)
    assert values == pytest.approx([0.5, 0.2, 0.2, 0.7]) and boot == 0.7  # a cut row's end


def _tabular_lm(rng: random.Random, vocab: int, depth: int) -> dict:
    """π(a | prefix) for every prefix shorter than ``depth``: a random categorical, peaked so
    that most taken tokens are near-certain (the toy's regime)."""
    law = {}
    for n in range(depth):
        for prefix in itertools.product(range(vocab), repeat=n):
            w = [rng.random() ** 6 for _ in range(vocab)]
            w[rng.randrange(vocab)] += 40.0
            law[prefix] = [x / sum(w) for x in w]
    return law


def _exact_value(law: dict, prefix: tuple, depth: int, success) -> float:
    """V(prefix) by enumerating every completion (the independent reference)."""
    if len(prefix) == depth:
        return float(success(prefix))
    return sum(p * _exact_value(law, prefix + (a,), depth, success)
               for a, p in enumerate(law[prefix]))  # fmt: skip


@pytest.mark.parametrize("seed", range(5))
def test_chained_values_err_by_at_most_their_bound_against_exact_enumeration(seed):
    rng = random.Random(seed)
    vocab, depth = 3, 6
    law = _tabular_lm(rng, vocab, depth)
    success = lambda y: sum(y) % 3 == 0  # noqa: E731  (an outcome known only at the end)
    for _ in range(20):  # sampled responses, anchors exact at the uncertain states
        y = []
        for _h in range(depth):
            y.append(rng.choices(range(vocab), law[tuple(y)])[0])
        lp = [math.log(law[tuple(y[:h])][y[h]]) for h in range(depth)]
        exact = [_exact_value(law, tuple(y[:h]), depth, success) for h in range(depth)]
        anchors = {h: exact[h] for h in anchor_positions(lp, True, 0.05)}
        values, _, bound = chained_values(anchors, lp, float(success(y)), True)
        for h in range(depth):
            assert abs(values[h] - exact[h]) <= bound[h] + 1e-12


# --------------------------------------------------------------------------------------------
# the oracle on the real toy π_ref
# --------------------------------------------------------------------------------------------


def test_the_oracle_of_toy_rows_localises_a_slip_and_matches_the_outcome_at_the_end(one_thread):
    from dqo_tutorial.collate import example_from_ids
    from dqo_tutorial.models import load_model_and_tokenizer
    from dqo_tutorial.sampling import reference_logprobs
    from dqo_tutorial.tasks import get_task

    model, tok = load_model_and_tokenizer("toy", device="cpu")
    task = get_task("toy")
    p = task.load("train", None, 1)[0]
    prompt = tok(task.format_prompt(p.question, tok), add_special_tokens=False)["input_ids"]
    gold = tok(task.gold_solution(p), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    slipped = toy.slipped_solution(p.question, 0)  # "5+9=15" then faithful: "#### 75"
    slip = tok("5+9=15", add_special_tokens=False)["input_ids"]
    wrong_ids = tok(slipped, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    rows = []
    for i, response in enumerate((gold, wrong_ids)):
        ex = example_from_ids(prompt, response)
        ref = reference_logprobs(model, [ex])[0]
        rows.append({**ex, "prompt_index": 0, "sample_index": i, "ref_logps": ref,
                     "response": tok.decode(response, skip_special_tokens=True),
                     "gold": p.gold, "terminal": True, "reward": float(i == 0)})  # fmt: skip
    assert p.question == "5 +9 +16 -16 *5"
    out = with_oracle_values(rows, model, tok, task=task, k=32, seed=0)
    n = len(prompt)
    right, wrong = out[0]["oracle_values"][n:], out[1]["oracle_values"][n:]
    assert right[-1] == 1.0  # EOS after a correct answer: V = R, chained
    assert right[0] == wrong[0]  # one shared prompt state, rolled out once
    # the largest one-step drop r_h + V(s_{h+1}) − V(s_h) is the slipped digit "5" of "15"
    # (π_ref can slip back later — cancelling slips — so V after it is small, not 0)
    drops = [b - a for a, b in zip(wrong, wrong[1:] + [0.0])]
    assert drops.index(min(drops)) == len(slip) - 1
    assert sum(wrong[len(slip) :]) / len(wrong[len(slip) :]) < 0.1
    assert out[1]["oracle_bootstrap"] == 0.0 and out[1]["oracle_bound"] < 0.1


# --------------------------------------------------------------------------------------------
# fixed critics in DQO's loss
# --------------------------------------------------------------------------------------------


def _batch(side: str):
    """Two rows (3 and 2 actions, outcome 1 and 0), padded on ``side``."""
    v = [[0.0, 0.4, 0.6, 1.0], [0.0, 0.3, 0.0]]
    ids, mask = [[5, 6, 7, 8], [5, 6, 7]], [[0, 1, 1, 1], [0, 1, 1]]
    t = 4

    def pad(rows, fill=0):
        out = torch.full((2, t), float(fill))
        for i, r in enumerate(rows):
            cols = slice(0, len(r)) if side == "right" else slice(t - len(r), t)
            out[i, cols] = torch.tensor(r, dtype=torch.float32)
        return out

    m = pad(mask).bool()
    rewards = torch.zeros(2, t)
    last = torch.tensor([3, 2 if side == "right" else 3])
    rewards[0, last[0]] = 1.0
    return {
        "input_ids": pad(ids).long(), "attention_mask": pad([[1] * 4, [1] * 3]).long(),
        "action_mask": m, "ref_logps": torch.zeros(2, t), "behavior_logps": torch.zeros(2, t),
        "rewards": rewards, "reward": torch.tensor([1.0, 0.0]),
        "terminal": torch.tensor([True, True]), "oracle_values": pad(v),
        "oracle_bootstrap": torch.zeros(2),
    }  # fmt: skip


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("critic", ["oracle", "flat", "oracle_dead_flat"])
def test_a_fixed_critic_is_the_baseline_of_the_policy_gradient(critic, side):
    """At π_θ = π_ref (ρ = 0, IS weights 1) and λ = 1, δ_h = V(s_h) − R: the gradient of the
    policy loss w.r.t. log π_θ(a_h|s_h) is β (V(s_h) − R) / N, by hand. oracle_dead_flat is the
    oracle but where it reads 0 (a dead state: row 1's second action), there V(s_1)."""
    batch = _batch(side)
    logps = torch.zeros(2, 4, requires_grad=True)
    cfg = TrainConfig(method="dqo", model="toy", task="toy", beta=0.1, critic=critic)
    n = batch["action_mask"].sum()
    pl, vl, _ = get_method("dqo").loss(batch, Forward(logps, None), cfg, n)
    assert vl is None  # nothing to learn
    (grad,) = torch.autograd.grad(pl, logps)
    if critic == "oracle":
        v = {0: [0.4, 0.6, 1.0], 1: [0.3, 0.0]}
    elif critic == "flat":
        v = {0: [0.4] * 3, 1: [0.3] * 2}
    else:
        v = {0: [0.4, 0.6, 1.0], 1: [0.3, 0.3]}
    want = torch.zeros(2, 4)
    for row, r in ((0, 1.0), (1, 0.0)):
        cols = batch["action_mask"][row].nonzero()[:, 0]
        want[row, cols] = 0.1 * (torch.tensor(v[row]) - r) / 5  # β δ_h / N
    torch.testing.assert_close(grad, want)


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("critic", ["oracle", "flat", "oracle_dead_flat"])
def test_a_critic_offset_shifts_every_value_and_a_cut_rows_bootstrap(critic, side):
    """critic_offset b: δ_h = V(s_h) + b − R at ρ = 0, so the gradient w.r.t. log π_θ(a_h|s_h)
    is β (V(s_h) + b − R) / N at every action (by hand); a cut row's bootstrap is shifted too,
    a terminal row's stays 0."""
    batch = _batch(side)
    batch["terminal"] = torch.tensor([True, False])
    batch["oracle_bootstrap"] = torch.tensor([0.0, 0.25])
    batch["rewards"][1].zero_()  # the cut row has no outcome: its target is the bootstrap
    logps = torch.zeros(2, 4, requires_grad=True)
    cfg = TrainConfig(method="dqo", model="toy", task="toy", beta=0.1, critic=critic,
                      critic_offset=0.2)  # fmt: skip
    pl, _, _ = get_method("dqo").loss(batch, Forward(logps, None), cfg, batch["action_mask"].sum())
    (grad,) = torch.autograd.grad(pl, logps)
    if critic == "oracle":  # rows: V + b, bootstrap of the cut row 0.25 + b
        v, boot = {0: [0.4, 0.6, 1.0], 1: [0.3, 0.0]}, 0.25
    elif critic == "flat":  # the flat critic's bootstrap is its V(s_1)
        v, boot = {0: [0.4] * 3, 1: [0.3] * 2}, 0.3
    else:  # the oracle where it is live (the bootstrap 0.25 too), V(s_1) where it reads 0
        v, boot = {0: [0.4, 0.6, 1.0], 1: [0.3, 0.3]}, 0.25
    want = torch.zeros(2, 4)
    for row, target in ((0, 1.0), (1, boot + 0.2)):
        cols = batch["action_mask"][row].nonzero()[:, 0]
        want[row, cols] = 0.1 * (torch.tensor(v[row]) + 0.2 - target) / 5
    torch.testing.assert_close(grad, want)
    values, bootstrap = fixed_critic(batch, critic, offset=0.2)
    assert bootstrap.tolist() == pytest.approx([0.0, boot + 0.2])
    assert values[~batch["action_mask"]].abs().max() == 0  # no value off the actions
    if critic == "oracle_dead_flat":  # a cut row that ends dead bootstraps its V(s_1)
        batch["oracle_bootstrap"] = torch.tensor([0.0, 0.0])
        assert fixed_critic(batch, critic)[1].tolist() == pytest.approx([0.0, 0.3])


def test_a_critic_offset_needs_a_fixed_critic():
    with pytest.raises(ConfigError, match="critic_offset"):
        TrainConfig(method="dqo", model="toy", task="toy", critic_offset=0.2)
    cfg = TrainConfig(method="dqo", model="toy", task="toy", critic="flat")
    assert "critic_offset" not in cfg.identity()  # old fixed-critic runs keep their identity


def test_a_fixed_critic_without_its_column_is_one_clear_error():
    batch = _batch("right")
    del batch["oracle_values"]
    with pytest.raises(ValueError, match="oracle_values column"):
        fixed_critic(batch, "oracle")


def test_only_dqo_takes_a_fixed_critic_and_old_runs_keep_their_identity():
    with pytest.raises(ConfigError, match="critic"):
        TrainConfig(method="dro", model="toy", task="toy", critic="oracle")
    with pytest.raises(ConfigError, match="critic"):
        TrainConfig(method="dqo", model="toy", task="toy", critic="perfect")
    cfg = TrainConfig(method="dqo", model="toy", task="toy")
    assert "critic" not in cfg.identity()


def test_a_dqo_run_with_the_oracle_critic_trains_no_value_model(
    tiny_model, tiny_tok, tmp_path, one_thread
):
    rows = sampled_rows(tiny_model, len(tiny_tok))
    for r in rows:
        n = len(r["input_ids"]) - sum(r["action_mask"])
        r["oracle_values"] = [0.0] * n + [0.5] * (len(r["input_ids"]) - n)
        r["oracle_bootstrap"] = 0.0 if r["terminal"] else 0.5
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    cfg = TrainConfig(method="dqo", model="tiny", task="toy", critic="oracle", max_steps=2,
                      batch_size=8, policy_lr=1e-2, mixed_precision="no", warmup_ratio=0.0,
                      lr_scheduler="constant", checkpoint_every=1000)  # fmt: skip
    train(cfg, tmp_path, policy=tiny_model, tokenizer=tiny_tok, rows=rows, progress=False)
    assert not (tmp_path / "value_model.safetensors").exists()
    moved = [k for k, v in tiny_model.state_dict().items() if not torch.equal(v, before[k])]
    assert moved  # the policy learned
