"""The toy-claims experiment: row selections, tuning choice and aggregation by hand, the
negatives-only fixed point, and the whole experiment at smoke size through the CLI."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

import pytest
import torch

from dqo_tutorial.claims import (
    SMOKE,
    VARIANTS,
    ClaimsConfig,
    choose_learning_rates,
    results_table,
    select_rows,
    summarize_runs,
)
from dqo_tutorial.kernels import dqo_loss

# prompt 0: 2 correct, 3 wrong; prompt 1: 0 correct, 2 wrong; prompt 2: 4 correct, 1 wrong
ROWS = [
    {"prompt_index": p, "reward": r, "terminal": True}
    for p, r in [
        (0, 1.0), (0, 0.0), (0, 1.0), (0, 0.0), (0, 0.0),
        (1, 0.0), (1, 0.0),
        (2, 1.0), (2, 1.0), (2, 0.0), (2, 1.0), (2, 1.0),
    ]
]  # fmt: skip
POSITIVES = [0, 2, 7, 8, 10, 11]
NEGATIVES = [1, 3, 4, 5, 6, 9]


def test_select_rows_all_and_negatives_only():
    assert select_rows(ROWS, "all", seed=0) == list(range(12))
    assert select_rows(ROWS, "negatives_only", seed=0) == NEGATIVES
    with pytest.raises(ValueError, match="unknown row selection"):
        select_rows(ROWS, "positives_only", seed=0)


def test_few_positives_keeps_every_negative_and_a_seeded_share_of_positives():
    for keep, expected in ((0.5, 3), (0.34, 2), (0.1, 1)):  # round(keep × 6)
        picked = select_rows(ROWS, "few_positives", seed=3, positive_keep=keep)
        assert set(NEGATIVES) <= set(picked) and picked == sorted(picked)
        kept = set(picked) - set(NEGATIVES)
        assert kept <= set(POSITIVES) and len(kept) == expected
    draws = {tuple(select_rows(ROWS, "few_positives", seed=s, positive_keep=0.5)) for s in range(8)}
    assert len(draws) > 1  # the seed matters …
    assert select_rows(ROWS, "few_positives", seed=5, positive_keep=0.5) == select_rows(
        ROWS, "few_positives", seed=5, positive_keep=0.5
    )  # … and fixes the draw


def test_dpo_responses_are_the_rows_of_dpo_pairs():
    picked = select_rows(ROWS, "dpo_responses", seed=0, pairs_per_prompt=4)
    # per prompt min(correct, wrong) pairs: 2 from prompt 0, none from 1, 1 from 2
    by_prompt = [sum(ROWS[i]["prompt_index"] == p for i in picked) for p in range(3)]
    assert by_prompt == [4, 0, 2]
    assert sum(ROWS[i]["reward"] for i in picked) == 3  # half correct, half wrong
    capped = select_rows(ROWS, "dpo_responses", seed=0, pairs_per_prompt=1)
    assert [sum(ROWS[i]["prompt_index"] == p for i in capped) for p in range(3)] == [2, 0, 2]


def test_choose_learning_rates_best_dev_ties_to_the_smaller_rate():
    tuning = [
        {"method": "dqo", "policy_lr": 3e-4, "dev": 0.6},
        {"method": "dqo", "policy_lr": 1e-4, "dev": 0.6},  # tie: the smaller rate wins
        {"method": "dqo", "policy_lr": 3e-5, "dev": 0.5},
        {"method": "dpo", "policy_lr": 1e-4, "dev": None},  # could not train
        {"method": "dpo", "policy_lr": 3e-4, "dev": 0.2},
        {"method": "rft", "policy_lr": 3e-4, "dev": None},
        {"method": "rft", "policy_lr": 1e-4, "dev": None},
    ]
    assert choose_learning_rates(tuning) == {"dqo": 1e-4, "dpo": 3e-4, "rft": 1e-4}


def _run(variant, seed, greedy, sampling, responses=100, group="baselines"):
    return {
        "variant": variant,
        "group": group,
        "method": "dqo",
        "seed": seed,
        "data": {"responses": responses},
        "test": {"greedy": greedy, "sampling": sampling},
    }


def test_summarize_runs_mean_and_sample_std_over_seeds():
    runs = [
        _run("DQO", 0, 0.5, 0.40),
        _run("DQO", 1, 0.6, 0.45),
        _run("DQO", 2, 0.7, 0.50),
        {"variant": "DPO, negatives only", "group": "imbalance", "method": "dpo", "seed": 0,
         "data": {"responses": 7}, "skipped": "0 dpo examples do not fill one step of 64"},
    ]  # fmt: skip
    runs += [_run("DRO", 0, 0.55, 0.5), _run("DRO", 1, 0.75, 0.5), _run("DRO", 2, 0.8, 0.5)]
    summary = summarize_runs(runs)
    dqo = summary["DQO"]
    # paired by seed: DRO − DQO = 0.05, 0.15, 0.10 → mean 0.10, std 0.05 (unpaired std: 0.13)
    assert summary["DRO"]["paired"]["against"] == "DQO"
    assert summary["DRO"]["paired"]["greedy"]["mean"] == pytest.approx(0.10)
    assert summary["DRO"]["paired"]["greedy"]["std"] == pytest.approx(0.05)
    assert "paired" not in dqo
    assert dqo["greedy"]["mean"] == pytest.approx(0.6)
    assert dqo["greedy"]["std"] == pytest.approx(0.1)  # sample std (ddof = 1), by hand
    assert dqo["sampling"]["std"] == pytest.approx(statistics.stdev([0.40, 0.45, 0.50]))
    assert dqo["greedy"]["n_seeds"] == 3 and dqo["responses"]["mean"] == 100
    assert summary["DPO, negatives only"]["skipped"] == [
        "0 dpo examples do not fill one step of 64"
    ]
    table = results_table(summary)
    assert "| baselines | DQO | 60.0 ± 10.0 | 45.0 ± 5.0 | – | 3 | 100 |" in table
    assert "| baselines | DRO | 70.0 ± 13.2 | 50.0 ± 0.0 | +10.0 ± 5.0 | 3 | 100 |" in table
    assert "skipped (1 seed): 0 dpo examples" in table


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="ClaimsConfig.variants: unknown"):
        ClaimsConfig(variants=("DQO", "PPO"))
    with pytest.raises(ValueError, match="policy_lr"):
        ClaimsConfig(train={"policy_lr": 1e-3})  # tuned, not set
    with pytest.raises(ValueError, match="TrainConfig.lam"):
        ClaimsConfig(train={"lam": 2.0})
    with pytest.raises(ValueError, match="seeds"):
        ClaimsConfig(seeds=(1, 1))
    with pytest.raises(ValueError, match="knob_grid"):
        ClaimsConfig(knob_grid={"dqo": ({"betta": 0.3},)})
    names = [v.name for v in VARIANTS]
    assert len(names) == len(set(names))
    default = ClaimsConfig()
    assert len(default.seeds) >= 3  # the issue asks for at least three
    groups = {v.group for v in default.selected}
    assert groups == {"baselines", "importance sampling", "λ-return", "process rewards",
                      "imbalance", "data size"}  # fmt: skip


def test_dqo_is_at_a_fixed_point_on_negatives_only_data():
    """Why "DQO, negatives only" cannot move: with every reward 0, V_φ = 0 and π_θ = π_ref = μ,
    every residual δ is 0 — the loss is at its minimum and both gradients vanish."""
    gen = torch.Generator().manual_seed(0)
    mask = torch.tensor([[0, 1, 1, 1, 0], [0, 0, 1, 1, 1]], dtype=torch.bool)
    ref = torch.where(mask, -3 * torch.rand(2, 5, generator=gen, dtype=torch.float64), 0.0)
    logps = ref.clone().requires_grad_(True)
    values = torch.zeros(2, 5, dtype=torch.float64, requires_grad=True)
    rewards = torch.zeros(2, 5, dtype=torch.float64)

    def losses(lam: float = 1.0):
        pl, vl, _ = dqo_loss(
            logps,
            ref,
            values,
            rewards,
            mask,
            beta=0.1,
            lam=lam,
            behavior_logps=ref,
            bootstrap=torch.zeros(2, dtype=torch.float64),
        )
        return pl, vl

    for lam in (0.0, 0.95, 1.0):
        pl, vl = losses(lam)
        grads = torch.autograd.grad(pl + vl, (logps, values))
        assert float(pl.detach()) == 0.0 and float(vl.detach()) == 0.0
        assert all(float(g.abs().max()) == 0.0 for g in grads)
    # one correct response breaks the fixed point: its tokens get a push up
    rewards[1, 4] = 1.0
    pl, vl = losses()
    (g_logps,) = torch.autograd.grad(pl, logps)
    assert (g_logps[1, 2:] < 0).all()  # gradient descent raises log π of the correct tokens


def test_smoke_experiment_through_the_cli(tmp_path):
    """`dqo-tutorial experiment toy-claims --smoke`: every stage, every default variant."""
    out = tmp_path / "claims"
    cmd = [sys.executable, "-m", "dqo_tutorial.cli", "experiment", "toy-claims", "--smoke",
           "--out", str(out)]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    print(f"smoke experiment: {time.perf_counter() - start:.0f} s")
    payload = json.loads((out / "results.json").read_text())
    seeds, default = SMOKE["seeds"], ClaimsConfig().variants
    assert [(r["variant"], r["seed"]) for r in payload["runs"]] == [
        (v, s) for s in seeds for v in default
    ]
    assert len(payload["tuning"]) == 5 * len(SMOKE["policy_lrs"])  # same budget per method
    assert set(payload["chosen_policy_lr"]) == {"sft", "rft", "dpo", "dro", "dqo"}
    summary = payload["summary"]
    # DPO and RFT have nothing to learn from wrong answers only: skipped, with the reason
    for name in ("DPO, negatives only", "RFT, negatives only"):
        assert "do not fill one step" in summary[name]["skipped"][0]
    for name in ("DQO", "DQO, λ=0", "DQO, α=0.5 MC Φ", "DQO, negatives only"):
        assert summary[name]["greedy"]["n_seeds"] == len(seeds)
    dqo_run = next(r for r in payload["runs"] if r["variant"] == "DQO")
    assert dqo_run["test"]["n"] == {"greedy": 16, "sampling": 32}
    assert dqo_run["curve"] and dqo_run["curve"][-1][0] == 3  # probed after the last step
    for r in payload["runs"]:
        if r["variant"] == "DQO on DPO's responses":
            assert r["data"]["responses"] == 2 * r["data"]["positives"]  # pairs: one of each
    for name in ("accuracy.png", "lambda.png", "curves.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| baselines | DQO |" in (out / "results.md").read_text()

    # a rerun finds every run done: same numbers, seconds instead of a minute
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    rerun = json.loads((out / "results.json").read_text())
    assert rerun["summary"] == summary


def test_schedule_runs_dependents_after_their_dependencies():
    import operator

    from dqo_tutorial.claims import _Job, _schedule

    jobs = [
        _Job("a", 1, (), lambda d: (operator.add, (1, 1))),
        _Job("b", 5, ("a",), lambda d: (operator.mul, (d["a"], 10))),  # needs a's result
        _Job("c", 9, (), lambda d: (operator.sub, (7, 2))),
        _Job("d", 1, ("b", "c"), lambda d: (operator.add, (d["b"], d["c"]))),
    ]
    said: list[str] = []
    done = _schedule(jobs, 2, said.append)
    assert done == {"a": 2, "b": 20, "c": 5, "d": 25}
    assert said[-1] == "4/4 d"
    with pytest.raises(RuntimeError, match="unmet dependencies"):
        _schedule([_Job("x", 1, ("missing",), lambda d: (operator.neg, (1,)))], 1, said.append)


def test_a_cut_response_graded_correct_is_not_a_positive():
    rows = [*ROWS, {"prompt_index": 1, "reward": 1.0, "terminal": False}]  # row 12: cut
    assert 12 in select_rows(rows, "negatives_only", seed=0)
    assert 12 in select_rows(rows, "few_positives", seed=0, positive_keep=0.0)
