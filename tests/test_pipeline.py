"""The pipeline: configuration files and errors, the results table, the whole run via the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dqo_tutorial.pipeline import (
    SMOKE,
    TASK_DEFAULTS,
    PipelineConfig,
    load_config,
    plot_results,
    results_table,
)
from dqo_tutorial.train import METHODS

CONFIGS = Path(__file__).parents[1] / "configs"


def effective(cfg: PipelineConfig):
    return (
        cfg.sampling_config(),
        [cfg.train_config(m, "d") for m in cfg.methods],
        cfg.eval_config("m"),
    )


def test_configs_toy_yaml_spells_out_the_builtin_default():
    assert effective(load_config(CONFIGS / "toy.yaml")) == effective(load_config(None))


def test_gsm8k_config_loads_and_keeps_the_method_defaults():
    cfg = load_config(CONFIGS / "gsm8k-smollm2.yaml")
    t = cfg.train_config("dqo", "d")
    assert (t.model, t.task, t.beta, t.lam, t.is_mode, t.is_clip) == (
        "smollm2", "gsm8k", 0.05, 1.0, "prefix", 2.0,
    )  # fmt: skip
    assert (t.policy_lr, t.value_lr, t.value_model) == (5e-6, 5e-5, "separate")
    assert cfg.sampling_config().num_samples == 8 and cfg.sampling_config().temperature == 1.0
    assert TASK_DEFAULTS["gsm8k"]["train"] == {}  # GSM8K never inherits the toy learning rates


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"sample": {"temprature": 1.0}}, "sample.temprature: unknown field"),
        ({"train": {"lr": 1e-3}}, "train.lr: unknown field"),
        ({"method_overrides": {"dqo": {"betta": 1}}}, "train.betta: unknown field"),
        ({"train": {"lam": 2.0}}, "TrainConfig.lam"),
        ({"methods": ["ppo"]}, "unknown method 'ppo'"),
        ({"tsk": "toy"}, "unknown key"),
        ({"eval": {"batch_size": 0}}, "eval: EvalConfig.batch_size"),
        ({"train": {"limit": 5}}, "train.limit: unknown field"),  # set from sample.limit
    ],
)
def test_bad_configurations_name_the_bad_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, overrides=overrides)


def test_yaml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: toy\nsample:\n  limt: 3\n")
    with pytest.raises(ValueError, match=r"bad.yaml: sample.limt"):
        load_config(bad)


def test_method_overrides_apply_to_their_method_only():
    cfg = load_config(None, overrides={"method_overrides": {"dqo": {"beta": 0.3}}})
    assert cfg.train_config("dqo", "d").beta == 0.3
    assert cfg.train_config("dpo", "d").beta == TASK_DEFAULTS["toy"]["train"]["beta"]


def test_sft_trains_on_the_problems_that_were_sampled():
    """SFT reads gold solutions itself; the pipeline hands it sample's source, split and limit,
    so that every method sees the same problems (a bare TrainConfig would take all of them)."""
    cfg = load_config(
        None, overrides={"sample": {"limit": 37, "split": "test", "data_source": "embedded"}}
    )
    for method in ("sft", "dqo"):
        t = cfg.train_config(method, "d")
        assert (t.limit, t.split, t.data_source) == (37, "test", "embedded")
    assert cfg.eval_config("m").limit == TASK_DEFAULTS["toy"]["eval"].get("limit")


def _acc(mean, n):
    return {"mean": mean, "stderr": (mean * (1 - mean) / n) ** 0.5, "n": n}


def test_results_table_and_plot_by_hand(tmp_path):
    results = {
        "reference": {"accuracy": {"greedy": {"strict": _acc(0.5, 100), "invalid": _acc(0.1, 100)},
                                   "sampling": {"strict": _acc(0.25, 400)}}},
        "dqo": {"accuracy": {"greedy": {"strict": _acc(0.75, 100), "invalid": _acc(0.0, 100)}},
                "train_steps": 10, "train_s": 12.4},
        "dpo": {"skipped": "0 dpo examples do not fill one step"},
    }  # fmt: skip
    table = results_table(results).splitlines()
    assert table[2] == "| reference | 50.0% ± 5.0% | 25.0% ± 2.2% | 10.0% | – | – |"
    assert table[3] == "| dqo | 75.0% ± 4.3% | – | 0.0% | 10 | 12 s |"
    assert table[4] == "| dpo | skipped: not enough data | – | – | – | – |"
    plot_results(results, tmp_path / "r.png")
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_smoke_run_of_the_whole_pipeline_through_the_cli(tmp_path):
    """`dqo-tutorial run --smoke`: sample, train all five methods, evaluate six models."""
    out = tmp_path / "run"
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "dqo_tutorial.cli", "run", "--smoke", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    seconds = time.perf_counter() - start
    payload = json.loads((out / "results.json").read_text())
    assert sorted(payload["results"]) == sorted(["reference", *METHODS])
    for name, res in payload["results"].items():
        assert res["accuracy"]["greedy"]["strict"]["n"] == 16, name
        assert res["accuracy"]["sampling"]["strict"]["n"] == 32, name
    assert "| dqo |" in done.stdout and (out / "results.png").is_file()
    for m in METHODS:
        assert json.loads((out / "train" / m / "train_summary.json").read_text())["steps"] == 3
    print(f"smoke pipeline: {seconds:.0f} s")

    # a rerun finds every stage done and only rebuilds the table
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already trained" in again.stdout
    rerun = json.loads((out / "results.json").read_text())["results"]
    assert {k: r["accuracy"] for k, r in rerun.items()} == {
        k: r["accuracy"] for k, r in payload["results"].items()
    }


@pytest.mark.parametrize("task", ["gsm8k", "math", "toy"])
def test_every_task_has_pipeline_defaults(task):
    cfg = load_config(None, overrides={"task": task})
    assert cfg.train_config("dqo", "d").task == task
    assert cfg.eval_config("m").task == task


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_pipeline_config_loads(path):
    """configs/*.yaml (not the accelerate/ launcher files) are valid pipeline configurations."""
    cfg = load_config(path)
    for m in cfg.methods:
        cfg.train_config(m, "d")


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_smoke_runs_train_every_method_that_has_data(path):
    """`run --config X --smoke --limit 4` (a quick check of any config) must train, not skip: one
    optimiser step may take at most the 4 prompts' worth of examples (SFT: 4 gold solutions)."""
    cfg = load_config(path, overrides=SMOKE)
    for m in cfg.methods:
        t = cfg.train_config(m, "d")
        assert t.batch_size * t.grad_accum <= 4, (m, t.batch_size, t.grad_accum)


def test_plot_results_leaves_the_matplotlib_backend_alone(tmp_path):
    """A notebook that runs the pipeline keeps its inline plots (a regression: plot_results
    once switched the whole session to Agg)."""
    import matplotlib

    before = matplotlib.get_backend()
    matplotlib.use("svg")  # any non-Agg backend stands for the notebook's
    try:
        acc = {"greedy": {"strict": _acc(0.5, 100)}, "sampling": {"strict": _acc(0.4, 100)}}
        plot_results({"reference": {"accuracy": acc}}, tmp_path / "r.png")
        assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)


def test_task_registry_is_the_one_source_of_pipeline_defaults_and_graders():
    import dataclasses

    from dqo_tutorial.tasks import TASKS, Task

    for name, task in TASKS.items():
        assert TASK_DEFAULTS[name] is task.pipeline_defaults
    required = {f.name for f in dataclasses.fields(Task) if f.default is dataclasses.MISSING}
    assert {"is_correct", "extract_answer"} <= required  # no task inherits GSM8K's grader


def test_the_pipeline_loads_pi_ref_once_for_all_training_stages(tmp_path, monkeypatch):
    """π_ref is loaded once for sampling and once for the training stages (then copied for each
    method), not once per method — a GGUF π_ref costs ~24 s to de-quantise each time. The old
    code loaded it 1 + 5 times."""
    import dqo_tutorial.pipeline as pipeline_module
    from dqo_tutorial import models
    from dqo_tutorial.pipeline import SMOKE, load_config, run

    calls = []
    real = models.load_model_and_tokenizer

    def counted(spec, *args, **kwargs):
        calls.append(str(spec))
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(pipeline_module, "load_model_and_tokenizer", counted)
    monkeypatch.setattr(models, "load_model_and_tokenizer", counted)
    monkeypatch.setattr("dqo_tutorial.train.load_model_and_tokenizer", counted)
    cfg = load_config(overrides={**SMOKE, "methods": ["sft", "dqo", "dpo"]})
    payload = run(cfg, tmp_path / "run", progress=False)
    assert set(payload["results"]) == {"reference", "sft", "dqo", "dpo"}
    # sampling + the training stages' one copy + the credit stage's scorer (toy tasks only: a
    # GGUF π_ref has no credit stage)
    assert calls.count("toy") == 3, calls


def test_results_say_what_they_are_and_a_rerun_says_what_it_reuses(tmp_path, capsys, monkeypatch):
    """A smoke table pasted into a report looked like a result: no task, model, sizes or mark."""
    from dqo_tutorial import __version__, pipeline

    titles = []
    real_plot = pipeline.plot_results
    monkeypatch.setattr(pipeline, "plot_results", lambda r, p, title="": titles.append(title)
                        or real_plot(r, p, title=title))  # fmt: skip
    tiny = {"sample": {**SMOKE["sample"], "limit": 4}, "eval": {**SMOKE["eval"], "limit": 4}}
    cfg = load_config(overrides={**SMOKE, **tiny, "methods": ["sft"]})
    out = tmp_path / "run"
    pipeline.run(cfg, out)
    capsys.readouterr()
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                         capture_output=True, text=True)  # fmt: skip
    about = json.loads((out / "results.json").read_text())["about"]
    assert about["task"] == "toy" and about["model"] == "toy" and about["smoke"] is True
    assert about["sizes"] == {"problems": 4, "samples_per_problem": 4, "rows": 16,
                              "test_problems": 4}  # fmt: skip
    assert about["seeds"] == {"sample": 0, "train": 0, "eval": 0}
    assert about["dqo_tutorial"] == __version__ and about["commit"] == git.stdout.strip()
    head = (out / "results.md").read_text().splitlines()[0]
    for words in ("toy task", "π_ref toy", "4 problems × 4 samples", "4 test problems",
                  "seed 0", "SMOKE", f"dqo_tutorial {__version__}",
                  git.stdout.strip()):  # fmt: skip
        assert words in head, head
        assert words in titles[0].replace("\n", " "), titles[0]

    pipeline.run(cfg, out)  # a rerun reuses the samples and the evaluations, and says so
    printed = capsys.readouterr().out
    assert f"from toy: reusing the dataset in {out / 'data'}" in printed
    assert f"evaluating the reference model: reusing {out / 'eval' / 'reference'}" in printed
    assert f"evaluating sft: reusing {out / 'eval' / 'sft'}" in printed


def test_the_results_table_gains_blame_columns_with_a_credit_stage():
    """With a credit stage each row shows its signal's token blame; DQO also its critic's
    blame and AUC; a row without them shows dashes (by hand)."""
    acc = {"greedy": {"strict": _acc(0.5, 100), "invalid": _acc(0.0, 100)}}
    results = {
        "reference": {"accuracy": acc, "credit": {"token_blame": 0.7, "chance": 0.25}},
        "dqo": {"accuracy": acc, "train_steps": 10, "train_s": 3.0,
                "credit": {"token_blame": 0.66, "critic_blame": 0.02, "critic_auc": 0.41}},
        "dpo": {"skipped": "no pairs"},
    }  # fmt: skip
    table = results_table(results).splitlines()
    assert table[0].endswith("| blame | critic blame | critic AUC |")
    assert table[2].endswith("| – | – | 70.0% | – | – |")
    assert table[3].endswith("| 10 | 3 s | 66.0% | 2.0% | 0.41 |")
    assert table[4].endswith("| – | – | – | – | – |")
