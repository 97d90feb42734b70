"""The Python side of benchmarks/gsm8k_gpu_full.sh (the full GSM8K comparison in one GPU call).

    python benchmarks/gsm8k_full_report.py select  --run RUN
    python benchmarks/gsm8k_full_report.py plan    --run RUN --config C --remaining S [--limit N]
    python benchmarks/gsm8k_full_report.py variant --run RUN --config C --lam 0.95 [--limit N]
    python benchmarks/gsm8k_full_report.py report  --run RUN --out OUT

(``plan`` and ``variant`` take ``--smoke`` too, as ``dqo-tutorial run`` does.)

``select``: the SFT budget of π_ref — the candidate (``RUN/sft-select/e1``: one epoch on train
minus its last 256 problems; ``e2``: one more epoch from e1) with the better greedy strict
accuracy on those 256 held-out problems (tie: the lower invalid rate, then fewer epochs); writes
``choice.json`` and prints the chosen name.

``plan``: measures the decode loop on π_ref at the sampling batch size (two short decodes of
one shard; their difference is the per-step time), reads the trainer's SFT tokens/s from e1's
log, projects the pipeline's seconds for the full train split and for cuts of it (its first N
problems, N a multiple of ``shard_size``), and prints the largest N whose projection fits the
``--remaining`` seconds ("full" for the whole split; ``TRAIN_LIMIT`` in the environment forces
one); writes ``plan.json``. The test split is never cut.

``variant``: DQO with another λ, trained on the pipeline's dataset with the pipeline's own train
section (only ``lam`` differs) and evaluated with its eval section — the pipeline names methods
by registered name, one variant each, so a second DQO cannot be a config entry.

``report``: gathers into OUT (at most 8 files, well under 64 MiB) ``gsm8k_full_results.json``
(every accuracy: greedy and sampling, strict and flexible, invalid rate, standard errors, paired
differences; per-phase wall times; dataset statistics; the SFT choice; the plan; the
environment), ``gsm8k_full_results.md``, ``train_logs.tar.gz``, ``eval_outputs.tar.gz`` and
``results.png``; it reads whatever stages finished, so a run stopped by its deadline still
reports.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

SELECT_DIR = "sft-select"
PIPELINE_DIR = "pipeline"
VARIANTS_DIR = "variants"
MAX_FILE_BYTES = 15 * 2**20  # the device returns files of at most 16 MiB each


def _read(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _write(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def _last_log_line(log: Path) -> dict[str, Any]:
    lines = log.read_text().splitlines() if log.is_file() else []
    return json.loads(lines[-1]) if lines else {}


def pipeline_config(path: str, limit: int | None, smoke: bool) -> Any:
    """The configuration ``dqo-tutorial run --config path [--limit N] [--smoke]`` runs (the same
    overrides as the command line's ``run``)."""
    from dqo_tutorial.pipeline import SMOKE, load_config

    overrides: dict[str, Any] = dict(SMOKE) if smoke else {}
    if limit is not None:
        for section in ("sample", "eval"):
            overrides[section] = {**overrides.get(section, {}), "limit": limit}
    return load_config(path, overrides=overrides)


# --------------------------------------------------------------------------------------------
# select: π_ref's SFT budget
# --------------------------------------------------------------------------------------------


def select(run: Path) -> str:
    """The better SFT candidate on the held-out slice (module docstring); writes choice.json."""
    candidates = {}
    for name in ("e1", "e2"):
        res = _read(run / SELECT_DIR / f"{name}-heldout" / "results.json")
        if res is not None:
            greedy = res["accuracy"]["greedy"]
            candidates[name] = {
                "epochs": int(name[1:]),
                "heldout_strict": greedy["strict"],
                "heldout_flexible": greedy["flexible"],
                "heldout_invalid": greedy["invalid"],
                "mean_response_tokens": res["mean_response_tokens"],
                "length_cut_share": res["length_cut_share"],
                "problems": res["data"]["num_problems"],
            }
    if not candidates:
        raise SystemExit(f"select: no held-out results under {run / SELECT_DIR}")

    def key(name: str) -> tuple[float, float, int]:
        c = candidates[name]
        return (c["heldout_strict"]["mean"], -c["heldout_invalid"]["mean"], -c["epochs"])

    chosen = max(candidates, key=key)
    _write(
        run / SELECT_DIR / "choice.json",
        {
            "rule": "max greedy strict accuracy on the held-out slice; tie: lower invalid rate, "
            "then fewer epochs",
            "candidates": candidates,
            "chosen": chosen,
        },
    )
    return chosen


# --------------------------------------------------------------------------------------------
# plan: a measured decode step, the projection, the train-split cut
# --------------------------------------------------------------------------------------------


def _timed_decode(sampler: Any, prompt_ids: list, k: int, tokens: int) -> float:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t = time.perf_counter()
    sampler.sample(prompt_ids, num_samples=k, temperature=1.0, top_p=1.0,
                   max_new_tokens=tokens, seed=0, record_logps=False)  # fmt: skip
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t


def probe_decode(cfg: Any, short: int, long: int) -> dict[str, Any]:
    """Per-step and fixed (prefill, setup) seconds of one shard's decode batch: two decodes of
    ``short`` and ``long`` new tokens, after a tiny warm-up; also the prompts' token counts."""
    from dqo_tutorial.decoding import DecodeSampler
    from dqo_tutorial.models import load_model_and_tokenizer
    from dqo_tutorial.tasks import get_task

    scfg = cfg.sampling_config()
    task = get_task(cfg.task)
    model, tok = load_model_and_tokenizer(cfg.reference_model, device=scfg.device, dtype=scfg.dtype)
    problems = task.load(scfg.split, scfg.data_source, scfg.limit)
    ids = [tok(task.format_prompt(p.question, tok), add_special_tokens=False)["input_ids"]
           for p in problems]  # fmt: skip
    gold = [
        len(tok(task.gold_solution(p), add_special_tokens=False)["input_ids"]) for p in problems
    ]
    shard = ids[: scfg.shard_size]
    sampler = DecodeSampler(model, tok, scfg.batch_size)
    _timed_decode(sampler, shard[:2], 2, 2)  # warm-up: kernels, allocator
    t_short = _timed_decode(sampler, shard, scfg.num_samples, short)
    t_long = _timed_decode(sampler, shard, scfg.num_samples, long)
    step = max(t_long - t_short, 1e-6) / (long - short)
    return {
        "rows": len(shard) * scfg.num_samples,
        "new_tokens": [short, long],
        "seconds": [t_short, t_long],
        "step_s": step,
        "fixed_s": max(t_short - short * step, 0.0),
        "device": str(model.device),
        "train_problems": len(problems),
        "prompt_tokens_mean": sum(map(len, ids)) / len(ids),
        "gold_tokens_total": sum(gold) + sum(map(len, ids)),
    }


def project(cfg: Any, probe: dict, r_sft: float, resp: float, cut: float, n: int) -> dict:
    """Projected seconds of the pipeline on the first ``n`` train problems (upper bounds where
    they can be: every decode batch runs to the token budget at the measured full-batch step).

    Training rates from the measured SFT tokens/s: DQO trains two models (r/2), DRO a policy
    and a prompt-only value (r/1.2); the reference pass before DPO/DRO/DQO is a forward (3r).
    RFT and DPO are taken as 5 % of the responses (their positives are unknown beforehand)."""
    scfg, methods = cfg.sampling_config(), cfg.methods
    ecfg = cfg.eval_config("x")
    rows = n * scfg.num_samples
    row_tokens = probe["prompt_tokens_mean"] + resp
    batch = probe["fixed_s"] + scfg.max_new_tokens * probe["step_s"]
    shards = math.ceil(n / scfg.shard_size)
    passes = int(ecfg.greedy) + (1 if ecfg.num_samples else 0)
    eval_batches = math.ceil((ecfg.limit or 1319) / ecfg.batch_size) * passes
    eval_batch = probe["fixed_s"] + ecfg.max_new_tokens * probe["step_s"]
    tokens = {
        "dqo": rows * row_tokens,
        "dro": rows * (1 - cut) * row_tokens,
        "rft": 0.05 * rows * row_tokens,
        "dpo": 0.05 * rows * row_tokens,
        "sft": probe["gold_tokens_total"] * n / max(probe["train_problems"], 1),
    }
    slow = {"dqo": 2.0, "dro": 1.2}
    train = {m: tokens[m] * slow.get(m, 1.0) / r_sft + 15.0 for m in methods}
    for m in set(methods) & {"dpo", "dro", "dqo"}:
        train[m] += tokens[m] / (3 * r_sft)
    phases = {
        "load": 10.0,
        "sample": shards * batch + rows * row_tokens / (3 * r_sft),
        "eval (each model)": eval_batches * eval_batch + 8.0,
        **{f"train {m}": s for m, s in train.items()},
    }
    total = phases["load"] + phases["sample"] + sum(train.values())
    total += (1 + len(methods)) * phases["eval (each model)"]
    return {"train_problems": n, "phases_s": phases, "total_s": total}


def _cut_candidates(full: int, shard: int) -> list[int]:
    """The whole split, then every multiple of ``shard`` below it, largest first."""
    return [full] + list(range((full - 1) // shard * shard, 0, -shard))


def plan(run: Path, cfg: Any, remaining: float, smoke: bool, safety: float = 1.15) -> str:
    """The train-split size to run (module docstring); writes plan.json; returns "full" or N."""
    short, long = (2, 6) if smoke else (8, 40)
    probe = probe_decode(cfg, short, long)
    choice = _read(run / SELECT_DIR / "choice.json") or {"chosen": "e1", "candidates": {}}
    chosen = choice["candidates"].get(choice["chosen"], {})
    resp = chosen.get("mean_response_tokens", 220.0)  # the pilot's π_ref: 220
    cut = chosen.get("length_cut_share", 0.22)
    r_sft = _last_log_line(run / SELECT_DIR / "e1" / "log.jsonl").get("tokens_per_s", 20100.0)
    full = probe["train_problems"]
    options = [project(cfg, probe, r_sft, resp, cut, n)
               for n in _cut_candidates(full, cfg.sampling_config().shard_size)]  # fmt: skip
    forced = os.environ.get("TRAIN_LIMIT")
    if forced:
        n = min(int(forced), full)
    else:
        fits = [o for o in options if o["total_s"] * safety <= remaining]
        n = (fits[0] if fits else options[-1])["train_problems"]
    _write(
        run / "plan.json",
        {
            "remaining_s": remaining,
            "safety_factor": safety,
            "forced_train_limit": forced or None,
            "probe": probe,
            "sft_tokens_per_s": r_sft,
            "response_tokens_assumed": resp,
            "length_cut_share_assumed": cut,
            "options": options,
            "train_problems": n,
            "cut": n < full,
        },
    )
    return "full" if n >= full else str(n)


# --------------------------------------------------------------------------------------------
# variant: DQO with another λ on the pipeline's data
# --------------------------------------------------------------------------------------------


def variant(run: Path, cfg: Any, lam: float) -> dict[str, Any]:
    """Train and evaluate DQO with ``lam`` (all else the pipeline's); RUN/variants/dqo-lam…/."""
    from dqo_tutorial.artifacts import atomic_write_json
    from dqo_tutorial.evaluate import evaluate
    from dqo_tutorial.train import finished_summary, train

    data = run / PIPELINE_DIR / "data"
    tcfg = dataclasses.replace(cfg.train_config("dqo", str(data)), lam=lam)
    out = run / VARIANTS_DIR / f"dqo-lam{lam:g}"
    t = time.perf_counter()
    summary = finished_summary(tcfg, out / "train") or train(tcfg, out / "train")
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    res = evaluate(cfg.eval_config(str(out / "train" / "policy")), out / "eval")
    result = {
        "name": f"dqo (λ={lam:g})",
        "lam": lam,
        "train_steps": summary["steps"],
        "train_s": summary["wall_s_this_run"],
        "stage_s": {"train": train_s, "eval": time.perf_counter() - t},
        "result": res,
    }
    atomic_write_json(out / "result.json", result)
    return result


# --------------------------------------------------------------------------------------------
# report: everything into OUT
# --------------------------------------------------------------------------------------------


def _model_entry(res: dict, summary: dict | None) -> dict[str, Any]:
    """One evaluated model: every accuracy with its standard error, lengths, times."""
    entry = {
        "accuracy": res["accuracy"],
        "mean_response_tokens": res.get("mean_response_tokens"),
        "length_cut_share": res.get("length_cut_share"),
        "eval_s": res.get("timing", {}).get("wall_s_this_run"),
        "model": res.get("model"),
    }
    if summary is not None:
        entry |= {
            "train_steps": summary["steps"],
            "train_examples": summary.get("num_examples"),
            "train_s": summary["wall_s_this_run"],
            "train_last": summary.get("last", {}),
            "mixed_precision": summary.get("mixed_precision"),
        }
    return entry


def _models(run: Path) -> tuple[dict[str, dict], dict[str, Path]]:
    """Every model's entry (the reference, the pipeline's methods in order, the variants) and
    the outputs.jsonl each was graded from; a method that has no results yet is marked."""
    pipe = run / PIPELINE_DIR
    final = _read(pipe / "results.json") or {}
    methods = (_read(pipe / "pipeline_config.json") or {}).get("config", {}).get("methods", [])
    models: dict[str, dict] = {}
    outputs: dict[str, Path] = {}
    for name in ["reference", *methods]:
        res = _read(pipe / "eval" / name / "results.json")
        if "skipped" in final.get("results", {}).get(name, {}):
            models[name] = {"skipped": final["results"][name]["skipped"]}
        elif res is None:
            models[name] = {"not_reached": "no evaluation (deadline, skipped or failed: run.log)"}
        else:
            summary = _read(pipe / "train" / name / "train_summary.json")
            models[name] = _model_entry(res, summary)
            outputs[name] = pipe / "eval" / name / "outputs.jsonl"
    for path in sorted((run / VARIANTS_DIR).glob("*/result.json")):
        v = _read(path)
        summary = _read(path.parent / "train" / "train_summary.json")
        models[v["name"]] = _model_entry(v["result"], summary)
        outputs[v["name"]] = path.parent / "eval" / "outputs.jsonl"
    return models, outputs


def _paired(outputs: dict[str, Path]) -> list[dict[str, Any]]:
    """Paired differences (same test problems) of every model against π_ref and against DQO,
    greedy and sampling, strict; ``beyond_2se``: |Δ| > 2 paired standard errors."""
    from dqo_tutorial.evaluate import paired_difference, per_problem_outcomes

    records = {}
    for name, path in outputs.items():
        if path.is_file():
            records[name] = [json.loads(line) for line in path.read_text().splitlines() if line]
    rows = []
    for base in ("reference", "dqo"):
        for name in records:
            if name == base or base not in records or (base == "dqo" and name == "reference"):
                continue
            for decoding in ("greedy", "sampling"):
                a = per_problem_outcomes(records[name], decoding)
                b = per_problem_outcomes(records[base], decoding)
                if not a or len(a) != len(b):
                    continue
                d = paired_difference(a, b)
                rows.append({"model": name, "minus": base, "decoding": decoding, **d,
                             "beyond_2se": abs(d["mean"]) > 2 * d["stderr"]})  # fmt: skip
    return rows


def _phases(run: Path) -> list[dict[str, Any]]:
    """The script's phases (phases.tsv: name, seconds or 'skipped', status)."""
    path = run / "phases.tsv"
    rows = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        name, seconds, status = (line.split("\t") + ["", ""])[:3]
        rows.append({"phase": name, "seconds": _number(seconds), "status": status})
    return rows


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def _stages(run: Path, models: dict[str, dict]) -> dict[str, float]:
    """The pipeline's stage seconds: its own record when it finished, else each stage's."""
    pipe = run / PIPELINE_DIR
    final = _read(pipe / "results.json")
    if final is not None:
        return final["stage_s_this_run"]
    stages = {}
    manifest = _read(pipe / "data" / "manifest.json")
    if manifest is not None:
        stages["sample"] = manifest["timing"]["wall_time_s_this_run"]
    for name, m in models.items():
        if "train_s" in m:
            stages[f"train {name}"] = m["train_s"]
        if m.get("eval_s") is not None:
            stages[f"eval {name}"] = m["eval_s"]
    return stages


def environment() -> dict[str, Any]:
    """Versions and the device (GPU name, memory, driver) the run used."""
    import importlib.metadata as md

    import torch

    env: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "cuda": torch.version.cuda}  # fmt: skip
    for pkg in ("transformers", "accelerate", "datasets", "tokenizers", "safetensors", "gguf"):
        try:
            env[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            env[pkg] = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env |= {"device": props.name, "device_memory_mib": props.total_memory // 2**20}
        try:
            query = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                     "--format=csv,noheader"]  # fmt: skip
            env["nvidia_smi"] = subprocess.run(query, capture_output=True, text=True,
                                               timeout=20).stdout.strip()  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            env["nvidia_smi"] = None
    else:
        env |= {"device": "cpu", "cpu_threads": torch.get_num_threads(), "cpus": os.cpu_count()}
    return env


def _pct(r: dict | None, se: bool = True) -> str:
    if not r:
        return "–"
    return f"{r['mean']:.2%} ± {r['stderr']:.2%}" if se else f"{r['mean']:.2%}"


def table(models: dict[str, dict], paired: list[dict]) -> str:
    """Markdown: per model, greedy and sampling accuracy (strict ± s.e., flexible), invalid
    rates, the paired greedy/sampling difference to π_ref (± s.e.; * beyond 2 s.e.), times."""
    delta = {(p["model"], p["decoding"]): p for p in paired if p["minus"] == "reference"}

    def diff(name: str, decoding: str) -> str:
        p = delta.get((name, decoding))
        if p is None:
            return "–"
        return f"{p['mean']:+.2%} ± {p['stderr']:.2%}{' *' if p['beyond_2se'] else ''}"

    lines = [
        "| model | greedy strict | greedy flexible | sampling strict | sampling flexible "
        "| invalid (greedy / sampling) | Δ greedy vs π_ref | Δ sampling vs π_ref "
        "| train steps | train s | eval s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in models.items():
        if "accuracy" not in m:
            why = m.get("skipped") or m.get("not_reached")
            lines.append(f"| {name} | {why} |" + " |" * 10)
            continue
        g, s = m["accuracy"].get("greedy", {}), m["accuracy"].get("sampling", {})
        invalid = f"{_pct(g.get('invalid'), False)} / {_pct(s.get('invalid'), False)}"
        steps = m.get("train_steps", "–")
        train_s = f"{m['train_s']:.0f}" if "train_s" in m else "–"
        eval_s = f"{m['eval_s']:.0f}" if m.get("eval_s") is not None else "–"
        lines.append(
            f"| {name} | {_pct(g.get('strict'))} | {_pct(g.get('flexible'), False)} "
            f"| {_pct(s.get('strict'))} | {_pct(s.get('flexible'), False)} | {invalid} "
            f"| {diff(name, 'greedy')} | {diff(name, 'sampling')} | {steps} | {train_s} "
            f"| {eval_s} |"
        )
    return "\n".join(lines)


_SKIP_DIRS = {"checkpoints", "policy", "trackers", "shards", "dataset", "smollm2-bf16"}
_SKIP_FILES = {"fit.jsonl", "heldout.jsonl"}  # slices of the carried train split, rebuilt at will


def _files(run: Path, logs: bool, out: Path) -> list[Path]:
    """Small text files of the run (logs: every json/jsonl/tsv/yaml but the eval outputs;
    else: the eval outputs), outside model, checkpoint and dataset folders and ``out``."""
    found = []
    for path in sorted(run.rglob("*")):
        if not path.is_file() or _SKIP_DIRS & set(path.relative_to(run).parts[:-1]):
            continue
        if path.resolve().is_relative_to(out.resolve()):
            continue
        if path.name in _SKIP_FILES:
            continue
        if path.name == "outputs.jsonl":
            found += [] if logs else [path]
        elif logs and path.suffix in (".json", ".jsonl", ".tsv", ".yaml", ".md"):
            found.append(path)
    return found


def _tar(run: Path, files: list[Path], dest: Path) -> dict[str, Any]:
    with tarfile.open(dest, "w:gz") as tar:
        for f in files:
            tar.add(f, arcname=str(f.relative_to(run)))
    size = dest.stat().st_size
    if size > MAX_FILE_BYTES:  # would not come back: say so instead
        dest.unlink()
        return {"file": dest.name, "dropped": f"{size} bytes > {MAX_FILE_BYTES}"}
    return {"file": dest.name, "bytes": size, "members": len(files)}


def report(run: Path, out: Path) -> dict[str, Any]:
    """Write the report files into ``out`` (module docstring); returns the results dict."""
    out.mkdir(parents=True, exist_ok=True)
    models, outputs = _models(run)
    paired = _paired(outputs)
    manifest = _read(run / PIPELINE_DIR / "data" / "manifest.json") or {}
    payload = {
        "about": "benchmarks/gsm8k_gpu_full.sh: the full GSM8K comparison (issue 18)",
        "written": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "environment": environment(),
        "config": (_read(run / PIPELINE_DIR / "pipeline_config.json") or {}).get("config"),
        "sft_choice": _read(run / SELECT_DIR / "choice.json"),
        "plan": _read(run / "plan.json"),
        "data": {k: manifest.get(k) for k in ("summary", "counts", "timing", "decoding", "data")},
        "models": models,
        "paired_differences": paired,
        "script_phases_s": _phases(run),
        "pipeline_stages_s": _stages(run, models),
    }
    md = table(models, paired)
    payload["files"] = [
        _tar(run, _files(run, logs=True, out=out), out / "train_logs.tar.gz"),
        _tar(run, _files(run, logs=False, out=out), out / "eval_outputs.tar.gz"),
    ]
    png = run / PIPELINE_DIR / "results.png"
    if png.is_file():
        (out / "results.png").write_bytes(png.read_bytes())
    _write(out / "gsm8k_full_results.json", payload)
    (out / "gsm8k_full_results.md").write_text(md + "\n")
    print(md)
    print(json.dumps({"data": payload["data"]["summary"], "phases": payload["script_phases_s"],
                      "stages": payload["pipeline_stages_s"]}, indent=1, default=str))  # fmt: skip
    return payload


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("select", "plan", "variant", "report"):
        p = sub.add_parser(name)
        p.add_argument("--run", type=Path, required=True, help="the script's run folder")
        if name in ("plan", "variant"):
            p.add_argument("--config", required=True, help="the pipeline configuration used")
            p.add_argument("--limit", type=int, default=None, help="as `run --limit`")
            p.add_argument("--smoke", action="store_true", help="as `run --smoke`")
        if name == "plan":
            p.add_argument("--remaining", type=float, required=True, help="seconds left")
        if name == "variant":
            p.add_argument("--lam", type=float, required=True, help="λ of the variant")
        if name == "report":
            p.add_argument("--out", type=Path, required=True, help="where the files go")
    args = parser.parse_args(argv)
    if args.command == "select":
        print(select(args.run))
    elif args.command == "plan":
        cfg = pipeline_config(args.config, args.limit, args.smoke)
        print(plan(args.run, cfg, args.remaining, args.smoke))
    elif args.command == "variant":
        cfg = pipeline_config(args.config, args.limit, args.smoke)
        print(json.dumps({k: v for k, v in variant(args.run, cfg, args.lam).items()
                          if k != "result"}, default=str))  # fmt: skip
    else:
        report(args.run, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
