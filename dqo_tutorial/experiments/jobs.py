"""The toy-claims jobs: each runs in a worker process (sampling a seed's data, relabelling it,
the horizon sweep's π_ref, one training and its evaluations) and every one resumes on its own;
:func:`schedule` runs a graph of them on the workers."""

from __future__ import annotations

import copy
import json
import math
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from ..artifacts import atomic_write_json, check_run_identity, save_dataset_atomically
from .config import ClaimsConfig, select_rows
from .variants import oracle_folder

__all__ = [
    "Setting",
    "Job",
    "schedule",
    "job_data",
    "job_monte_carlo",
    "job_oracle",
    "job_mixed_reference",
    "job_forks_reference",
    "job_run",
    "training_signals",
    "SIGNALS",
    "epoch_steps",
]


@dataclass(frozen=True)
class Setting:
    """Where a variant's data come from: its task, its number of training prompts, the π_ref
    that samples them (``"toy"`` or a model directory) and the job that trains that π_ref
    (``""``: the shipped one; ``"π_ref mixed"``: the horizon sweep's; ``"π_ref forks"``: the
    fork chains')."""

    task: str = "toy"
    prompts: int = 400
    reference: str = "toy"
    reference_job: str = ""

    def folder(self, default: Setting) -> str:
        """The data folder's name under ``data/`` (the default setting keeps ``data/seed-S``)."""
        if self == default:
            return ""
        # (a fork chain's task names its π_ref; a toy chain's says which of two it was)
        mixed = self.reference_job == "π_ref mixed"
        return f"{self.task}-{self.prompts}p{'-mixed-ref' if mixed else ''}"


_REFERENCES: dict[str, tuple[Any, Any]] = {}


def _reference(spec: str = "toy") -> tuple[Any, Any]:
    """A π_ref (the shipped toy model, or a model directory), loaded once per worker (jobs copy
    it before training)."""
    if spec not in _REFERENCES:
        from ..models import load_model_and_tokenizer

        _REFERENCES[spec] = load_model_and_tokenizer(spec, device="cpu")
    return _REFERENCES[spec]


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _sampling_config(cfg: ClaimsConfig, seed: int, setting: Setting) -> Any:
    from ..sampling import SamplingConfig
    from ..tasks import get_task

    return SamplingConfig(
        model=setting.reference,
        task=setting.task,
        limit=setting.prompts,
        num_samples=cfg.num_samples,
        max_new_tokens=get_task(setting.task).max_new_tokens,
        batch_size=256,
        shard_size=setting.prompts,
        seed=seed,
        process_rewards=True,
        process_k=cfg.process_k,
    )


def job_data(cfg: ClaimsConfig, seed: int, out: str, setting: Setting) -> dict[str, Any]:
    """Sample seed s's dataset of ``setting`` (exact Φ) into ``out/exact``."""
    from ..sampling import build_dataset, summarize

    model, tok = _reference(setting.reference)
    t = time.perf_counter()
    ds = build_dataset(
        _sampling_config(cfg, seed, setting),
        Path(out) / "exact",
        model=model,
        tokenizer=tok,
        progress=False,
    )
    return {"seed": seed, "summary": summarize(ds), "wall_s": time.perf_counter() - t}


def job_monte_carlo(cfg: ClaimsConfig, seed: int, out: str) -> dict[str, Any]:
    """The same rows with Monte-Carlo Φ into ``out/monte_carlo`` (skipped when present)."""
    from ..sampling import with_monte_carlo_potentials
    from ..train import load_rows

    target = Path(out) / "monte_carlo"
    t = time.perf_counter()
    if not target.is_dir():
        model, tok = _reference()
        relabelled = with_monte_carlo_potentials(
            load_rows(Path(out) / "exact"), _sampling_config(cfg, seed, Setting()), model, tok
        )
        save_dataset_atomically(relabelled, target)
    return {"seed": seed, "wall_s": time.perf_counter() - t}


def job_oracle(
    cfg: ClaimsConfig,
    seed: int,
    out: str,
    setting: Setting | None = None,
    k: int | None = None,
    pooled: bool = False,
) -> dict[str, Any]:
    """The same rows with the oracle critic's columns (:mod:`dqo_tutorial.oracle`, ``k``
    rollouts per anchor of ``setting``'s π_ref, graded by its task; ``pooled`` along the prefix
    tree) into ``out/`` :func:`~.variants.oracle_folder` (k None: ``oracle_k`` rollouts;
    skipped when present)."""
    from datasets import Dataset

    from ..oracle import with_oracle_values
    from ..tasks import get_task
    from ..train import load_rows

    target = Path(out) / oracle_folder(k, pooled)
    t = time.perf_counter()
    if not target.is_dir():
        setting = setting or Setting()
        model, tok = _reference(setting.reference)
        rows = [dict(r) for r in load_rows(Path(out) / "exact")]
        task = get_task(setting.task)
        labelled = with_oracle_values(rows, model, tok, task=task, k=k or cfg.oracle_k,
                                      seed=seed, batch_size=256, pooled=pooled)  # fmt: skip
        save_dataset_atomically(Dataset.from_list(labelled), target)
    bounds = list(load_rows(target)["oracle_bound"])
    return {
        "seed": seed,
        "wall_s": time.perf_counter() - t,
        "oracle_bound_mean": statistics.fmean(bounds),
        "oracle_bound_max": max(bounds),
    }


def job_mixed_reference(cfg: ClaimsConfig, out: str) -> dict[str, Any]:
    """The horizon sweep's π_ref (:data:`~.config.HORIZON_REFERENCE`) into ``out`` (resumes; a
    finished one is reused; its accuracy per length is the sweep's ``π_ref, n ops`` rows)."""
    from ..recipes import train_toy_reference

    t = time.perf_counter()
    if not (Path(out) / "train_summary.json").exists():
        train_toy_reference(out, **cfg.horizon_reference, progress=False)
    summary = json.loads((Path(out) / "train_summary.json").read_text())
    return {"steps": summary["steps"], "wall_s": time.perf_counter() - t}


def job_forks_reference(cfg: ClaimsConfig, out: str) -> dict[str, Any]:
    """The fork chains' π_ref (:attr:`~.config.ClaimsConfig.forks_reference`) into ``out``
    (resumes; a finished one is reused)."""
    from ..recipes import train_forks_reference

    t = time.perf_counter()
    if not (Path(out) / "train_summary.json").exists():
        train_forks_reference(out, **cfg.forks_reference, progress=False)
    summary = json.loads((Path(out) / "train_summary.json").read_text())
    return {"steps": summary["steps"], "wall_s": time.perf_counter() - t}


def _behavior_law(data: str) -> Any:
    """The sampling law of a seed's rows: recorded beside ``exact/`` (the Monte-Carlo relabelling
    in ``monte_carlo/`` keeps the same responses, so the same law)."""
    from ..train import behavior_law_of

    law = behavior_law_of(data) or behavior_law_of(Path(data).parent / "exact")
    if law is None:
        raise FileNotFoundError(f"no sampling_config.json for {data} or beside it in exact/")
    return law


def _accuracy(res: Mapping[str, Any]) -> dict[str, Any]:
    """Strict accuracies of an evaluation: ``{greedy, sampling, stderr: {…}, n: {…}, invalid}``."""
    acc = res["accuracy"]
    kinds = [d for d in ("greedy", "sampling") if d in acc]
    return {d: acc[d]["strict"]["mean"] for d in kinds} | {
        "stderr": {d: acc[d]["strict"]["stderr"] for d in kinds},
        "n": {d: acc[d]["strict"]["n"] for d in kinds},
        "invalid_greedy": acc["greedy"]["invalid"]["mean"] if "greedy" in acc else None,
    }


def _hits(eval_dir: Path, problems: int, samples: int) -> dict[str, Any]:
    """Per test problem, its number of strictly correct responses (:func:`~.stats.scores`), read
    from the evaluation's ``outputs.jsonl``: one digit per problem and decoding."""
    if samples > 9:
        raise ValueError("hits keep one digit per problem: eval_samples must be <= 9")
    counts = {"greedy": [0] * problems, "sampling": [0] * problems}
    with (eval_dir / "outputs.jsonl").open() as f:
        for line in f:
            r = json.loads(line)
            counts[r["decoding"]][r["problem_index"]] += bool(r["correct_strict"])
    out: dict[str, Any] = {"greedy": "".join(map(str, counts["greedy"]))}
    if samples:
        out |= {"sampling": "".join(map(str, counts["sampling"])), "samples": samples}
    return out


def _greedy_dev_probe(problems: Sequence[Any], tokenizer: Any) -> Callable[[Any], dict]:
    from ..gsm8k import is_correct
    from ..sampling import generate
    from ..toy import MAX_NEW_TOKENS, format_prompt  # the curves probe the default toy task

    prompts = [format_prompt(p.question) for p in problems]

    def probe(policy: Any) -> dict[str, float]:
        gens = generate(
            policy,
            tokenizer,
            prompts,
            temperature=0.0,
            batch_size=256,
            max_new_tokens=MAX_NEW_TOKENS,
            record_logps=False,
        )
        hits = sum(is_correct(g.text, problems[g.prompt_index].gold) for g in gens)
        return {"dev_greedy": hits / len(prompts)}

    return probe


def _expected_steps(method: str, rows: Any, n_prompts: int, tcfg: Any) -> int:
    """Optimiser steps of the run (the example counts of ``train.build_examples``), to space
    the learning-curve probes; SFT has ``rows`` None and one example per prompt."""
    from ..rewards import outcome
    from ..train import dpo_pairs

    if tcfg.max_steps:
        return tcfg.max_steps
    n = {
        "sft": lambda: n_prompts,
        "rft": lambda: sum(outcome(r) == 1.0 for r in rows),
        "dro": lambda: sum(outcome(r) is not None for r in rows),
        "dpo": lambda: len(dpo_pairs(rows, tcfg.dpo_pairs_per_prompt, tcfg.seed)),
    }.get(method, lambda: len(rows))()
    return epoch_steps(n, tcfg)


def epoch_steps(n_examples: int, tcfg: Any) -> int:
    """Optimiser steps of ``tcfg.epochs`` passes over ``n_examples`` (the trainer drops a last
    partial batch), at least 1."""
    return max(1, tcfg.epochs * (n_examples // (tcfg.batch_size * tcfg.grad_accum)))


SIGNALS = ("delta_mean", "log_ratio_mean", "is_weight_mean", "kl_theta_ref")
"""The step metrics :func:`training_signals` summarises: DQO's mean residual δ (V + βρ − target:
the critic's bias against its target when positive), the mean log-ratio of the data's tokens
(below 0: the policy pushes its own samples down), the mean IS weight and the KL to π_ref."""


def training_signals(log: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Of a run's step log: ``second_half`` — each of :data:`SIGNALS` it logs, averaged over
    the second half of the steps (after the value warm-up and the first moves) —, and
    ``delta_curve`` — δ mean per step (4 decimals; DQO only)."""
    late = log[len(log) // 2 :]
    half = {k: statistics.fmean(r[k] for r in late) for k in SIGNALS
            if late and all(k in r for r in late)}  # fmt: skip
    out: dict[str, Any] = {"second_half": half}
    if log and all("delta_mean" in r for r in log):
        out["delta_curve"] = [round(float(r["delta_mean"]), 4) for r in log]
    return out


def job_run(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Train one configuration on its rows (π_ref: nothing to train), then evaluate it.

    Every stage resumes on its own: training from its checkpoints (a finished one is reused when
    its config matches: the seed-0 grid run of a method *is* its chosen tuning run), evaluation
    from its ``outputs.jsonl``, a run without enough data from its ``skipped.json``."""
    from ..evaluate import EvalConfig, evaluate
    from ..models import load_model_and_tokenizer
    from ..rewards import outcome
    from ..tasks import get_task
    from ..toy import load_toy
    from ..train import NotEnoughDataError, TrainConfig, finished_summary, load_rows, train

    run_dir = Path(spec["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    check_run_identity(run_dir / "spec.json", {"config": spec["trained"]})
    t = time.perf_counter()
    ref_model, tok = _reference(spec["reference"])
    record: dict[str, Any] = {}
    model = ref_model
    if spec["method"] != "reference":
        tcfg = TrainConfig(**spec["train"])
        if tcfg.method == "sft":  # gold solutions of the sampled prompts: no sampled rows
            rows = None
            record["data"] = {
                "responses": spec["prompts"],
                "positives": spec["prompts"],
                "gold": True,
            }
        else:
            rows = load_rows(spec["data"])
            rows = rows.select(
                select_rows(
                    rows,
                    spec["rows"],
                    seed=tcfg.seed,
                    positive_keep=spec["positive_keep"],
                    pairs_per_prompt=tcfg.dpo_pairs_per_prompt,
                )
            )
            positives = int(sum(outcome(r) == 1.0 for r in rows))
            record["data"] = {"responses": len(rows), "positives": positives}
        skipped_path = run_dir / "skipped.json"
        if skipped_path.exists():
            return {**record, **json.loads(skipped_path.read_text())}
        summary = finished_summary(tcfg, run_dir / "train")
        if summary is None:
            probe, every = None, 0
            if spec["curve_problems"]:
                probe = _greedy_dev_probe(load_toy("dev", spec["curve_problems"]), tok)
                steps = _expected_steps(tcfg.method, rows, spec["prompts"], tcfg)
                every = max(1, math.ceil(steps / spec["curve_points"]))
            try:
                summary = train(
                    tcfg,
                    run_dir / "train",
                    policy=copy.deepcopy(ref_model),
                    tokenizer=tok,
                    rows=rows,
                    progress=False,
                    probe=probe,
                    probe_every=every,
                    behavior=_behavior_law(spec["data"]) if rows is not None else None,
                )
            except NotEnoughDataError as err:
                skipped = {"skipped": err.reason}
                atomic_write_json(skipped_path, skipped)
                return {**record, **skipped}
        log_lines = (run_dir / "train" / "log.jsonl").read_text().splitlines()
        log = [json.loads(line) for line in log_lines]
        keep = (
            "kl_theta_ref",
            "is_weight_mean",
            "is_clip_rate",
            "value_error",
            "dpo_accuracy",
            "nll",
        )
        record["train"] = {
            "steps": summary["steps"],
            "epochs": tcfg.epochs,
            "tokens": sum(r.get("tokens", 0) for r in log),
            "wall_s": summary["wall_s_this_run"],
            "last": {k: v for k, v in summary["last"].items() if k in keep},
            **training_signals(log),
        }
        record["curve"] = [[r["step"], r["dev_greedy"]] for r in log if "dev_greedy" in r]
        model, _ = load_model_and_tokenizer(str(run_dir / "train" / "policy"), device="cpu")
    elif spec["curve_problems"]:
        probe = _greedy_dev_probe(load_toy("dev", spec["curve_problems"]), tok)
        record["curve"] = [[0, probe(ref_model)["dev_greedy"]]]
    evals = (
        ("dev", spec["dev_problems"], 0),
        ("test", spec["test_problems"], spec["eval_samples"]),
    )
    for split, limit, samples in evals:
        if not limit:
            continue
        ecfg = EvalConfig(
            model=spec["label"],
            task=spec["task"],
            split=split,
            limit=limit,
            num_samples=samples,
            batch_size=256,
            seed=spec["seed"],
            max_new_tokens=get_task(spec["task"]).max_new_tokens,
        )
        res = evaluate(ecfg, run_dir / f"eval-{split}", model=model, tokenizer=tok, progress=False)
        record[split] = _accuracy(res) | {"hits": _hits(run_dir / f"eval-{split}", limit, samples)}
    record["wall_s"] = time.perf_counter() - t
    return record


@dataclass
class Job:
    name: str
    cost: float  # a rough estimate in seconds: longest first
    deps: tuple[str, ...]
    make: Callable[[Mapping[str, Any]], tuple[Callable[..., Any], tuple[Any, ...]]]


def schedule(jobs: Sequence[Job], workers: int, say: Callable[[str], None]) -> dict[str, Any]:
    """Run ``jobs`` respecting ``deps``; returns their results by name.

    Among the ready jobs the one heading the costliest chain of dependents goes first (critical
    path: a dataset before the runs that wait for it, long trainings before short ones)."""
    done: dict[str, Any] = {}
    pending = {j.name: j for j in jobs}
    dependents: dict[str, list[str]] = {name: [] for name in pending}
    for j in jobs:
        for d in j.deps:
            dependents.setdefault(d, []).append(j.name)
    chain: dict[str, float] = {}

    def priority(name: str) -> float:
        if name not in chain:
            later = [priority(c) for c in dependents[name]]
            chain[name] = pending[name].cost + max(later, default=0.0)
        return chain[name]

    for name in pending:
        priority(name)
    running: dict[Future, str] = {}
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = get_context("spawn")
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_worker_init, initargs=(threads,)
    ) as pool:
        while pending or running:
            ready = sorted(
                (j for j in pending.values() if all(d in done for d in j.deps)),
                key=lambda j: -chain[j.name],
            )
            for j in ready[: workers - len(running)]:
                fn, args = j.make(done)
                running[pool.submit(fn, *args)] = j.name
                del pending[j.name]
            if not running:
                raise RuntimeError(f"jobs with unmet dependencies: {sorted(pending)}")
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                name = running.pop(fut)
                done[name] = fut.result()  # a failed job stops the experiment (resumable)
                say(f"{len(done)}/{len(jobs)} {name}")
    return done
