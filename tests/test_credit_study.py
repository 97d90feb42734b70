"""Blame accuracy of runs on held-out wrong toy responses (dqo_tutorial.credit_study)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dqo_tutorial import credit_study, toy
from dqo_tutorial.tasks import get_task
from dqo_tutorial.viz import Checkpoint, load_checkpoint, make_example


@pytest.fixture(scope="module")
def reference():
    return load_checkpoint("toy", "π_ref")


def test_line_of_tokens_follows_the_newlines(reference):
    ex = make_example(reference.tokenizer, get_task("toy"), "8 +6 -3", "11",
                      "8+6=14\n14-3=12\n#### 12")  # fmt: skip
    lines = credit_study.line_of_tokens(ex)
    text = "8+6=14\n14-3=12\n#### 12"
    by_hand = [text[:h].count("\n") for h in range(len(text))] + [2]  # + EOS, on the last line
    assert lines == by_hand


def test_held_out_wrong_responses_are_wrong_at_their_line(reference):
    items = credit_study.held_out_wrong_responses(reference, n_problems=12, k=2, seed=1)
    assert items, "π_ref gets some of 24 samples wrong"
    for item in items:
        flags = toy.line_correctness(item.example.question, item.example.response)
        assert flags.index(False) == item.wrong and not all(flags)
        assert item.example.reward == 0 and item.example.terminal  # the answer is wrong too
        assert len(item.line) == len(item.example.tokens)


def test_planted_signals_score_as_localising_or_not(reference):
    """A signal that drops exactly on the first wrong line scores token and step blame 1; one
    that drops only on the last token scores what the last line's share gives; noise sits near
    its chance level."""
    items = credit_study.held_out_wrong_responses(reference, n_problems=40, k=2, seed=1)
    at_slip = [np.array([-1.0 if k == i.wrong else 0.0 for k in i.line]) for i in items]
    planted = credit_study.metrics(at_slip, items)
    assert planted["step_blame"] == 1.0 and planted["token_blame"] == 1.0
    assert planted["credit_prefix"] == 0.0 and planted["credit_wrong"] == -1.0
    at_end = [np.array([0.0] * (len(i.line) - 1) + [-1.0]) for i in items]
    last = np.mean([i.line[-1] == i.wrong for i in items])
    assert credit_study.metrics(at_end, items)["token_blame"] == pytest.approx(last)
    table = credit_study.score_runs({}, reference, items, seed=0)
    assert set(table) == {"π_ref surprisal", "random"}
    assert abs(table["random"]["step_blame"] - table["random"]["step_chance"]) < 0.25


def random_critic_run(reference):
    """A perturbed π_ref with a random critic, as a DQO run."""
    from dqo_tutorial.modeling import ValueModel

    policy, tok = reference.policy, reference.tokenizer
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        moved = type(policy)(policy.config)
        moved.load_state_dict(policy.state_dict())
        for p in moved.parameters():
            p.add_(0.05 * torch.randn_like(p))
        vm = ValueModel.from_causal_lm(moved)
        vm.head.proj.weight.normal_(0, 0.1)
    return Checkpoint("DQO", moved.eval(), tok, vm.eval(), False, "toy", {"beta": 0.2})


def test_every_signal_of_a_run_with_a_critic(reference):
    """A perturbed policy with a random critic: its implied reward and critic are scored, the
    critic with an AUC in [0, 1]; β comes from the run's config."""
    run = random_critic_run(reference)
    items = credit_study.held_out_wrong_responses(reference, n_problems=12, k=2, seed=1)
    table = credit_study.score_runs({"DQO": run}, reference, items)
    assert {"DQO implied reward", "DQO critic"} <= set(table)
    assert 0 <= table["DQO critic"]["critic_auc"] <= 1
    assert 0 <= table["DQO implied reward"]["token_blame"] <= 1


def test_credit_report_writes_its_three_files(tmp_path):
    payload = credit_study.credit_report({}, str(tmp_path), n_problems=10, k=2, seed=3)
    assert payload["meta"]["responses"] > 0
    assert set(payload["signals"]) == {"π_ref surprisal", "random"}
    files = {p.name for p in tmp_path.iterdir()}
    assert {"credit.json", "credit.md", "credit.png"} <= files
    md = (tmp_path / "credit.md").read_text()
    assert "π_ref surprisal" in md and "held-out toy problems" in md and "seed 3" in md


def test_a_task_without_a_step_checker_is_refused(tmp_path):
    from dqo_tutorial.errors import ConfigError

    with pytest.raises(ConfigError, match="no step checker"):
        credit_study.credit_report({}, str(tmp_path), task="gsm8k")


def test_the_credit_command(tmp_path, capsys):
    from dqo_tutorial.cli import main

    assert main(["credit", "--out", str(tmp_path / "c"), "--limit", "6", "--num-samples", "2",
                 "--run", "ref=toy"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "| ref implied reward |" in printed and "wrong responses scored" in printed
    assert main(["credit", "--out", str(tmp_path / "d"), "--run", "toy"]) == 2
    assert "give NAME=FOLDER" in capsys.readouterr().err


def test_value_errors_against_a_loop(reference):
    """The critic's error and both floors by a Python loop over the finished responses."""
    from dqo_tutorial.viz import forward_example

    run = random_critic_run(reference)
    items = credit_study.held_out_responses(reference, n_problems=8, k=3, seed=2)
    got = credit_study.value_errors(run, reference, items)
    done = [i for i in items if i.example.terminal]
    rs = [i.example.reward for i in done]
    tokens = sum(len(i.line) for i in done)
    mean = sum(r * len(i.line) for i, r in zip(done, rs)) / tokens
    critic = constant = prompt = 0.0
    for n, (i, r) in enumerate(zip(done, rs)):
        v = forward_example(run, reference.policy, i.example)["values"][0, i.example.n_prompt :]
        critic += float((v.double() - r).abs().sum())
        constant += abs(r - mean) * len(i.line)
        mates = [rs[m] for m, j in enumerate(done) if j.prompt == i.prompt and m != n]
        others = rs[:n] + rs[n + 1 :]
        loo = sum(mates) / len(mates) if mates else sum(others) / len(others)
        prompt += abs(r - loo) * len(i.line)
    assert got["critic"] == pytest.approx(critic / tokens, abs=1e-6)
    assert got["constant"] == pytest.approx(constant / tokens, abs=1e-12)
    assert got["prompt (leave-one-out)"] == pytest.approx(prompt / tokens, abs=1e-12)


def test_the_oracle_critic_is_the_positive_control(reference):
    """π_ref's own success probability blames the first wrong line far above chance and above
    π_ref's surprisal, and its AUC separates the states after the slip from those before (a
    critic that localises does both; the learned critic of round 2 did neither). Not 1: where
    π_ref drops carries, a *correct* digit can lower its success probability (the slipped
    alternative would have cancelled a later slip), and hard prompts start near V = 0."""
    items = credit_study.held_out_wrong_responses(reference, n_problems=16, k=2, seed=5)
    oracle = credit_study.oracle_signals(reference, items, task="toy", k=16, seed=0)
    table = credit_study.score_runs({}, reference, items, seed=0, oracle=oracle)
    row = table["oracle critic"]
    assert len(items) >= 20
    # measured 2026-12-07: oracle 0.91, surprisal 0.74, noise 0.35 of 23; AUC 0.78 (k = 16)
    assert row["token_blame"] >= 0.8 > table["π_ref surprisal"]["token_blame"]
    assert row["critic_auc"] >= 0.7
    assert row["hits"]["token"] == [int(h) for h in row["hits"]["token"]]  # per response 0/1
    assert len(row["hits"]["token"]) == len(items)


def test_an_extra_predictor_joins_the_value_error_floors(reference):
    """A predictor equal to the outcome has error 0; one of 0.5 everywhere has error 0.5."""
    run = random_critic_run(reference)
    items = credit_study.held_out_responses(reference, n_problems=6, k=2, seed=2)
    exact = [np.full(len(i.line), i.example.reward) for i in items]
    half = [np.full(len(i.line), 0.5) for i in items]
    got = credit_study.value_errors(run, reference, items, {"outcome": exact, "half": half})
    assert got["outcome"] == 0.0 and got["half"] == pytest.approx(0.5)


def test_value_errors_against_given_targets(reference):
    """With targets V* the error is |V* − V|: a predictor equal to V* has error 0, the
    constant floor is the mean absolute deviation of V* from its token mean (by a loop)."""
    run = random_critic_run(reference)
    items = credit_study.held_out_responses(reference, n_problems=6, k=2, seed=2)
    rng = np.random.default_rng(0)
    v_star = [rng.random(len(i.line)) for i in items]
    got = credit_study.value_errors(run, reference, items, {"v*": v_star}, targets=v_star)
    done = [v for v, i in zip(v_star, items) if i.example.terminal]
    flat = np.concatenate(done)
    assert got["v*"] == 0.0
    assert got["constant"] == pytest.approx(float(np.abs(flat - flat.mean()).mean()))


def test_a_process_reward_critic_is_read_with_its_own_shaped_reward(reference):
    """A critic trained with α > 0 learned V* − αΦ; its advantage must add the shaped reward
    α(Φ(s') − Φ(s)) it was trained with: the signal differs from the α = 0 reading by exactly
    that reward (rewards.token_rewards, by hand per token), and is 0-shifted nowhere else."""
    import dataclasses

    from dqo_tutorial.viz import token_rewards  # the trainer's rewards.token_rewards, of an Example

    run = random_critic_run(reference)
    shaped = dataclasses.replace(run, config={**run.config, "process_reward_coef": 0.5})
    item = credit_study.held_out_wrong_responses(reference, n_problems=12, k=2, seed=1)[0]
    plain = credit_study._signals(run, reference.policy, item, 0.2)["critic"]
    read = credit_study._signals(shaped, reference.policy, item, 0.2)["critic"]
    n = item.example.n_prompt
    extra = np.array(token_rewards(item.example, 0.5)) - np.array(token_rewards(item.example, 0.0))
    assert np.abs(extra[n:]).max() > 0  # the slip's line boundary carries −α
    np.testing.assert_allclose(read - plain, extra[n:], atol=1e-6)


def test_a_run_label_may_hold_an_equals_sign_and_a_folder_too(tmp_path):
    """--run NAME=FOLDER: the study's own labels hold "=" ("DQO, λ=0"), and so may a folder
    ("lr=1e-4/train"): the split whose right side exists wins; else the last "=" (a model
    spec such as "toy")."""
    from dqo_tutorial.cli import _named_run

    folder = tmp_path / "lr=1e-4"
    folder.mkdir()
    assert _named_run(f"DQO, λ=0={folder}") == ("DQO, λ=0", str(folder))
    assert _named_run(f"DQO={folder}") == ("DQO", str(folder))
    assert _named_run("DQO, λ=0=toy") == ("DQO, λ=0", "toy")
    assert _named_run("ref=toy") == ("ref", "toy")
    for bad in ("toy", "=toy", "DQO="):
        assert _named_run(bad) is None
