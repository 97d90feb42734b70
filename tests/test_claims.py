"""The toy-claims experiment: row selections, tuning choice and aggregation by hand, the
negatives-only fixed point, and the whole experiment at smoke size through the CLI."""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import subprocess
import sys
import time

import pytest
import torch

from dqo_tutorial.experiments.config import SMOKE, ClaimsConfig, choose_budgets, select_rows
from dqo_tutorial.experiments.stats import (
    _t_quantile,
    paired_interval,
    paired_variance,
    summarize_runs,
)
from dqo_tutorial.experiments.sweeps import sweep_points, sweep_table
from dqo_tutorial.experiments.tables import budget_table, results_table
from dqo_tutorial.experiments.variants import VARIANTS, expand_variants
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


def test_choose_budgets_best_dev_ties_to_the_cheaper_trial():
    tuning = [
        {"method": "dqo", "policy_lr": 3e-4, "epochs": 1, "dev": 0.6},
        {"method": "dqo", "policy_lr": 1e-4, "epochs": 2, "dev": 0.6},  # tie: fewer epochs win
        {"method": "dqo", "policy_lr": 1e-4, "epochs": 4, "dev": 0.5},
        {"method": "sft", "policy_lr": 3e-4, "epochs": 4, "dev": 0.7},
        {"method": "sft", "policy_lr": 1e-4, "epochs": 4, "dev": 0.7},  # tie: the smaller rate
        {"method": "sft", "policy_lr": 1e-4, "epochs": 1, "dev": 0.65},
        {"method": "dpo", "policy_lr": 1e-4, "epochs": 1, "dev": None},  # could not train
        {"method": "dpo", "policy_lr": 3e-4, "epochs": 2, "dev": 0.2},
        {"method": "rft", "policy_lr": 3e-4, "epochs": 1, "dev": None},
        {"method": "rft", "policy_lr": 1e-4, "epochs": 2, "dev": None},
    ]
    assert choose_budgets(tuning) == {
        "dqo": {"policy_lr": 3e-4, "epochs": 1},
        "sft": {"policy_lr": 1e-4, "epochs": 4},
        "dpo": {"policy_lr": 3e-4, "epochs": 2},
        "rft": {"policy_lr": 3e-4, "epochs": 1},  # every trial failed: the cheapest
    }


def test_paired_variance_components_by_hand():
    import numpy as np

    # S = 2 seeds × N = 3 problems. Seed means 1, 3; problem means 3, 0, 3; grand mean 2.
    # MS_seed = 3·(1 + 1)/1 = 6, MS_problem = 2·(1 + 4 + 1)/2 = 6, residuals ±1 on 4 cells →
    # MS_resid = 4/2 = 2. Var(mean) = (6 + 6 − 2)/6 = 5/3; Satterthwaite
    # df = 10²/(6²/1 + 6²/2 + 2²/2) = 100/56.
    got = paired_variance(np.array([[2.0, 0.0, 1.0], [4.0, 0.0, 5.0]]))
    want = {"mean": 2.0, "ms_seed": 6.0, "ms_problem": 6.0, "ms_resid": 2.0, "var": 5 / 3,
            "df": 100 / 56}  # fmt: skip
    assert {k: float(got[k]) for k in want} == pytest.approx(want)
    # seed means 0, 2; every problem mean 1, so MS_problem = 0 < MS_resid = 4/2 (residuals ±1
    # on 4 cells): the problem component is floored at 0 and Var = MS_seed/(SN) = 6/6 on
    # S − 1 = 1 df (unfloored it would be (6 + 0 − 2)/6)
    got = paired_variance(np.array([[0.0, 1.0, -1.0], [2.0, 1.0, 3.0]]))
    assert float(got["ms_problem"]) == 0.0 and float(got["ms_resid"]) == pytest.approx(2.0)
    assert float(got["var"]) == pytest.approx(1.0) and float(got["df"]) == pytest.approx(1.0)
    # every seed mean 4/3 (MS_seed = 0); problem means ½, ½, 3: MS_problem = 25/6; residuals
    # ±½ on 4 cells: MS_resid = ½. Var = (0 + 25/6 − ½)/6 = 11/18; the df count the seed term
    # at MS_resid: (½ + 11/3)²/(¼/1 + (25/6)²/2 + ¼/2) = 625/326
    got = paired_variance(np.array([[1.0, 0.0, 3.0], [0.0, 1.0, 3.0]]))
    assert float(got["ms_seed"]) == pytest.approx(0.0, abs=1e-15)
    assert (float(got["ms_problem"]), float(got["ms_resid"])) == pytest.approx((25 / 6, 0.5))
    assert (float(got["var"]), float(got["df"])) == pytest.approx((11 / 18, 625 / 326))
    # S = N = 2 (one residual degree of freedom): seed means 1.5, 0.5 → MS_seed = 1; problem
    # means 2, 0 → MS_problem = 4; residuals ±½ → MS_resid = 1. Var = (1 + 4 − 1)/4 = 1;
    # df = 4²/(1²/1 + 4²/1 + 1²/1) = 8/9 (a mutant `f_E ≥ 2` gave 16/17.5)
    got = paired_variance(np.array([[3.0, 0.0], [1.0, 0.0]]))
    assert (float(got["ms_seed"]), float(got["ms_problem"]), float(got["ms_resid"])) == (
        pytest.approx((1.0, 4.0, 1.0)))  # fmt: skip
    assert (float(got["var"]), float(got["df"])) == pytest.approx((1.0, 8 / 9))
    # a constant difference has no spread
    assert paired_interval([[0.5] * 7] * 3, [[0.25] * 7] * 3) == pytest.approx([0.25, 0.25])
    # one seed: a paired t over problems. d = (1, 0, 0, 1): s² = 1/3, Var = 1/12 on 3 df
    got = paired_variance(np.array([[1.0, 0.0, 0.0, 1.0]]))
    assert (float(got["var"]), float(got["df"])) == pytest.approx((1 / 12, 3.0))
    # one problem: the same over seeds
    got = paired_variance(np.array([[1.0], [0.0], [0.0], [1.0]]))
    assert (float(got["var"]), float(got["df"])) == pytest.approx((1 / 12, 3.0))
    # arrays of studies: each study on its own
    many = paired_variance(np.array([[[2.0, 0.0, 1.0], [4.0, 0.0, 5.0]]] * 3))
    assert many["var"].shape == (3,) and np.allclose(many["var"], 5 / 3)
    for bad in ([], [[]], [[0.5]]):
        with pytest.raises(ValueError, match="paired_interval"):
            paired_interval(bad, bad)
    with pytest.raises(ValueError, match="same shape"):
        paired_interval([[1.0, 0.0]], [[1.0, 0.0, 1.0]])
    # the level is a probability strictly inside (0, 1): 1 would be an infinite interval
    # (mutants `level <= 1` and `level < 2` survived without these)
    for level in (0.0, 1.0, 1.5, -0.5):
        with pytest.raises(ValueError, match="level"):
            paired_interval([[1.0, 0.0], [0.0, 1.0]], [[0.0, 0.0], [1.0, 1.0]], level=level)


def test_t_quantile_against_closed_forms():
    from statistics import NormalDist

    for p in (0.9, 0.975, 0.995):
        assert _t_quantile(p, 1.0) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9)
        exact = (2 * p - 1) / math.sqrt(2 * p * (1 - p))  # df = 2
        assert _t_quantile(p, 2.0) == pytest.approx(exact, rel=1e-9)
        assert _t_quantile(p, 1e7) == pytest.approx(NormalDist().inv_cdf(p), rel=1e-6)
    # printed tables (Student's t, two-sided 95 %): 4 df 2.776445, 10 df 2.228139, 30 df 2.042272
    for df, table in ((4, 2.776445), (10, 2.228139), (30, 2.042272), (120, 1.979930)):
        assert _t_quantile(0.975, float(df)) == pytest.approx(table, abs=2e-6)


# logit-scale standard deviations of A − B's seed effect and per-problem effect, per regime
REGIMES = {"problems dominate": (0.0, 1.5), "seeds dominate": (0.5, 0.0), "both": (0.2, 1.0)}
SHIFT = 0.3  # A's advantage on the logit scale
DIFFICULTY, DATA = 1.5, 0.5  # sd of the shared problem difficulty and the shared seed effect


def simulate_studies(rng, regime, studies, seeds, problems):
    """Binary hits of A and B on the same seeds and problems, per study (a fresh draw of seeds
    and of problems each): logit P(hit) = η_p + c_s ± (SHIFT + u_s + γ_p)/2 (+ for A)."""
    import numpy as np

    sd_seed, sd_problem = REGIMES[regime]
    f32 = np.float32
    eta = rng.normal(0, DIFFICULTY, (studies, 1, problems)).astype(f32)
    eta = eta + rng.normal(0, DATA, (studies, seeds, 1)).astype(f32)
    w = SHIFT + rng.normal(0, sd_seed, (studies, seeds, 1)).astype(f32)
    w = w + rng.normal(0, sd_problem, (studies, 1, problems)).astype(f32)
    p_a, p_b = 1 / (1 + np.exp(-(eta + w / 2))), 1 / (1 + np.exp(-(eta - w / 2)))
    a = rng.random(p_a.shape, dtype=f32) < p_a
    return a.astype(f32), (rng.random(p_b.shape, dtype=f32) < p_b).astype(f32)


def true_difference(regime):
    """E[σ(η + w/2) − σ(η − w/2)] over η ~ N(0, DIFFICULTY² + DATA²) and w ~ N(SHIFT,
    sd_seed² + sd_problem²), by Gauss–Hermite quadrature (120 × 120 nodes)."""
    import numpy as np

    x, wt = np.polynomial.hermite_e.hermegauss(120)
    wt = wt / wt.sum()
    sd_w = math.hypot(*REGIMES[regime])
    eta = math.hypot(DIFFICULTY, DATA) * x[:, None]
    w = SHIFT + sd_w * x[None, :]
    diff = 1 / (1 + np.exp(-(eta + w / 2))) - 1 / (1 + np.exp(-(eta - w / 2)))
    return float(wt @ diff @ wt)


@pytest.mark.parametrize("seeds", [5, 3])
@pytest.mark.parametrize("regime", list(REGIMES))
def test_paired_interval_covers_the_true_difference_95_percent_of_the_time(regime, seeds):
    """5,000 simulated studies per regime (seeds × 300 problems, binary hits, a known true
    difference): the 95 % interval contains it in 93–97 % of them."""
    import numpy as np

    rng = np.random.default_rng([seeds, list(REGIMES).index(regime)])
    a, b = simulate_studies(rng, regime, 5000, seeds, 300)
    est = paired_variance(a - b)
    half = _t_quantile(0.975, est["df"]) * np.sqrt(est["var"])
    coverage = float(np.mean(np.abs(est["mean"] - true_difference(regime)) <= half))
    print(f"{regime}, {seeds} seeds: coverage {coverage:.3f}")
    assert 0.93 <= coverage <= 0.97, coverage
    # the one-study interval is the same computation
    low, high = paired_interval(a[0].tolist(), b[0].tolist())
    assert (low + high) / 2 == pytest.approx(float(est["mean"][0]))
    assert (high - low) / 2 == pytest.approx(float(half[0]))


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
    assert "| baselines | DQO | 60.0 ± 10.0 | 45.0 ± 5.0 | – | – | 3 | 100 |" in table
    # the sign counts: greedy DRO − DQO > 0 on all 3 seeds; sampling 0.1, 0.05 and a tie (0)
    sampling = summary["DRO"]["paired"]["sampling"]
    assert (sampling["seeds_above_0"], sampling["seeds_below_0"]) == (2, 0)
    assert (
        "| baselines | DRO | 70.0 ± 13.2 | 50.0 ± 0.0 | +10.0 ± 5.0 (3/3 > 0) "
        "| +5.0 ± 5.0 (2/3 > 0) | 3 | 100 |" in table
    )
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
    with pytest.raises(ValueError, match="sweep_seeds"):
        ClaimsConfig(seeds=(0, 1), sweep_seeds=(2,))
    with pytest.raises(ValueError, match="epoch_grid"):
        ClaimsConfig(epoch_grid=(0, 1))
    with pytest.raises(ValueError, match="epochs"):
        ClaimsConfig(train={"epochs": 2})  # tuned, not set
    default = ClaimsConfig()
    assert len(default.seeds) == 5  # the main comparison: five seeds
    assert {v.group for v in default.selected} == {"baselines"}
    assert len(default.policy_lrs) * len(default.epoch_grid) == 6  # trials per method


def test_variant_sets_are_the_baselines_plus_their_groups():
    baselines = [v.name for v in VARIANTS if v.group == "baselines"]
    horizon = expand_variants(["horizon"])
    assert list(horizon[:6]) == baselines
    assert [n for n in horizon[6:] if n.startswith("DQO, ")] == [
        "DQO, 2 ops", "DQO, α=0.5 exact Φ, 2 ops", "DQO, 4 ops", "DQO, α=0.5 exact Φ, 4 ops",
        "DQO, 6 ops", "DQO, α=0.5 exact Φ, 6 ops", "DQO, 8 ops", "DQO, α=0.5 exact Φ, 8 ops",
    ]  # fmt: skip
    ablations = {v.group for v in ClaimsConfig(variants=expand_variants(["ablations"])).selected}
    assert ablations == {"baselines", "importance sampling", "λ-return", "process rewards",
                         "imbalance", "data size"}  # fmt: skip
    assert expand_variants(["DQO", "DRO", ""]) == ("DQO", "DRO")
    both = expand_variants(["critic", "data-size sweep"])
    assert both[:6] == tuple(baselines) and len(both) == 6 + 3 + 6
    assert both[6:9] == tuple(n for n in both if "data ×0.25" in n)  # VARIANTS order
    assert len(expand_variants(["all"])) == len(VARIANTS)
    by = {v.name: v for v in VARIANTS}
    assert by["DRO, 6 ops"].task == "toy-6ops" and by["DRO, 6 ops"].anchor == "DQO, 6 ops"
    assert by["RFT, data ×4"].anchor == "DQO, data ×4" and by["DQO, critic +4 layers"].sweep
    assert by["DQO, λ=0.95"].anchor == "DQO" and by["DQO, λ=0.95"].task == "toy"


def _hits(greedy, sampling, samples=2):
    return {"greedy": greedy, "sampling": sampling, "samples": samples}


def test_sweeps_pair_each_point_with_its_own_dqo_and_flip_the_sign():
    def run(variant, group, seed, acc, hits, **kw):
        method = variant.split(",")[0].lower()
        anchor = kw.pop("anchor", "DQO")
        return {"variant": variant, "group": group, "method": method, "anchor": anchor,
                "seed": seed, "data": {"responses": 8}, **kw,
                "test": {"greedy": acc, "sampling": acc, "hits": hits}}  # fmt: skip

    big = {"prompts": 1600, "anchor": "DQO, data ×4"}
    runs = [
        # 2 ops: DQO 3/4 and 2/4 right on seeds 0, 1; DRO 1/4 and 2/4
        run("DQO, 2 ops", "horizon", 0, 0.75, _hits("1110", "2210"), ops=2, anchor="DQO, 2 ops"),
        run("DQO, 2 ops", "horizon", 1, 0.5, _hits("1100", "2200"), ops=2, anchor="DQO, 2 ops"),
        run("DRO, 2 ops", "horizon", 0, 0.25, _hits("1000", "2000"), ops=2, anchor="DQO, 2 ops"),
        run("DRO, 2 ops", "horizon", 1, 0.5, _hits("0110", "2200"), ops=2, anchor="DQO, 2 ops"),
        # the data-size sweep's middle point is the baselines at the sweep's seeds (0 only)
        run("DQO", "baselines", 0, 0.5, _hits("1100", "1100"), prompts=400),
        run("DQO", "baselines", 1, 0.9, _hits("1111", "1111"), prompts=400),  # not a sweep seed
        run("DRO", "baselines", 0, 0.25, _hits("1000", "1000"), prompts=400),
        run("DQO, data ×4", "data-size sweep", 0, 1.0, _hits("1111", "2222"), **big),
        run("DRO, data ×4", "data-size sweep", 0, 0.5, _hits("1100", "2200"), **big),
    ]
    summary = summarize_runs(runs)
    # DRO − DQO at 2 ops: −0.5 and 0 on the two seeds → mean −0.25
    assert summary["DRO, 2 ops"]["paired"]["against"] == "DQO, 2 ops"
    assert summary["DRO, 2 ops"]["paired"]["greedy"]["mean"] == pytest.approx(-0.25)
    horizon = sweep_points(runs, "horizon")
    assert list(horizon) == [2] and horizon[2]["DRO"]["paired"]["greedy"]["mean"] == -0.25
    sizes = sweep_points(runs, "data-size sweep")
    assert list(sizes) == [400, 1600]
    assert sizes[400]["DQO"]["greedy"]["n_seeds"] == 1  # seed 1 is not a sweep seed
    assert sizes[1600]["DRO"]["paired"]["greedy"]["mean"] == pytest.approx(-0.5)
    table = sweep_table(summary, runs, "horizon")
    # DQO − DRO = +25 points; d = (0,1,1,0) on seed 0 and (1,0,−1,0) on seed 1: seed means ½,
    # 0 → MS_seed = 4·(¼² + ¼²) = ½; problem means ½, ½, 0, 0 → MS_problem = 2·4·¼²/3 = 1/6;
    # residuals ±¾ (4 cells), ±¼ (4) → MS_resid = 2.5/3 = 5/6. Var = (½ + 0)/8 = 1/16, the df
    # count the seed term at MS_resid: ν = 1, t = tan(0.475π) = 12.706: 25 ± 12.706 · 25
    row = "| 2 | – | – | 37.5 ± 17.7 | 62.5 ± 17.7 | – "
    row += "| +25.0 ± 35.4 [-292.7, +342.7] (1/2 > 0) | – |"
    assert row in table
    assert sweep_table(summary, [r for r in runs if r["group"] != "horizon"], "horizon") == ""
    # one seed on one problem: a difference, its sign, no interval
    one = [run(v, "baselines", 0, float(g), _hits(g, "2")) for v, g in (("DQO", "0"), ("DRO", "1"))]
    paired = summarize_runs(one)["DRO"]["paired"]["greedy"]
    assert paired["mean"] == 1.0 and paired["seeds_above_0"] == 1 and "ci95" not in paired


def test_budget_table_puts_cost_next_to_accuracy():
    dev = {(1e-4, 1): 0.5, (3e-4, 1): 0.6, (1e-4, 2): 0.55, (3e-4, 2): None}
    tuning = [
        {"method": "dqo", "policy_lr": lr, "epochs": e, "dev": d} for (lr, e), d in dev.items()
    ]
    runs = [
        {"group": "baselines", "method": "dqo", "test": {"greedy": g, "sampling": 0.5},
         "train": {"steps": 50, "tokens": t, "wall_s": w}}
        for g, t, w in ((0.7, 150_000, 40.0), (0.8, 170_000, 50.0))
    ]  # fmt: skip
    table = budget_table(tuning, choose_budgets(tuning), runs)
    assert "| dqo | 50.0 | **60.0** | 55.0 | – | 0.0003 × 1 |" in table
    assert "| dqo | 0.0003 × 1 | 50 | 160 k | 45 | 75.0 ± 7.1 | 50.0 ± 0.0 |" in table


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


SMOKE_VARIANTS = (
    "DQO, λ=0.95", "DQO, α=0.5 MC Φ", "RFT, negatives only", "DPO, negatives only",
    "DQO, negatives only", "DQO on DPO's responses",  # the ablations' row selections and Φ
    "π_ref, 8 ops", "DRO, 2 ops", "DQO, 2 ops", "DQO, α=0.5 exact Φ, 8 ops", "DQO, 8 ops",
    "DQO, data ×0.25", "DRO, data ×4", "DQO, data ×4",
    "DQO, critic +4 layers", "DQO, critic head 512 wide", "DQO, value warm-up ×2",
)  # fmt: skip


def test_smoke_experiment_through_the_cli(tmp_path):
    """`dqo-tutorial experiment toy-claims --smoke`: every stage — lr × epochs tuning, the
    baselines, the ablations' row selections and Monte-Carlo Φ, the mixed-length π_ref and
    the horizon sweep, the data-size sweep, the bigger critics — then a rerun that resumes."""
    out = tmp_path / "claims"
    names = [v.name for v in VARIANTS if v.group == "baselines"] + list(SMOKE_VARIANTS)
    cmd = [sys.executable, "-m", "dqo_tutorial.cli", "experiment", "toy-claims", "--smoke",
           "--out", str(out), "--variants", ";".join(names)]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    print(f"smoke experiment: {time.perf_counter() - start:.0f} s")
    payload = json.loads((out / "results.json").read_text())
    seeds, sweep = SMOKE["seeds"], SMOKE["sweep_seeds"]
    by = {v.name: v for v in VARIANTS}
    expected = sorted(
        ((v, s) for v in names for s in (sweep if by[v].sweep else seeds)),
        key=lambda vs: (vs[1], names.index(vs[0])),
    )
    assert [(r["variant"], r["seed"]) for r in payload["runs"]] == expected
    trials = len(SMOKE["policy_lrs"]) * len(SMOKE["epoch_grid"])
    assert len(payload["tuning"]) == 5 * trials  # the same budget for every method
    assert {(t["policy_lr"], t["epochs"]) for t in payload["tuning"] if t["method"] == "dqo"} == {
        (lr, e) for lr in SMOKE["policy_lrs"] for e in SMOKE["epoch_grid"]
    }
    assert set(payload["chosen"]) == {"sft", "rft", "dpo", "dro", "dqo"}
    summary = payload["summary"]
    for name in ("DPO, negatives only", "RFT, negatives only"):
        assert "do not fill one step" in summary[name]["skipped"][0]
    for name in ("DQO", "DQO, λ=0.95", "DQO, α=0.5 MC Φ", "DQO, negatives only"):
        assert summary[name]["greedy"]["n_seeds"] == len(seeds)
    dqo = summary["DRO"]["paired"]["greedy"]
    assert dqo["ci95"][0] <= dqo["mean"] <= dqo["ci95"][1]  # the bootstrap interval is there
    runs = {(r["variant"], r["seed"]): r for r in payload["runs"]}
    dqo_run = runs["DQO", 0]
    assert dqo_run["test"]["n"] == {"greedy": 16, "sampling": 32}
    assert len(dqo_run["test"]["hits"]["greedy"]) == 16 and dqo_run["train"]["tokens"] > 0
    assert dqo_run["curve"] and dqo_run["curve"][-1][0] == 3  # probed after the last step
    assert (
        runs["DQO on DPO's responses", 0]["data"]["responses"]
        == 2 * runs["DQO on DPO's responses", 0]["data"]["positives"]
    )  # pairs: one of each
    # the horizon sweep: its own task and π_ref, its own test size; the data sizes scale
    assert runs["DQO, 8 ops", 0]["test"]["n"]["greedy"] == SMOKE["horizon_test_problems"]
    assert runs["DQO, 8 ops", 0]["prompts"] == SMOKE["horizon_prompts"]
    assert summary["DRO, 2 ops"]["paired"]["against"] == "DQO, 2 ops"
    assert runs["DQO, data ×4", 0]["data"]["responses"] == 4 * 16 * SMOKE["num_samples"]
    assert payload["mixed_reference"]["steps"] == 2
    data = payload["data"]
    assert {d["task"] for d in data.values()} == {"toy", "toy-2ops", "toy-8ops"}
    assert {d["task"]: d["reference"] for d in data.values()} == {
        "toy": "shipped", "toy-2ops": "π_ref mixed", "toy-8ops": "π_ref mixed"}  # fmt: skip
    for name in ("accuracy.png", "lambda.png", "curves.png", "horizon.png", "data-size-sweep.png"):
        # (lambda.png: the selection has a λ variant)
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (out / "results.md").read_text()
    assert "| baselines | DQO |" in text and "| operations |" in text and "| dqo |" in text

    # a rerun finds every run done: same numbers, seconds instead of a minute
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    rerun = json.loads((out / "results.json").read_text())
    assert rerun["summary"] == summary


def test_schedule_runs_dependents_after_their_dependencies():
    import operator

    from dqo_tutorial.experiments.jobs import Job, schedule

    jobs = [
        Job("a", 1, (), lambda d: (operator.add, (1, 1))),
        Job("b", 5, ("a",), lambda d: (operator.mul, (d["a"], 10))),  # needs a's result
        Job("c", 9, (), lambda d: (operator.sub, (7, 2))),
        Job("d", 1, ("b", "c"), lambda d: (operator.add, (d["b"], d["c"]))),
    ]
    said: list[str] = []
    done = schedule(jobs, 2, said.append)
    assert done == {"a": 2, "b": 20, "c": 5, "d": 25}
    assert said[-1] == "4/4 d"
    with pytest.raises(RuntimeError, match="unmet dependencies"):
        schedule([Job("x", 1, ("missing",), lambda d: (operator.neg, (1,)))], 1, said.append)


def test_a_cut_response_graded_correct_is_not_a_positive():
    rows = [*ROWS, {"prompt_index": 1, "reward": 1.0, "terminal": False}]  # row 12: cut
    assert 12 in select_rows(rows, "negatives_only", seed=0)
    assert 12 in select_rows(rows, "few_positives", seed=0, positive_keep=0.0)


def test_resummarize_recomputes_the_summary_from_the_stored_runs(tmp_path, capsys):
    """`experiment toy-claims --resummarize`: a results.json whose summary is gone gets it back
    from its runs (nothing retrained), with results.md and the plots; no results.json is one
    line and exit status 2."""
    from pathlib import Path

    from dqo_tutorial.cli import main

    study = json.loads((Path(__file__).parents[1] / "docs/toy-claims/study.json").read_text())
    keep = ("π_ref", "DRO", "DQO")
    payload = dict(study, summary={}, runs=[r for r in study["runs"] if r["variant"] in keep])
    (tmp_path / "results.json").write_text(json.dumps(payload))
    assert main(["experiment", "toy-claims", "--out", str(tmp_path), "--resummarize"]) == 0
    again = json.loads((tmp_path / "results.json").read_text())
    assert set(again["summary"]) == set(keep) and again["runs"] == payload["runs"]
    dro = {r["seed"]: r["test"]["greedy"] for r in payload["runs"] if r["variant"] == "DRO"}
    dqo = {r["seed"]: r["test"]["greedy"] for r in payload["runs"] if r["variant"] == "DQO"}
    by_seed = [dro[s] - dqo[s] for s in sorted(dqo)]
    paired = again["summary"]["DRO"]["paired"]["greedy"]
    assert paired["mean"] == pytest.approx(statistics.fmean(by_seed))
    assert paired["seeds_above_0"] == sum(x > 0 for x in by_seed) and paired["n_seeds"] == 5
    assert f"({paired['seeds_above_0']}/5 > 0)" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "accuracy.png").stat().st_size > 0
    capsys.readouterr()
    empty = tmp_path / "empty"
    assert main(["experiment", "toy-claims", "--out", str(empty), "--resummarize"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--resummarize: no" in err and "results.json" in err and "\n" not in err


def test_the_forks_set_is_its_own_plan_without_the_toy_baselines(tmp_path):
    """Fork chains: no toy baseline, no toy data when the budgets are given; its own π_ref job
    before every data job; one oracle job per (length, seed), before the runs that read it."""
    from pathlib import Path

    from dqo_tutorial.experiments.plan import _Plan

    names = expand_variants(["forks"])
    assert len(names) == 2 * 14 and all("forks" in n for n in names)
    budgets = {m: {"policy_lr": 1e-4, "epochs": 2} for m in ("dro", "dqo")}
    cfg = ClaimsConfig(variants=names, seeds=(0, 1), sweep_seeds=(0,), budgets=budgets)
    jobs = {j.name: j for j in _Plan(cfg, Path(tmp_path)).jobs()}
    assert "π_ref forks" in jobs and "π_ref mixed" not in jobs
    data = sorted(n for n in jobs if n.startswith("data"))
    assert data == sorted(f"data forks-{n}ops-100p s{s}" for n in (2, 6) for s in (0, 1))
    assert all(jobs[n].deps == ("π_ref forks",) for n in data)
    oracle = jobs["oracle forks-6ops-100p s1"]
    assert oracle.deps == ("data forks-6ops-100p s1",)
    run = jobs["DQO, λ=0, oracle critic, forks 6 ops s1"]
    assert set(run.deps) == {"data forks-6ops-100p s1", "oracle forks-6ops-100p s1", "π_ref forks"}
    assert "oracle forks-6ops-100p s1" not in jobs["DRO, forks 6 ops s1"].deps
    by = {v.name: v for v in VARIANTS}
    raised, lowered = by["DQO, flat critic raised 0.2, forks 6 ops"], by[
        "DQO, flat critic lowered 0.2, forks 6 ops"]  # fmt: skip
    assert (raised.train["critic_offset"], lowered.train["critic_offset"]) == (0.2, -0.2)
    assert raised.train["critic"] == lowered.train["critic"] == "flat"
    assert "oracle forks-6ops-100p s1" in jobs["DQO, flat critic raised 0.2, forks 6 ops s1"].deps
    raised_095 = by["DQO, λ=0.95, flat critic raised 0.2, forks 6 ops"]
    assert raised_095.train == {"critic": "flat", "critic_offset": 0.2, "lam": 0.95}
    assert by["DQO, λ=0.95, forks 2 ops"].train == {"lam": 0.95}
    dead = by["DQO, oracle critic, flat where dead, forks 6 ops"]  # the §3 mechanism's control
    assert dead.train == {"critic": "oracle_dead_flat"} and dead.potentials == "oracle"
    assert "oracle forks-6ops-100p s1" in jobs[f"{dead.name} s1"].deps
    assert by["DRO, forks 6 ops"].task == "forks-6ops"
    assert by["DRO, forks 6 ops"].anchor == "DQO, forks 6 ops"
    with pytest.raises(ValueError, match="ops must lie in 2..12"):
        dataclasses.replace(by["DRO, forks 6 ops"], ops=13)


def test_fork_contrasts_pair_the_runs_named_by_hand():
    """oracle − flat at 4 ops: (1,1,0,0)−(1,0,0,0) on seed 0 and (1,1,1,0)−(0,1,1,0) on seed 1:
    +25 and +25 points; DQO − DRO where only one seed has both."""
    from dqo_tutorial.experiments.sweeps import contrasts

    def run(name, seed, greedy):
        acc = greedy.count("1") / len(greedy)
        return {"variant": f"{name}, forks 4 ops", "group": "forks", "method": "dqo", "ops": 4,
                "seed": seed, "anchor": "DQO, forks 4 ops", "data": {"responses": 8},
                "test": {"greedy": acc, "hits": {"greedy": greedy}}}  # fmt: skip

    runs = [run("DQO, oracle critic", 0, "1100"), run("DQO, flat critic", 0, "1000"),
            run("DQO, oracle critic", 1, "1110"), run("DQO, flat critic", 1, "0110"),
            run("DQO", 0, "1111"), run("DRO", 0, "0000"), run("DRO", 1, "0000")]  # fmt: skip
    got = contrasts(runs, "forks")[4]
    oracle = got["DQO, oracle critic − DQO, flat critic"]
    assert oracle["mean"] == pytest.approx(0.25) and oracle["seeds_above_0"] == 2
    a, b = [[1, 1, 0, 0], [1, 1, 1, 0]], [[1, 0, 0, 0], [0, 1, 1, 0]]
    assert oracle["ci95"] == pytest.approx(paired_interval(a, b))
    assert got["DQO − DRO"]["mean"] == 1.0 and got["DQO − DRO"]["n_seeds"] == 1
    assert "DQO − DQO, flat critic" in got and "DQO, λ=0 − DQO, flat critic" not in got


def test_the_forks_data_set_fixes_the_steps_not_the_epochs(tmp_path):
    """25 and 400 prompts train the 48 steps (4 epochs × ⌊100 × 8 / 64⌋) and the 2 warm-up
    steps of the 100-prompt forks runs, on their own data and oracle; no IS only at 400."""
    from pathlib import Path

    from dqo_tutorial.experiments.plan import _Plan

    names = expand_variants(["forks-data"])
    budgets = {m: {"policy_lr": 1e-4, "epochs": 4} for m in ("dro", "dqo")}
    cfg = ClaimsConfig(variants=names, seeds=(0,), sweep_seeds=(0,), budgets=budgets)
    plan = _Plan(cfg, Path(tmp_path))
    by = {v.name: v for v in VARIANTS}
    for name, prompts in (("DRO, forks 2 ops, data ×0.25", 25), ("DQO, forks 2 ops, data ×4", 400),
                          ("DQO, no IS, forks 2 ops, data ×4", 400)):  # fmt: skip
        spec = plan.spec(by[name], 0, budgets["dqo"], dev=False, test=True)
        assert spec["prompts"] == prompts and spec["train"]["max_steps"] == 48
        assert spec["train"]["value_warmup_steps"] == 2 and spec["train"]["limit"] == prompts
        assert spec["data"].endswith(f"forks-2ops-{prompts}p/seed-0/exact")
    middle = plan.spec(by["DQO, forks 2 ops"], 0, budgets["dqo"], dev=False, test=True)
    assert middle["train"]["max_steps"] is None and middle["train"]["value_warmup_steps"] == 2
    assert sum("no IS" in n for n in names) == 1 and "DQO, no IS, forks 2 ops, data ×4" in names
    jobs = {j.name for j in plan.jobs()}
    assert {"oracle forks-2ops-25p s0", "oracle forks-2ops-400p s0"} <= jobs


def test_the_forks_data_sweep_takes_its_middle_point_from_the_forks_runs():
    """DQO − DRO at 100 prompts pairs the forks set's 2-operation runs (6 ops left out);
    at 25 prompts its own: (1,1,0,0)−(1,0,0,0) = +25 points, by hand."""
    from dqo_tutorial.experiments.sweeps import contrasts, sweep_points

    def run(name, group, ops, prompts, greedy, seed=0):
        acc = greedy.count("1") / len(greedy)
        return {"variant": name, "group": group, "method": "dqo", "ops": ops, "seed": seed,
                "prompts": prompts, "anchor": "DQO", "data": {"responses": 8},
                "test": {"greedy": acc, "hits": {"greedy": greedy}}}  # fmt: skip

    runs = [run("DQO, forks 2 ops", "forks", 2, 100, "1110"),
            run("DRO, forks 2 ops", "forks", 2, 100, "1000"),
            run("DQO, forks 6 ops", "forks", 6, 100, "0000"),
            run("DQO, forks 2 ops, data ×0.25", "forks data size", 2, 25, "1100"),
            run("DRO, forks 2 ops, data ×0.25", "forks data size", 2, 25, "1000")]  # fmt: skip
    got = contrasts(runs, "forks data size")
    assert sorted(got) == [25, 100]
    assert got[25]["DQO − DRO"]["mean"] == pytest.approx(0.25)
    assert got[100]["DQO − DRO"]["mean"] == pytest.approx(0.5)
    assert sorted(sweep_points(runs, "forks data size")[100]) == ["DQO", "DRO"]


def test_the_forks_comparison_tunes_each_methods_own_knobs_per_length_on_dev(tmp_path):
    """Per (method, length): four knob jobs on the tuning seed's data (DRO: β × value head,
    DQO: λ × IS), the knob-tuned test runs wait for their own length's four and train with the
    dev winner (a later tie loses); the toy's knob jobs keep their names."""
    from pathlib import Path

    from dqo_tutorial.experiments.plan import _Plan

    names = expand_variants(["forks-compare"]) + ("DQO, knobs tuned",)
    budgets = {m: {"policy_lr": 1e-4, "epochs": 4} for m in ("rft", "dpo", "dro", "dqo")}
    cfg = ClaimsConfig(variants=names, seeds=(0, 1), sweep_seeds=(0,), budgets=budgets)
    plan = _Plan(cfg, Path(tmp_path))
    jobs = {j.name: j for j in plan.jobs()}
    for m, n in (("dro", 2), ("dqo", 6)):
        for i in range(4):
            job = jobs[f"knobs {m} forks-{n}ops-100p {i}"]
            assert f"data forks-{n}ops-100p s0" in job.deps and "π_ref forks" in job.deps
    assert {f"knobs dqo {i}" for i in range(4)} <= set(jobs)  # the toy's, unchanged
    run = jobs["DQO, knobs tuned, forks 6 ops s1"]
    assert {f"knobs dqo forks-6ops-100p {i}" for i in range(4)} <= set(run.deps)
    assert not any("forks-2ops" in d for d in run.deps if d.startswith("knobs"))
    base, grid = plan.knob_groups["knobs dqo forks-6ops-100p"]
    assert base.name == "DQO, forks 6 ops" and not base.tune_knobs
    assert [dict(k) for k in grid] == [{}, {"lam": 0.95}, {"is_mode": "none"},
                                       {"lam": 0.95, "is_mode": "none"}]  # fmt: skip
    dro_grid = plan.knob_groups["knobs dro forks-2ops-100p"][1]
    assert {k for g in dro_grid for k in g} == {"beta", "value_model"}
    dev = {f"knobs dqo forks-6ops-100p {i}": {"dev": {"greedy": g}}
           for i, g in enumerate((0.5, 0.7, 0.4, 0.7))}  # fmt: skip
    v = {v.name: v for v in VARIANTS}["DQO, knobs tuned, forks 6 ops"]
    assert plan.resolved(v, dev).train == {"lam": 0.95}


def _fork_run(name, group, ops, greedy):
    """A seed-0 fork run scored by its greedy hits (a string of 0/1 per test problem)."""
    acc = greedy.count("1") / len(greedy)
    return {"variant": name, "group": group, "method": "dqo", "ops": ops, "seed": 0,
            "prompts": 100, "anchor": "DQO", "data": {"responses": 8},
            "test": {"greedy": acc, "hits": {"greedy": greedy}}}  # fmt: skip


def test_the_forks_comparison_reads_the_forks_runs_at_its_lengths():
    """DQO − RFT at 6 ops pairs the forks set's DQO with the comparison's RFT by seed:
    (1,1,1,0)−(1,0,0,0) = +50 points; the forks set's 2-operation runs stay out of 6."""
    from dqo_tutorial.experiments.sweeps import contrasts

    runs = [_fork_run("DQO, forks 6 ops", "forks", 6, "1110"),
            _fork_run("DQO, forks 2 ops", "forks", 2, "0000"),
            _fork_run("RFT, forks 6 ops", "forks comparison", 6, "1000")]  # fmt: skip
    got = contrasts(runs, "forks comparison")
    assert sorted(got) == [6] and got[6]["DQO − RFT"]["mean"] == pytest.approx(0.5)


def test_the_long_comparison_runs_on_the_sweep_seeds_and_pairs_with_the_bound_at_8_and_12(
    tmp_path,
):
    """forks-compare-long: the comparison's five methods at 8 and 12 operations on the sweep
    seeds only, its knob jobs on that length's data; its RFT at 12 pairs by seed with the
    forks-12 set's DQO (1,1,1,0)−(1,0,0,0) = +50 points, and its DPO at 8 with forks-long's
    DQO (0,1,0,0)−(1,1,0,0) = −25 points."""
    from pathlib import Path

    from dqo_tutorial.experiments.plan import _Plan
    from dqo_tutorial.experiments.sweeps import contrasts

    names = expand_variants(["forks-compare-long"])
    assert sorted({n.rsplit(", ", 1)[1] for n in names}) == ["forks 12 ops", "forks 8 ops"]
    budgets = {m: {"policy_lr": 1e-4, "epochs": 4} for m in ("rft", "dpo", "dro", "dqo")}
    cfg = ClaimsConfig(variants=names, seeds=(0, 1, 2), sweep_seeds=(0,), budgets=budgets)
    jobs = {j.name: j for j in _Plan(cfg, Path(tmp_path)).jobs()}
    assert "RFT, forks 12 ops s0" in jobs and "RFT, forks 12 ops s1" not in jobs
    assert "data forks-12ops-100p s0" in jobs["knobs dqo forks-12ops-100p 3"].deps

    runs = [_fork_run("DQO, forks 12 ops", "forks 12 ops", 12, "1110"),
            _fork_run("RFT, forks 12 ops", "forks comparison long", 12, "1000"),
            _fork_run("DQO, forks 8 ops", "forks long", 8, "0100"),
            _fork_run("DPO, forks 8 ops", "forks comparison long", 8, "1100")]  # fmt: skip
    got = contrasts(runs, "forks comparison")
    assert sorted(got) == [8, 12]
    assert got[12]["DQO − RFT"]["mean"] == pytest.approx(0.5)
    assert got[8]["DQO − DPO"]["mean"] == pytest.approx(-0.25)


def test_training_signals_average_the_second_half_of_the_steps_by_hand():
    """Four steps: the second half is steps 3 and 4; a metric missing from a step is left
    out; δ per step only when every step logged it."""
    from dqo_tutorial.experiments.jobs import training_signals

    log = [{"delta_mean": -0.5, "log_ratio_mean": 0.0, "kl_theta_ref": 0.0},
           {"delta_mean": 0.1, "log_ratio_mean": -0.1, "kl_theta_ref": 0.01},
           {"delta_mean": 0.2, "log_ratio_mean": -0.2, "kl_theta_ref": 0.02},
           {"delta_mean": 0.4, "log_ratio_mean": -0.3, "is_weight_mean": 0.5}]  # fmt: skip
    got = training_signals(log)
    assert got["second_half"] == pytest.approx({"delta_mean": 0.3, "log_ratio_mean": -0.25})
    assert got["delta_curve"] == [-0.5, 0.1, 0.2, 0.4]
    assert "delta_curve" not in training_signals([{"kl_theta_ref": 0.1}])
    assert training_signals([]) == {"second_half": {}}


def test_critic_signals_average_each_critics_runs_over_seeds_by_hand(tmp_path):
    """Two seeds of DQO at 2 ops: δ means 0.1 and 0.3 → 0.2, greedy 0.5 and 0.75 → 0.625,
    curves [0, 1] and [2, 3] → [1, 2]; DRO (no critic) and a run without signals stay out;
    the table and the figure are written from them."""
    from dqo_tutorial.experiments.plots import plot_critic_signals
    from dqo_tutorial.experiments.sweeps import critic_signals, signals_table

    def run(name, seed, delta, greedy, curve):
        train = {"second_half": {"delta_mean": delta, "kl_theta_ref": 0.01}, "delta_curve": curve}
        return {"variant": f"{name}, forks 2 ops", "group": "forks", "ops": 2, "seed": seed,
                "train": train, "test": {"greedy": greedy}}  # fmt: skip

    runs = [run("DQO", 0, 0.1, 0.5, [0.0, 1.0]), run("DQO", 1, 0.3, 0.75, [2.0, 3.0]),
            run("DRO", 0, 0.0, 0.5, [0.0, 0.0]),
            {"variant": "DQO, flat critic, forks 2 ops", "group": "forks", "ops": 2, "seed": 0,
             "train": {}, "test": {"greedy": 0.9}}]  # fmt: skip
    got = critic_signals(runs)
    assert list(got) == [2] and list(got[2]) == ["DQO"]
    dqo = got[2]["DQO"]
    assert dqo["delta_mean"] == pytest.approx(0.2) and dqo["greedy"] == pytest.approx(0.625)
    assert dqo["delta_curve"] == pytest.approx([1.0, 2.0]) and dqo["seeds"] == 2
    assert "| 2 | DQO | +0.200 |" in signals_table(runs)
    plot_critic_signals(runs, tmp_path / "signals.png")
    assert (tmp_path / "signals.png").stat().st_size > 0


def test_the_precise_oracle_has_its_own_labels_and_job_beside_the_forks_ones(tmp_path):
    """k = 64: its own oracle job and folder (oracle-k64) after the same data job; the forks
    set's critics keep theirs (k = oracle_k, folder oracle); oracle_k without an oracle is
    refused."""
    from pathlib import Path

    from dqo_tutorial.experiments.plan import _Plan

    names = expand_variants(["forks-oracle"]) + ("DQO, flat critic, forks 2 ops",)
    assert len(names) == 6
    budgets = {m: {"policy_lr": 1e-4, "epochs": 4} for m in ("dro", "dqo")}
    cfg = ClaimsConfig(variants=names, seeds=(0,), sweep_seeds=(0,), budgets=budgets)
    plan = _Plan(cfg, Path(tmp_path))
    jobs = {j.name: j for j in plan.jobs()}
    precise, plain = jobs["oracle forks-2ops-100p s0 k=64"], jobs["oracle forks-2ops-100p s0"]
    assert precise.deps == plain.deps == ("data forks-2ops-100p s0",)
    by = {v.name: v for v in VARIANTS}
    spec = plan.spec(by["DQO, oracle critic, k=64, forks 2 ops"], 0, budgets["dqo"], dev=False,
                     test=True)  # fmt: skip
    assert spec["data"].endswith("forks-2ops-100p/seed-0/oracle-k64")
    assert "oracle forks-2ops-100p s0 k=64" in jobs["DQO, oracle critic, k=64, forks 2 ops s0"].deps
    flat = plan.spec(by["DQO, flat critic, forks 2 ops"], 0, budgets["dqo"], dev=False, test=True)
    assert flat["data"].endswith("forks-2ops-100p/seed-0/oracle")
    with pytest.raises(ValueError, match="oracle_k"):
        dataclasses.replace(by["DRO, forks 2 ops"], oracle_k=64)


def test_the_forks_long_set_runs_the_bound_on_the_sweep_seeds_and_joins_the_forks_axis(tmp_path):
    """8 operations: six variants on sweep seeds (0, 1) of (0, 1, 2), one oracle job each; its
    runs are the forks axis' 8-operation point (a contrast by hand: +50 points)."""
    from pathlib import Path

    from dqo_tutorial.experiments.plan import _Plan
    from dqo_tutorial.experiments.sweeps import contrasts

    names = expand_variants(["forks-long"])
    assert len(names) == 6 and all(n.endswith("forks 8 ops") for n in names)
    budgets = {m: {"policy_lr": 1e-4, "epochs": 4} for m in ("dro", "dqo")}
    cfg = ClaimsConfig(variants=names, seeds=(0, 1, 2), sweep_seeds=(0, 1), budgets=budgets)
    jobs = {j.name for j in _Plan(cfg, Path(tmp_path)).jobs()}
    assert {n for n in jobs if n.startswith("oracle")} == {
        "oracle forks-8ops-100p s0", "oracle forks-8ops-100p s1"}  # fmt: skip
    assert "DQO, forks 8 ops s1" in jobs and "DQO, forks 8 ops s2" not in jobs

    def run(name, group, greedy):
        acc = greedy.count("1") / len(greedy)
        return {"variant": name, "group": group, "ops": 8, "seed": 0,
                "test": {"greedy": acc, "hits": {"greedy": greedy}}}  # fmt: skip

    runs = [run("DQO, oracle critic, forks 8 ops", "forks long", "1100"),
            run("DQO, flat critic, forks 8 ops", "forks long", "0000")]  # fmt: skip
    got = contrasts(runs, "forks")
    assert got[8]["DQO, oracle critic − DQO, flat critic"]["mean"] == pytest.approx(0.5)


def test_pooled_oracles_have_their_own_job_and_folder_and_the_12_operation_set_uses_one(tmp_path):
    """The forks-oracle set's pooled critics read oracle-pooled (job "… pooled", after the same
    data job as the unpooled oracle of the forks set's critics); forks-12 runs the bound at 12
    operations on the sweep seeds with every oracle pooled, and joins the forks axis."""
    from pathlib import Path

    from dqo_tutorial.experiments.plan import _Plan
    from dqo_tutorial.experiments.sweeps import sweep_points

    budgets = {m: {"policy_lr": 1e-4, "epochs": 4} for m in ("dro", "dqo")}
    names = expand_variants(["forks-oracle"]) + ("DQO, oracle critic, forks 2 ops",)
    plan = _Plan(ClaimsConfig(variants=names, seeds=(0,), sweep_seeds=(0,), budgets=budgets),
                 Path(tmp_path))  # fmt: skip
    jobs = {j.name: j for j in plan.jobs()}
    pooled, plain = jobs["oracle forks-2ops-100p s0 pooled"], jobs["oracle forks-2ops-100p s0"]
    assert pooled.deps == plain.deps == ("data forks-2ops-100p s0",)
    by = {v.name: v for v in VARIANTS}
    spec = plan.spec(by["DQO, oracle critic, pooled, forks 2 ops"], 0, budgets["dqo"], dev=False,
                     test=True)  # fmt: skip
    assert spec["data"].endswith("forks-2ops-100p/seed-0/oracle-pooled")
    assert (
        "oracle forks-2ops-100p s0 pooled"
        in jobs["DQO, oracle critic, pooled, forks 2 ops s0"].deps
    )
    with pytest.raises(ValueError, match="oracle_pooled"):
        dataclasses.replace(by["DRO, forks 2 ops"], oracle_pooled=True)

    names = expand_variants(["forks-12"])
    assert len(names) == 8 and all(n.endswith("forks 12 ops") for n in names)
    # the learned critics beside the oracle's λ = 0 headroom (docs/forks/learned-critic-12ops.md)
    for name, lam in (("DQO, λ=0, forks 12 ops", 0.0), ("DQO, λ=0.95, forks 12 ops", 0.95)):
        assert by[name].train["lam"] == lam and by[name].potentials == "exact"
    assert "DQO, λ=0, forks 8 ops" not in by
    cfg = ClaimsConfig(variants=names, seeds=(0, 1, 2), sweep_seeds=(0, 1), budgets=budgets)
    jobs = {j.name for j in _Plan(cfg, Path(tmp_path)).jobs()}
    assert {n for n in jobs if n.startswith("oracle")} == {
        "oracle forks-12ops-100p s0 pooled", "oracle forks-12ops-100p s1 pooled"}  # fmt: skip
    assert all(by[n].oracle_pooled == (by[n].potentials == "oracle") for n in names)
    hits = {"greedy": 0.5, "hits": {"greedy": "10"}}
    run = {"variant": "DQO, flat critic, forks 12 ops", "group": "forks 12 ops", "ops": 12,
           "method": "dqo", "seed": 0, "test": hits}  # fmt: skip
    assert list(sweep_points([run], "forks")) == [12]
