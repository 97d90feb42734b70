"""The critic alone (dqo_tutorial.experiments.critic_alone): batched scores equal the credit
study's, floors with an extra one, the grid's configs, the head's initialisation, the report,
the command."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from dqo_tutorial import credit, credit_study
from dqo_tutorial.cli import main
from dqo_tutorial.experiments import critic_alone
from dqo_tutorial.modeling import ValueHead, ValueModel
from dqo_tutorial.viz import Checkpoint, load_checkpoint


@pytest.fixture(scope="module")
def reference():
    return load_checkpoint("toy", "π_ref")


@pytest.fixture(scope="module")
def items(reference):
    return credit_study.held_out_responses(reference, n_problems=10, k=3, seed=2)


def random_critic(reference):
    """π_ref's trunk copy with a random head and a perturbed trunk (values vary by state)."""
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vm = ValueModel.from_causal_lm(reference.policy)
        for p in vm.trunk.parameters():
            p.add_(0.05 * torch.randn_like(p))
        vm.head.proj.weight.normal_(0, 0.1)
        vm.head.proj.bias.fill_(0.3)
    return vm.eval()


def test_batched_scores_equal_the_credit_study(reference, items):
    """One padded pass per chunk gives the per-response loops' value error, blame, credit and
    AUC (the frozen critic's run: π_ref as its policy)."""
    vm = random_critic(reference)
    run = Checkpoint("C", reference.policy, reference.tokenizer, vm, False, "toy", {"beta": 0.1})
    got = critic_alone.score_critic(vm, items)
    assert got["value_error"] == pytest.approx(
        credit_study.value_errors(run, reference, items)["critic"], abs=1e-6
    )
    wrong = [i for i in items if i.blameable]
    assert wrong, "π_ref gets some of 30 samples wrong"
    want = credit_study.score_runs({"C": run}, reference, wrong)["C critic"]
    assert set(want) <= set(got)
    assert got.pop("hits") == want.pop("hits")  # per-response 0/1, exactly
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key
    done = [i for i in items if i.example.terminal]
    by_loop = [((i.example.reward - v[:-1]) ** 2).sum() for i, v in
               zip(done, critic_alone.critic_values(vm, done))]  # fmt: skip
    tokens = sum(len(i.line) for i in done)
    assert got["value_mse"] == pytest.approx(sum(by_loop) / tokens, abs=1e-9)
    small = critic_alone.critic_values(vm, items, batch_size=3)  # other chunks, same values
    for a, b in zip(small, critic_alone.critic_values(vm, items)):
        assert a == pytest.approx(b, abs=1e-5)


def test_floors_with_an_extra_one(reference, items):
    """The constant and prompt-level floors are the credit study's; an extra floor is scored in
    the same layout (the targets themselves score 0) and a misshapen one is refused."""
    vm = random_critic(reference)
    run = Checkpoint("C", reference.policy, reference.tokenizer, vm, False, "toy", {})
    theirs = credit_study.value_errors(run, reference, items)
    target, mask = critic_alone.value_targets(items)
    floors = critic_alone.floor_errors(
        items, {"oracle": lambda done: target.clone(), "half": lambda done: 0.5 + 0 * target}
    )
    assert floors["constant"] == pytest.approx(theirs["constant"], abs=1e-12)
    assert floors["prompt (leave-one-out)"] == pytest.approx(
        theirs["prompt (leave-one-out)"], abs=1e-12
    )
    assert floors["oracle"] == 0.0 and floors["half"] == pytest.approx(0.5)
    outcome = target[mask.bool()].mean().item()
    assert floors["V ≡ 0 (the untrained head)"] == pytest.approx(outcome)  # R ∈ {0, 1}
    assert int(mask.sum()) == sum(len(i.line) for i in items if i.example.terminal)
    with pytest.raises(ValueError, match="shape"):
        critic_alone.floor_errors(items, {"bad": lambda done: torch.zeros(1, 1)})
    sq = critic_alone.floor_errors(items, {"oracle": lambda done: target.clone()}, squared=True)
    assert sq["oracle"] == 0.0 and sq["V ≡ 0 (the untrained head)"] == pytest.approx(outcome)
    done = [i for i in items if i.example.terminal]
    rs = torch.tensor([i.example.reward for i in done], dtype=torch.float64)
    lengths = torch.tensor([len(i.line) for i in done], dtype=torch.float64)
    prompts = [i.prompt for i in done]
    loo = credit.leave_one_out_means(rs.tolist(), prompts)
    k = torch.tensor([prompts.count(p) for p in prompts], dtype=torch.float64)
    tokens = lengths.sum()
    assert sq["prompt (leave-one-out)"] == pytest.approx(
        float(((rs - loo) ** 2 * lengths).sum() / tokens)
    )
    shrink = torch.where(k > 1, (k - 1) / k, 1.0)
    assert sq["prompt value (unbiased)"] == pytest.approx(
        float(((rs - loo) ** 2 * shrink * lengths).sum() / tokens)
    )


def test_the_grid_freezes_the_policy_and_keeps_every_checkpoint():
    cfg = critic_alone.CriticConfig()
    run = critic_alone.CriticRun("r", {"value_lr": 3e-3}, steps=1000, budget=200)
    tc = critic_alone.train_config(cfg, run, "data")
    assert (tc.value_warmup_steps, tc.max_steps, tc.value_lr) == (999, 1000, 3e-3)
    assert (tc.batch_size, tc.beta, tc.policy_lr, tc.warmup_ratio) == (64, 0.1, 1e-4, 0.05)
    assert tc.keep_checkpoints >= 1000 // cfg.checkpoint_every
    live = critic_alone.CriticRun("live", {}, steps=50, frozen=False)
    assert critic_alone.train_config(cfg, live, "data").value_warmup_steps == 10
    assert critic_alone.eval_steps(cfg, run) == [25, 50, 100, 200]
    assert critic_alone.eval_steps(cfg, dataclasses.replace(run, steps=60, budget=None)) == [
        25, 50, 60,
    ]  # fmt: skip
    with pytest.raises(ValueError, match="multiples"):
        critic_alone.CriticConfig(eval_steps=(30,))
    with pytest.raises(ValueError, match="distinct"):
        critic_alone.CriticConfig(runs=(run, run))
    with pytest.raises(ValueError, match="budget"):
        critic_alone.CriticConfig(runs=(dataclasses.replace(run, budget=210),))
    with pytest.raises(ValueError, match="value_lr"):
        critic_alone.CriticConfig(runs=(critic_alone.CriticRun("x", {"value_lr": -1.0}),))


def test_the_head_starts_at_zero_unless_asked_and_is_restored():
    assert not ValueHead(8).proj.weight.any()
    with critic_alone.head_init("default"):
        assert ValueHead(8).proj.weight.abs().min() > 0
    assert not ValueHead(8).proj.weight.any()
    with critic_alone.head_init("zero"):
        assert not ValueHead(8).proj.weight.any()


def _payload():
    last = {"value_error": 0.30, "value_mse": 0.25, "token_blame": 0.5, "token_chance": 0.2,
            "step_blame": 0.4, "step_chance": 0.25, "critic_auc": 0.8}  # fmt: skip
    scores = {"25": {"value_error": 0.45, "value_mse": 0.19}, "50": last}
    train = {"value_lr": 1e-3, "lr_scheduler": "cosine", "warmup_ratio": 0.05,
             "value_warmup_steps": 49}  # fmt: skip
    run = {"steps": 50, "frozen": True, "head": "zero"}
    meta = {"prompts": 4, "num_samples": 2, "seed": 0, "test_problems": 3, "test_samples": 2,
            "finished": 6, "wrong": 3, "machine": "2-core CPU box", "torch": "2.x",
            "commit": "abc1234", "date": "2026-01-01"}  # fmt: skip
    runs = {"a": {"run": run, "train": train, "scores": scores, "train_s": 12.0,
                  "steps_trained": 50}}  # fmt: skip
    return {"meta": meta, "floors": {"constant": 0.49, "prompt (leave-one-out)": 0.36},
            "floors_mse": {"constant": 0.24, "prompt value (unbiased)": 0.2},
            "runs": runs}  # fmt: skip


def test_the_table_bolds_what_beats_the_prompt_floor_and_the_plot_draws_the_floors():
    md = critic_alone.table_markdown(_payload())
    row = next(line for line in md.splitlines() if line.startswith("| a | 0.001"))
    assert row.endswith("| 0.450 | **0.300** |")
    assert "constant **0.490**" in md and "abc1234" in md and "2-core CPU box" in md
    assert "| a | 50 | 0.300 | 50.0 | 20.0 | 40.0 | 25.0 | 0.800 | 50 | 12 |" in md
    fig = critic_alone.plot_curves(_payload())
    ax = fig.axes[0]
    floors = [ln for ln in ax.get_lines() if ln.get_label().startswith("floor")]
    assert sorted(ln.get_ydata()[0] for ln in floors) == [0.36, 0.49]
    assert any("abc1234" in t.get_text() for t in fig.texts)
    assert (
        "| a | 0.001 | cosine, warm-up 0.05, 50 steps | zero | frozen | **0.190** | 0.250 |" in md
    )
    right = [ln.get_ydata()[0] for ln in fig.axes[1].get_lines() if "floor" in ln.get_label()]
    assert sorted(right) == [0.2, 0.24]
    curve = next(ln for ln in ax.get_lines() if ln.get_label() == "a")
    assert list(curve.get_xdata()) == [25, 50]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("critic") / "study"
    assert main(["experiment", "critic-alone", "--smoke", "--out", str(out)]) == 0
    return out


def test_the_smoke_study_writes_its_three_files(smoke):
    payload = json.loads((smoke / "critic.json").read_text())
    cfg = critic_alone.CriticConfig(**critic_alone.SMOKE)
    assert sorted(payload["runs"]) == sorted(r.name for r in cfg.runs)  # (JSON sorts keys)
    for run in cfg.runs:
        got = payload["runs"][run.name]
        assert sorted(map(int, got["scores"])) == critic_alone.eval_steps(cfg, run)
        assert got["steps_trained"] == run.stop
    assert (smoke / "critic.png").stat().st_size > 0
    assert "prompt (leave-one-out)" in (smoke / "critic.md").read_text()


def test_a_rerun_trains_nothing_and_a_larger_budget_resumes(smoke, capsys):
    """A rerun finds every stop's checkpoint (no training time added); raising a budget
    continues the run from its checkpoint and keeps the scores it had."""
    before = json.loads((smoke / "critic.json").read_text())
    assert main(["experiment", "critic-alone", "--smoke", "--out", str(smoke)]) == 0
    again = json.loads((smoke / "critic.json").read_text())
    assert again["runs"] == before["runs"]
    assert all(r["train_s"] > 0 for r in again["runs"].values())
    before["runs"]["frozen"]["scores"]["2"]["value_error"] = -1.0  # a score kept is this one
    (smoke / "critic.json").write_text(json.dumps(before))
    base = critic_alone.CriticConfig(**critic_alone.SMOKE)
    longer = dataclasses.replace(base.runs[0], budget=None)
    payload = critic_alone.run_critic_study(
        dataclasses.replace(base, runs=(longer,)), str(smoke), log=lambda _: None
    )
    log = (smoke / "runs" / "frozen" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in log] == [1, 2, 3, 4]
    got = payload["runs"]["frozen"]
    assert sorted(got["scores"], key=int) == ["2", "4"] and got["steps_trained"] == 4
    assert got["scores"]["2"]["value_error"] == -1.0  # kept, not redone
    assert got["train_s"] > before["runs"]["frozen"]["train_s"]  # both invocations counted


def test_critic_alone_refuses_the_claims_flags(tmp_path, capsys):
    code = main(["experiment", "critic-alone", "--workers", "2", "--out", str(tmp_path / "o")])
    assert code == 2 and "toy-claims only" in capsys.readouterr().err
