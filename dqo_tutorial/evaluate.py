r"""Evaluation (GSM8K, MATH or the toy task): greedy and sampling accuracy, strict and flexible,
invalid-format rate.

For each problem the model answers the task's prompt (:mod:`dqo_tutorial.tasks`; for GSM8K
:func:`~dqo_tutorial.gsm8k.format_prompt`):

- **greedy accuracy**: one greedy response per problem;
- **sampling accuracy**: k responses at temperature τ (method §10: τ = 1), the mean over the k
  samples and the problems (an estimate of the expected accuracy of the sampling policy, not
  pass@k).

Each response is graded by the task's ``is_correct`` in both modes of its ``extract_answer``
(GSM8K: :func:`~dqo_tutorial.gsm8k.extract_answer`; MATH: the last ``\boxed{}``): ``strict``
(the last ``#### N``) and ``flexible`` (else the last number). A response with no strict answer
counts towards the **invalid-format rate**. Every accuracy comes with its standard error
√(p(1 − p)/n) over the n graded responses (binomial; the k samples of one problem are not
independent, so for sampling accuracy it is a lower bound).

:func:`evaluate` writes ``outputs.jsonl`` (one line per response: problem, mode, text, extracted
answers, correctness) as it goes, resumes from it after an interruption, and ends with
``results.json`` holding the model, prompt template, decoding settings and dataset hash.

**Several processes** (``torchrun`` / ``accelerate launch``, see
:class:`~dqo_tutorial.processes.Processes`): the problems are cut into chunks of
``batch_size``, the unit of resume. Sample j of problem i is drawn from the stream of
``(seed, i, j)`` (the decode loop's ``stream_ids``) and each chunk's records are written problem
by problem, so neither the process that draws a chunk nor the batch size changes a byte of
``outputs.jsonl`` (with the ``generate`` engine the responses depend on the batch size: it draws
one stream per batch). Of the chunks still missing the
process of rank r takes every W-th from the r-th; it writes each finished chunk atomically to
``chunks/chunk-NNNNN.jsonl``. The main process alone holds the folder's lock, checks the run
identity, appends the chunk files to ``outputs.jsonl`` in chunk order as soon as there is no gap
(deleting each once appended and synced), shows the progress bar and writes ``results.json``:
the files are those of one process, and a resume — with any number of processes — keeps the
complete chunks of ``outputs.jsonl`` and the chunk files, and redoes only the rest. One process
runs the same path (W = 1).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .artifacts import atomic_write_json, check_run_identity, run_lock
from .configs import EvalConfig, run_manifest
from .errors import DataError, MismatchError
from .gsm8k import MODES, dataset_hash
from .models import check_reads_task, load_model_and_tokenizer, load_tokenizer
from .problems import Problem
from .processes import Processes
from .sampling import Sampler, generate, make_sampler
from .tasks import get_task

__all__ = ["EvalConfig", "grade", "accuracy_table", "check_trained_for_task", "evaluate"]


def grade(text: str, gold: str, task: str = "gsm8k") -> dict[str, Any]:
    """Extracted answers and correctness of one response in both modes, by ``task``'s rules."""
    rules = get_task(task)
    out: dict[str, Any] = {}
    for mode in MODES:
        out[f"answer_{mode}"] = rules.extract_answer(text, mode)
        out[f"correct_{mode}"] = rules.is_correct(text, gold, mode)
    out["invalid"] = out["answer_strict"] is None
    return out


def _rate(flags: Sequence[bool]) -> dict[str, float]:
    n = len(flags)
    p = sum(flags) / n if n else float("nan")
    return {"mean": p, "stderr": math.sqrt(p * (1 - p) / n) if n else float("nan"), "n": n}


def accuracy_table(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """``{decoding: {"strict"|"flexible"|"invalid": {mean, stderr, n}}}`` from output records."""
    by: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by.setdefault(r["decoding"], []).append(r)
    table = {}
    for decoding, rows in sorted(by.items()):
        table[decoding] = {m: _rate([r[f"correct_{m}"] for r in rows]) for m in MODES}
        table[decoding]["invalid"] = _rate([r["invalid"] for r in rows])
    return table


def _read_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut by an interruption: everything after it is redone
    return records


def _chunk_records(
    cfg: EvalConfig,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    problems: Sequence[Problem],
    chunk: int,
    sampler: Sampler | None = None,
) -> list[dict[str, Any]]:
    prompts = [get_task(cfg.task).format_prompt(p.question, tokenizer) for p in problems]
    passes = []
    if cfg.greedy:
        passes.append(("greedy", dict(num_samples=1, temperature=0.0)))
    if cfg.num_samples:
        passes.append(
            (
                "sampling",
                dict(num_samples=cfg.num_samples, temperature=cfg.temperature, top_p=cfg.top_p),
            )
        )
    records = []
    for decoding, law in passes:
        gens = generate(
            model,
            tokenizer,
            prompts,
            max_new_tokens=cfg.max_new_tokens,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
            stream_ids=[p.index for p in problems],  # a problem's draws: not its chunk's
            record_logps=False,  # accuracy needs no log μ
            sampler=sampler
            or make_sampler(model, tokenizer, cfg.batch_size, cfg.engine, cfg.kv_cache),
            **law,
        )
        for g in gens:
            problem = problems[g.prompt_index]
            records.append(
                {
                    "problem_index": problem.index,
                    "decoding": decoding,
                    "sample_index": g.sample_index,
                    "gold": problem.gold,
                    "response": g.text,
                    "finished": g.finished,
                    "response_tokens": len(g.response_ids),
                    **grade(g.text, problem.gold, cfg.task),
                }
            )
    place = {p.index: n for n, p in enumerate(problems)}  # problem by problem, greedy first
    return sorted(records, key=lambda r: place[r["problem_index"]])


def evaluate(
    cfg: EvalConfig,
    out_dir: str | os.PathLike[str],
    *,
    model: PreTrainedModel | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    progress: bool = True,
    sampler: Sampler | None = None,
) -> dict[str, Any]:
    """Evaluate ``cfg.model`` on GSM8K and write ``outputs.jsonl`` and ``results.json``.

    ``sampler``: the :class:`~dqo_tutorial.sampling.Sampler` that writes the responses (default:
    Hugging Face ``generate`` of the model; with a sampler only ``cfg.model``'s tokenizer loads).

    Problems are processed in chunks of ``cfg.batch_size``; each chunk's records are appended to
    ``outputs.jsonl`` (synced) when complete, so a rerun with the same configuration skips the
    chunks already there. Under several processes each evaluates its share of the chunks (see
    the module docstring) and the files are those of one process. ``model``/``tokenizer``: an
    already loaded pair (``cfg.model`` then only labels the results). Returns the results
    dictionary (on every process).
    """
    start = time.perf_counter()
    out = Path(out_dir)
    task = get_task(cfg.task)
    problems = task.load(cfg.split, cfg.data_source, cfg.limit)
    if not problems:
        raise DataError(
            f"EvalConfig: the {cfg.task} {cfg.split} split (data_source {cfg.data_source!r}) "
            "holds no problems: nothing to evaluate"
        )
    if model is None:
        check_trained_for_task(cfg.model, cfg.task)
    procs = Processes.current()
    with contextlib.ExitStack() as held:  # the main process holds the lock; its error reaches all
        procs.main_first(lambda: held.enter_context(run_lock(out)) and None)
        return _evaluate(cfg, out, problems, model, tokenizer, progress, start, sampler, procs)


def check_trained_for_task(model: str, task: str) -> None:
    """Refuse to evaluate a policy trained by :func:`~dqo_tutorial.train.train` (``…/policy``
    beside its ``train_config.json``) on another task than it was trained for, and the toy
    π_ref on any task but the toy one (:func:`~dqo_tutorial.models.check_reads_task`)."""
    check_reads_task(model, task)
    stored = Path(model).expanduser().parent / "train_config.json"
    if Path(model).name != "policy" or not stored.is_file():
        return
    trained = json.loads(stored.read_text()).get("config", {}).get("task")
    if trained is not None and trained != task:
        raise MismatchError(
            f"{model} was trained on task {trained!r}, not {task!r}: evaluate it with "
            f"--task {trained}"
        )


def _evaluate(
    cfg: EvalConfig,
    out: Path,
    problems: list[Problem],
    model: Any,
    tokenizer: Any,
    progress: bool,
    start: float,
    sampler: Sampler | None,
    procs: Processes,
) -> dict[str, Any]:
    """:func:`evaluate` once the problems have loaded, inside the folder's lock."""
    task = get_task(cfg.task)
    data_hash = dataset_hash(problems)
    sizes = [len(problems[f : f + cfg.batch_size]) for f in range(0, len(problems), cfg.batch_size)]
    per_problem = int(cfg.greedy) + cfg.num_samples
    n_next, n_kept, missing = procs.main_first(lambda: _resume_point(out, sizes, per_problem))
    mine = missing[procs.rank :: procs.world]
    if mine and sampler is not None and tokenizer is None:
        tokenizer = load_tokenizer(cfg.model)  # the sampler holds its own model
    elif mine and model is None and sampler is None:
        device = cfg.device if procs.world == 1 else procs.device
        model, tokenizer = load_model_and_tokenizer(cfg.model, device=device, dtype=cfg.dtype)
    identity = {
        "config": asdict(cfg),
        "dataset_hash": data_hash,
        "prompt_template_version": task.prompt_template_version,
    }
    # the inputs have loaded: check the identity before any output is rewritten or written
    n_next = procs.main_first(lambda: _start_outputs(out, identity, n_kept, n_next, len(sizes)))

    gen_start = time.perf_counter()
    done = len(problems) - sum(sizes[c] for c in missing)
    bar = tqdm(
        total=len(problems),
        initial=done,
        unit="problem",
        desc="eval",
        disable=not (progress and procs.main),
    )
    with bar:
        for c in mine:
            first = c * cfg.batch_size
            chunk = problems[first : first + cfg.batch_size]
            _save_chunk(out, c, _chunk_records(cfg, model, tokenizer, chunk, c, sampler))
            if procs.main:
                n_next = _absorb(out, n_next, len(sizes))
                bar.update(_problems_done(out, n_next, sizes) - bar.n)
        procs.barrier()  # every chunk file is on disk
        bar.update(len(problems) - bar.n)
    return procs.main_first(
        lambda: _write_results(cfg, out, data_hash, sizes, n_next, start, gen_start)
    )


def _chunk_path(out: Path, chunk: int) -> Path:
    """Where the records of ``chunk`` wait until the main process appends them."""
    return out / "chunks" / f"chunk-{chunk:05d}.jsonl"


def _resume_point(out: Path, sizes: Sequence[int], per_problem: int) -> tuple[int, int, list[int]]:
    """``(n, kept, missing)``: ``outputs.jsonl`` holds the first n chunks complete in its first
    ``kept`` records (a cut-off tail is redone); ``missing``: the chunks after them that have no
    chunk file either, to evaluate."""
    records = _read_records(out / "outputs.jsonl")
    n = kept = 0
    while n < len(sizes) and len(records) >= kept + sizes[n] * per_problem:
        kept, n = kept + sizes[n] * per_problem, n + 1
    return n, kept, [c for c in range(n, len(sizes)) if not _chunk_path(out, c).is_file()]


def _start_outputs(out: Path, identity: dict[str, Any], kept: int, n: int, n_chunks: int) -> int:
    """Check the run identity, cut ``outputs.jsonl`` to its ``kept`` records (the first ``n``
    chunks) and append the chunk files that follow; returns the next chunk it lacks."""
    check_run_identity(out / "eval_config.json", identity)
    outputs = out / "outputs.jsonl"
    if outputs.exists():  # rewrite the complete chunks (drops a cut-off tail)
        records = _read_records(outputs)[:kept]
        tmp = outputs.with_name(f".{outputs.name}.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
        os.replace(tmp, outputs)
    return _absorb(out, n, n_chunks)


def _save_chunk(out: Path, chunk: int, records: Sequence[dict[str, Any]]) -> None:
    """``chunk``'s records as JSON lines, through a synced temporary file and a rename."""
    path = _chunk_path(out, chunk)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _absorb(out: Path, n: int, n_chunks: int) -> int:
    """Append to ``outputs.jsonl`` the chunk files of chunks n, n + 1, … up to the first gap, in
    chunk order (main process only); returns the first chunk not appended."""
    while n < n_chunks and (path := _chunk_path(out, n)).is_file():
        with (out / "outputs.jsonl").open("a") as f:
            f.write(path.read_text())
            f.flush()
            os.fsync(f.fileno())
        path.unlink()  # after the sync: a crash in between leaves a copy that a resume skips
        n += 1
    return n


def _problems_done(out: Path, n: int, sizes: Sequence[int]) -> int:
    """Problems in ``outputs.jsonl`` (its first n chunks) and in the chunk files after it."""
    waiting = sum(sizes[c] for c in range(n, len(sizes)) if _chunk_path(out, c).is_file())
    return sum(sizes[:n]) + waiting


def _write_results(
    cfg: EvalConfig,
    out: Path,
    data_hash: str,
    sizes: Sequence[int],
    n: int,
    start: float,
    gen_start: float,
) -> dict[str, Any]:
    """The last chunk files appended, ``chunks/`` removed, ``results.json`` from
    ``outputs.jsonl`` (main process only)."""
    if (n := _absorb(out, n, len(sizes))) < len(sizes):
        raise DataError(f"{out}: chunk {n} has no records: rerun to evaluate it")
    shutil.rmtree(out / "chunks", ignore_errors=True)  # with any temporary file left by a crash
    records = _read_records(out / "outputs.jsonl")
    results = {
        **run_manifest(cfg, data_hash, sum(sizes)),
        "accuracy": accuracy_table(records),
        "length_cut_share": sum(not r["finished"] for r in records) / max(len(records), 1),
        "mean_response_tokens": sum(r["response_tokens"] for r in records) / max(len(records), 1),
        "timing": {
            "generation_s_this_run": time.perf_counter() - gen_start,
            "wall_s_this_run": time.perf_counter() - start,
        },
    }
    atomic_write_json(out / "results.json", results)
    return results


def clustered_rate(per_problem: Sequence[Sequence[float]]) -> dict[str, float]:
    r"""Accuracy over N problems with several graded samples each, and its standard error
    **clustered by problem**: the samples of one problem are not independent, the problems are.

    .. math::  m_i = \frac1{k_i}\sum_j c_{ij}, \qquad \bar m = \frac1N\sum_i m_i, \qquad
               \mathrm{s.e.} = \sqrt{\frac{1}{N}\cdot\frac1N\sum_i (m_i - \bar m)^2}

    (the plug-in variance, as the binomial √(p(1 − p)/n) of :func:`accuracy_table`: with one
    sample per problem the two agree exactly). ``{"mean", "stderr", "n"}`` with n = N problems;
    NaN for no problem."""
    means = [sum(map(float, outcomes)) / len(outcomes) for outcomes in per_problem]
    n = len(means)
    if not n:
        return {"mean": float("nan"), "stderr": float("nan"), "n": 0}
    mean = sum(means) / n
    var = sum((m - mean) ** 2 for m in means) / n
    return {"mean": mean, "stderr": math.sqrt(var / n), "n": n}


def paired_difference(
    per_problem_a: Sequence[Sequence[float]], per_problem_b: Sequence[Sequence[float]]
) -> dict[str, float]:
    r"""Accuracy difference of two models graded on the **same** N problems, with its paired
    standard error (from the per-problem differences, so what the two share cancels).

    .. math::  d_i = m^A_i - m^B_i, \qquad \bar d = \frac1N\sum_i d_i, \qquad
               \mathrm{s.e.} = \sqrt{\frac{1}{N}\cdot\frac1N\sum_i (d_i - \bar d)^2}
               = \sqrt{\mathrm{se}_A^2 + \mathrm{se}_B^2 - 2\,\widehat{\mathrm{cov}}(m^A, m^B)/N}

    with m_i the mean of problem i's samples (one for greedy decoding) and plug-in moments as in
    :func:`clustered_rate`. ``hypot(se_A, se_B)`` is the special case of uncorrelated models;
    two models that solve and fail the same problems have a smaller paired s.e. ``{"mean",
    "stderr", "n"}``."""
    if len(per_problem_a) != len(per_problem_b):
        raise ValueError(
            f"paired_difference needs the same problems: {len(per_problem_a)} vs "
            f"{len(per_problem_b)}"
        )
    diffs = [
        sum(map(float, a)) / len(a) - sum(map(float, b)) / len(b)
        for a, b in zip(per_problem_a, per_problem_b)
    ]
    return clustered_rate([[d] for d in diffs])


def per_problem_outcomes(
    records: Iterable[dict[str, Any]], decoding: str, mode: str = "strict"
) -> list[list[bool]]:
    """The graded outcomes of ``decoding`` ("greedy" or "sampling") grouped by problem, in
    ``problem_index`` order: the input of :func:`clustered_rate` and :func:`paired_difference`."""
    by: dict[int, list[bool]] = {}
    for r in records:
        if r["decoding"] == decoding:
            by.setdefault(int(r["problem_index"]), []).append(bool(r[f"correct_{mode}"]))
    return [by[i] for i in sorted(by)]
