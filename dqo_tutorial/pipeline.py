"""The whole comparison in one call: sample → label → train each method → evaluate → table, plot.

Every method trains on the **same** offline dataset (sampled once from π_ref), with the same
trainer, and is evaluated by the same code (dqo-method.md §9–§10); only the loss differs. Layout
of the output directory::

    out/pipeline_config.json    the configuration (a rerun must match it, then resumes)
    out/data/                   sampling.build_dataset (resumable shards, manifest.json)
    out/train/<method>/         train.train (checkpoints, log.jsonl, policy/)
    out/eval/<name>/            evaluate.evaluate for "reference" and every method
    out/credit/                 credit_study.credit_report: the blame of each trained method on
                                held-out wrong π_ref responses (tasks with a step checker)
    out/results.json            the table below as data, with every run's settings
    out/results.md              the table as Markdown
    out/results.png             greedy and sampling accuracy with ±1 standard error

Each stage resumes on its own, so an interrupted ``run`` continues where it stopped.

Configuration (:class:`PipelineConfig`, YAML in ``configs/``): ``task``, ``model`` (π_ref;
default: the task's), ``methods``, and three sections whose keys are the fields of
:class:`~dqo_tutorial.sampling.SamplingConfig` (``sample``),
:class:`~dqo_tutorial.train.TrainConfig` (``train``, shared by all methods, plus
``method_overrides: {method: {...}}``) and :class:`~dqo_tutorial.evaluate.EvalConfig` (``eval``).
An unknown key is an error naming it (e.g. ``sample.temprature``).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .artifacts import (
    atomic_write_json,
    check_run_identity,
    run_lock,
    save_figure_atomically,
    source_commit,
)
from .errors import ConfigError
from .evaluate import EvalConfig, evaluate
from .methods import REGISTRY
from .models import load_model_and_tokenizer
from .sampling import SamplingConfig, build_dataset
from .tasks import TASKS, get_task
from .threads import fit_threads
from .train import (
    METHODS,
    NotEnoughDataError,
    TrainConfig,
    finished_summary,
    load_starting_point,
    train,
)

__all__ = [
    "PipelineConfig",
    "TASK_DEFAULTS",
    "SMOKE",
    "load_config",
    "run",
    "results_table",
    "plot_results",
    "about_run",
    "about_line",
    "is_smoke",
]

_SECTIONS = {"sample": SamplingConfig, "train": TrainConfig, "eval": EvalConfig}
# fields the pipeline fills in itself, per section (SFT's problems are those of ``sample``)
_SET_BY_PIPELINE = {
    "sample": {"model", "task"},
    "train": {"model", "task", "method", "data", "data_source", "split", "limit"},
    "eval": {"model", "task"},
}


TASK_DEFAULTS: dict[str, Mapping[str, Mapping[str, Any]]] = {
    name: task.pipeline_defaults for name, task in TASKS.items()
}
"""Per-task defaults of the three sections, under what a configuration gives: each task's
:attr:`~dqo_tutorial.tasks.Task.pipeline_defaults` (the task registry is their one source)."""


@dataclass(frozen=True)
class PipelineConfig:
    """The comparison to run (module docstring). Defaults: the toy task end to end.

    Each section holds field values of its dataclass *on top of* :data:`TASK_DEFAULTS` of the
    task; the effective values are in :meth:`sampling_config`, :meth:`train_config` and
    :meth:`eval_config`.
    """

    task: str = "toy"
    model: str | None = None
    methods: tuple[str, ...] = METHODS
    sample: Mapping[str, Any] = field(default_factory=dict)
    train: Mapping[str, Any] = field(default_factory=dict)
    method_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    eval: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        get_task(self.task)
        object.__setattr__(self, "methods", tuple(self.methods))
        for m in self.methods:
            if m not in REGISTRY:  # the five of the comparison, and any registered since
                raise ConfigError(
                    f"methods: unknown method {m!r}; expected some of {list(REGISTRY)}"
                )
        for m in self.method_overrides:
            if m not in REGISTRY:
                raise ConfigError(
                    f"method_overrides: unknown method {m!r}; expected {list(REGISTRY)}"
                )
        for section, cls in _SECTIONS.items():
            names = {f.name for f in dataclasses.fields(cls)} - _SET_BY_PIPELINE[section]
            given = [getattr(self, section)] + (
                list(self.method_overrides.values()) if section == "train" else []
            )
            for values in given:
                for key in values:
                    if key not in names:
                        raise ConfigError(
                            f"{section}.{key}: unknown field (set by the pipeline or not a field "
                            f"of {cls.__name__}); known: {sorted(names)}"
                        )
        # build every sub-configuration once now, so that a bad value fails before any work
        self.sampling_config()
        self.eval_config("reference")
        for m in self.methods:
            self.train_config(m, "data")

    @property
    def reference_model(self) -> str:
        return self.model or get_task(self.task).default_model

    def _build(self, cls: type, section: str, values: Mapping[str, Any]) -> Any:
        try:
            return cls(**values)
        except ValueError as err:
            raise ConfigError(f"{section}: {err}") from None

    def effective(self) -> dict[str, Any]:
        """Every value the comparison runs with — the task defaults, the file and the overrides
        resolved — as one nested dict: two configurations that run the same comparison have the
        same ``effective()`` however they spell it (``configs/toy.yaml`` and the defaults do)."""
        return {
            "task": self.task,
            "model": self.reference_model,
            "methods": list(self.methods),
            "sample": asdict(self.sampling_config()),
            "train": {m: self.train_config(m, "data").identity() for m in self.methods},
            "eval": asdict(self.eval_config("reference")),
        }

    def _section(self, name: str) -> dict[str, Any]:
        return {**TASK_DEFAULTS[self.task][name], **getattr(self, name)}

    def sampling_config(self) -> SamplingConfig:
        task = get_task(self.task)
        values = {"max_new_tokens": task.max_new_tokens, **self._section("sample")}
        return self._build(
            SamplingConfig, "sample", {**values, "model": self.reference_model, "task": self.task}
        )

    def train_config(self, method: str, data: str) -> TrainConfig:
        # SFT reads gold solutions itself: of the problems that were sampled from, like the rest
        scfg = self.sampling_config()
        same_problems = {k: getattr(scfg, k) for k in ("data_source", "split", "limit")}
        values = {**self._section("train"), **self.method_overrides.get(method, {})}
        fixed = {
            "method": method,
            "model": self.reference_model,
            "task": self.task,
            "data": data,
            **same_problems,
        }
        return self._build(TrainConfig, f"train ({method})", {**values, **fixed})

    def eval_config(self, model: str) -> EvalConfig:
        task = get_task(self.task)
        values = {"max_new_tokens": task.max_new_tokens, **self._section("eval")}
        return self._build(EvalConfig, "eval", {**values, "model": model, "task": self.task})


SMOKE: dict[str, Any] = {
    "sample": {"limit": 16, "num_samples": 4, "batch_size": 64, "shard_size": 16},
    "train": {
        "max_steps": 3,
        "batch_size": 4,
        "grad_accum": 1,
        "checkpoint_every": 3,
        "value_warmup_steps": 1,
    },
    "eval": {"limit": 16, "num_samples": 2, "batch_size": 64},
}
"""``--smoke``: a few prompts, samples, steps and test problems — the whole toy pipeline in
seconds on a CPU (docs/measurements.md), to check that everything runs (the accuracies mean
nothing)."""


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(
    path: str | os.PathLike[str] | None = None, *, overrides: Mapping[str, Any] | None = None
) -> PipelineConfig:
    """A :class:`PipelineConfig` from a YAML file (None: the defaults) with nested ``overrides``
    merged on top. Errors name the file and the bad key."""
    import yaml

    values: dict[str, Any] = {}
    where = str(path) if path is not None else "config"
    if path is not None:
        if not Path(path).is_file():
            raise ConfigError(f"no configuration file at {path} (see configs/ for examples)")
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as err:  # its message carries the line and column
            raise ConfigError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        values = loaded
    # the file is checked on its own first: an override (--smoke) must not hide a bad value
    for checked in (values, _merge(values, overrides or {})) if overrides else (values,):
        known = {f.name for f in dataclasses.fields(PipelineConfig)}
        unknown = sorted(set(checked) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
        try:
            cfg = PipelineConfig(**checked)
        except ValueError as err:
            raise ConfigError(f"{where}: {err}") from None
    return cfg


def results_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown table: strict greedy and sampling accuracy (± standard error) and invalid rate;
    with a credit stage (:func:`_credit_stage`) also the token blame accuracy of each model's
    signal (π_ref: its surprisal; a method: its implied reward β·ρ) and DQO's critic's blame
    and AUC."""
    credit = any("credit" in r for r in results.values())
    head = "| model | greedy | sampling (τ=1) | invalid (greedy) | train steps | train time |"
    lines = [head + (" blame | critic blame | critic AUC |" if credit else ""),
             "|---|---|---|---|---|---|" + ("---|---|---|" if credit else "")]  # fmt: skip

    def cell(acc: Mapping[str, Any], decoding: str, key: str = "strict") -> str:
        if decoding not in acc:
            return "–"
        r = acc[decoding][key]
        return f"{r['mean']:.1%} ± {r['stderr']:.1%}"

    for name, res in results.items():
        if "skipped" in res:
            lines.append(f"| {name} | skipped: not enough data | – | – | – | – |"
                         + (" – | – | – |" if credit else ""))  # fmt: skip
            continue
        acc = res["accuracy"]
        steps = res.get("train_steps", "–")
        wall = f"{res['train_s']:.0f} s" if "train_s" in res else "–"
        invalid = f"{acc['greedy']['invalid']['mean']:.1%}" if "greedy" in acc else "–"
        lines.append(
            f"| {name} | {cell(acc, 'greedy')} | {cell(acc, 'sampling')} | {invalid} "
            f"| {steps} | {wall} |" + (_credit_cells(res.get("credit", {})) if credit else "")
        )
    return "\n".join(lines)


def _credit_cells(c: Mapping[str, Any]) -> str:
    def pct(x: float | None) -> str:
        return "–" if x is None else f"{x:.1%}"

    auc = "–" if c.get("critic_auc") is None else f"{c['critic_auc']:.2f}"
    return f" {pct(c.get('token_blame'))} | {pct(c.get('critic_blame'))} | {auc} |"


def plot_results(
    results: Mapping[str, Mapping[str, Any]], path: str | os.PathLike[str], title: str = ""
) -> None:
    """Grouped bars of strict greedy / sampling accuracy with ±1 standard error."""
    # a bare Figure (no pyplot): drawing a file must not switch the caller's backend (a
    # notebook's inline plots) nor leave a figure open
    from matplotlib.figure import Figure

    names = [n for n in results if "skipped" not in results[n]]
    fig = Figure(figsize=(1.2 * len(names) + 2, 3.5))
    ax = fig.subplots()
    width = 0.38
    for k, decoding in enumerate(("greedy", "sampling")):
        means, errs = [], []
        for n in names:
            acc = results[n]["accuracy"].get(decoding, {}).get("strict")
            means.append(acc["mean"] if acc else 0.0)
            errs.append(acc["stderr"] if acc else 0.0)
        xs = [i + (k - 0.5) * width for i in range(len(names))]
        ax.bar(xs, means, width, yerr=errs, capsize=3, label=decoding)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("accuracy (strict)")
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left")
    ax.set_title(title, fontsize=8 if "\n" in title else None)
    save_figure_atomically(fig, path)


def run(
    cfg: PipelineConfig,
    out_dir: str | os.PathLike[str],
    *,
    progress: bool = True,
    adapt_threads: bool = False,
) -> dict:
    """Run (or resume) the whole comparison into ``out_dir``; returns ``results.json``'s dict.

    The folder's identity is :meth:`PipelineConfig.effective`; a second run into the same
    folder is refused while this one runs (:func:`~dqo_tutorial.artifacts.run_lock`).
    ``adapt_threads`` (the command line's choice): on a CPU, every stage takes the cores other
    processes leave free (:func:`~dqo_tutorial.threads.fit_threads`)."""
    source_commit()  # the commit this run starts on, for its results' label
    with run_lock(out_dir):
        return _run(cfg, Path(out_dir), progress, adapt_threads)


def _upgrade_identity(path: Path, cfg: PipelineConfig) -> None:
    """Folders written before the identity became :meth:`PipelineConfig.effective` (this
    repository before December 2026) stored the configuration as written, its raw sections: the
    same written configuration is the same run, so its identity is rewritten in the new form."""
    if path.is_file():
        stored = json.loads(path.read_text()).get("config", {})
        if "method_overrides" in stored and stored == json.loads(json.dumps(asdict(cfg))):
            atomic_write_json(path, {"config": cfg.effective()})


class _StartingPoints:
    """π_ref for the training stages, loaded once per (model, dtype) and copied for each method:
    a GGUF π_ref is de-quantised once (~24 s for SmolLM2), not once per method."""

    def __init__(self) -> None:
        self._loaded: dict[tuple[str, str], tuple[Any, Any]] = {}

    def copy_of(self, tcfg: TrainConfig) -> tuple[Any, Any]:
        key = (tcfg.model, tcfg.dtype)
        if key not in self._loaded:  # exactly as train() would load it
            self._loaded[key] = load_starting_point(tcfg)
        model, tokenizer = self._loaded[key]
        return copy.deepcopy(model), tokenizer


def _run(cfg: PipelineConfig, out: Path, progress: bool, fit: bool = False) -> dict:
    """:func:`run` inside the output folder's lock; ``fit``: re-fit the CPU threads at every
    stage (:func:`~dqo_tutorial.threads.fit_threads`)."""
    start = time.perf_counter()
    stage_s: dict[str, float] = {}

    def say(msg: str) -> None:
        if progress:
            print(f"[{time.perf_counter() - start:6.0f} s] {msg}", flush=True)

    n_stages = 2 + 2 * len(cfg.methods) + int(has_step_checker(cfg.task))
    stages = iter(range(1, n_stages + 1))

    def stage(msg: str) -> None:  # one line per stage, then (at most) its one progress bar
        say(f"stage {next(stages)}/{n_stages}: {msg}")
        if fit:
            fit_threads(cfg.sampling_config().device)  # the cores other processes leave free

    scfg = cfg.sampling_config()
    ref_model, ref_tok = load_model_and_tokenizer(
        cfg.reference_model, device=scfg.device, dtype=scfg.dtype
    )
    _upgrade_identity(out / "pipeline_config.json", cfg)
    check_run_identity(out / "pipeline_config.json", {"config": cfg.effective()})
    stage(f"sampling {scfg.num_samples} responses per prompt from {cfg.reference_model}"
          + _reusing(out / "data", "manifest.json", "the dataset in "))  # fmt: skip
    t = time.perf_counter()
    build_dataset(scfg, out / "data", model=ref_model, tokenizer=ref_tok, progress=progress)
    stage_s["sample"] = time.perf_counter() - t
    manifest = json.loads((out / "data" / "manifest.json").read_text())
    say(f"data: {json.dumps(manifest['summary'])}")

    results: dict[str, dict[str, Any]] = {}
    stage("evaluating the reference model" + _reusing(out / "eval" / "reference"))
    t = time.perf_counter()
    results["reference"] = evaluate(
        cfg.eval_config(cfg.reference_model),
        out / "eval" / "reference",
        model=ref_model,
        tokenizer=ref_tok,
        progress=progress,
    )
    stage_s["eval reference"] = time.perf_counter() - t
    del ref_model

    starts = _StartingPoints()
    for method in cfg.methods:
        tcfg = cfg.train_config(method, str(out / "data"))
        run_dir = out / "train" / method
        t = time.perf_counter()
        summary = finished_summary(tcfg, run_dir)
        if summary is not None:
            stage(f"training {method}: already trained")
        else:
            stage(f"training {method}")
            try:
                policy, tokenizer = starts.copy_of(tcfg)
                summary = train(tcfg, run_dir, policy=policy, tokenizer=tokenizer,
                                progress=progress)  # fmt: skip
            except NotEnoughDataError as err:
                stage(f"evaluating {method}: skipped, {method} was not trained: {err}")
                results[method] = {"skipped": str(err)}
                continue
        stage_s[f"train {method}"] = time.perf_counter() - t
        stage(f"evaluating {method}" + _reusing(out / "eval" / method))
        t = time.perf_counter()
        res = evaluate(
            cfg.eval_config(str(run_dir / "policy")), out / "eval" / method, progress=progress
        )
        stage_s[f"eval {method}"] = time.perf_counter() - t
        res["train_steps"] = summary["steps"]
        res["train_s"] = summary["wall_s_this_run"]
        results[method] = res

    if has_step_checker(cfg.task):
        stage("credit: where each method's token signal blames held-out wrong π_ref responses")
        t = time.perf_counter()
        _credit_stage(cfg, out, results)
        stage_s["credit"] = time.perf_counter() - t
    return _write_results(cfg, out, results, manifest["summary"], stage_s, start, progress)


def has_step_checker(task: str) -> bool:
    """Whether ``task`` locates the first wrong line of a response (its ``line_correctness``:
    the toy family)."""
    return get_task(task).line_correctness is not None


def _credit_stage(cfg: PipelineConfig, out: Path, results: dict[str, dict[str, Any]]) -> None:
    """Blame of every trained method (:func:`~dqo_tutorial.credit_study.credit_report`) on
    π_ref's responses to the first test problems (at most 200, 4 each, the sampling seed's
    own stream); each result gains ``credit``: its implied reward's token blame and, for DQO,
    its critic's blame and AUC; the reference gains π_ref surprisal's blame and the chance."""
    from .credit_study import credit_report

    trained = {m: str(out / "train" / m) for m in cfg.methods if "skipped" not in results[m]}
    n = min(200, cfg.eval_config("reference").limit or 200)
    seed = cfg.sampling_config().seed
    report = credit_report(trained, str(out / "credit"), task=cfg.task, n_problems=n, k=4,
                           seed=seed, reference=cfg.reference_model)  # fmt: skip
    signals = report["signals"]
    for m in trained:
        results[m]["credit"] = {
            "token_blame": signals.get(f"{m} implied reward", {}).get("token_blame"),
            "critic_blame": signals.get(f"{m} critic", {}).get("token_blame"),
            "critic_auc": signals.get(f"{m} critic", {}).get("critic_auc"),
        }
    if "π_ref surprisal" in signals:
        results["reference"]["credit"] = {
            "token_blame": signals["π_ref surprisal"]["token_blame"],
            "chance": signals["random"]["token_chance"],
        }


def _reusing(folder: Path, done: str = "results.json", what: str = "") -> str:
    """``": reusing <what><folder>"`` when a stage's outputs are already there, else ``""``."""
    return f": reusing {what}{folder}" if (folder / done).is_file() else ""


def _write_results(
    cfg: PipelineConfig,
    out: Path,
    results: dict[str, dict[str, Any]],
    data: Mapping[str, Any],
    stage_s: Mapping[str, float],
    start: float,
    progress: bool,
) -> dict:
    """``results.{md,png,json}``, each saying what it is (:func:`about_run`)."""
    import textwrap

    about = about_run(cfg, data, results["reference"]["data"]["num_problems"])
    line = about_line(about)
    table = results_table(results)
    (out / "results.md").write_text(f"{line}\n\n{table}\n")
    title = f"{cfg.task}: π_ref vs methods\n" + textwrap.fill(line, 90)
    plot_results(results, out / "results.png", title=title)
    payload = {
        "about": about,
        "config": asdict(cfg),
        "data": data,
        "results": results,
        "stage_s_this_run": stage_s,
        "wall_s_this_run": time.perf_counter() - start,
    }
    atomic_write_json(out / "results.json", payload)
    if progress:
        print(line)
        print(table)
        print(f"wrote {out / 'results.md'}, {out / 'results.png'}, {out / 'results.json'}")
    return payload


_SMOKE_SIZES = (("sample", "limit"), ("sample", "num_samples"), ("train", "max_steps"),
                ("eval", "limit"))  # fmt: skip
"""The sizes that make a run a smoke check when none exceeds :data:`SMOKE`'s."""


def is_smoke(cfg: PipelineConfig) -> bool:
    """Whether every size of :data:`_SMOKE_SIZES` is at most :data:`SMOKE`'s (``None``, no
    limit, is not): a run whose accuracies mean nothing."""
    sections = {"sample": cfg.sampling_config(), "eval": cfg.eval_config("reference")}
    sections["train"] = cfg.train_config(cfg.methods[0], "data") if cfg.methods else None
    sizes = [getattr(sections[s], k, None) for s, k in _SMOKE_SIZES]
    return all(v is not None and v <= SMOKE[s][k] for v, (s, k) in zip(sizes, _SMOKE_SIZES))


def about_run(cfg: PipelineConfig, data: Mapping[str, Any], test_problems: int) -> dict:
    """What a results file is: task, π_ref, data sizes, seeds, smoke mode, package version and
    git commit (None outside a git checkout). ``data``: the dataset's manifest summary."""
    from . import __version__

    scfg, ecfg = cfg.sampling_config(), cfg.eval_config("reference")
    train_seeds = sorted({cfg.train_config(m, "data").seed for m in cfg.methods})
    return {
        "task": cfg.task,
        "model": cfg.reference_model,
        "sizes": {
            "problems": data["num_prompts"],
            "samples_per_problem": scfg.num_samples,
            "rows": data["num_samples"],
            "test_problems": test_problems,
        },
        "seeds": {
            "sample": scfg.seed,
            "train": train_seeds[0] if len(train_seeds) == 1 else train_seeds,
            "eval": ecfg.seed,
        },
        "smoke": is_smoke(cfg),
        "dqo_tutorial": __version__,
        "commit": source_commit(),
    }


def about_line(about: Mapping[str, Any]) -> str:
    """:func:`about_run` as the one line heading ``results.md`` and the plot."""
    sizes, seeds = about["sizes"], about["seeds"]
    same = len({json.dumps(v) for v in seeds.values()}) == 1
    seed = (
        f"seed {seeds['sample']}"
        if same
        else "seeds " + ", ".join(f"{k} {v}" for k, v in seeds.items())
    )
    mode = (
        "SMOKE RUN (tiny sizes that check that everything runs: the accuracies mean nothing)"
        if about["smoke"]
        else "full sizes"
    )
    commit = f" (commit {about['commit']})" if about["commit"] else ""
    return (
        f"{about['task']} task, π_ref {about['model']}: {sizes['problems']} problems × "
        f"{sizes['samples_per_problem']} samples = {sizes['rows']} training rows, "
        f"{sizes['test_problems']} test problems; {seed}; {mode}; "
        f"dqo_tutorial {about['dqo_tutorial']}{commit}"
    )
