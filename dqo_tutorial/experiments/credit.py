r"""Credit assignment across a study's seeds: blame with intervals, and the critic ablation.

    dqo-tutorial credit --study outputs/credit-claims --out docs/credit-assignment [--oracle-k 16]

A toy-claims study (:mod:`dqo_tutorial.experiments.plan`, e.g. ``--variants credit``) trains every
variant on one offline dataset per seed. This module scores every trained test run of it with
:mod:`dqo_tutorial.credit_study` on **one** held-out population (π_ref's responses to the first
test problems, their own seed, the wrong ones with a located first wrong line), so that the
blame of two signals is paired by seed × response, as accuracies are paired by seed × problem.

Reported (``credit-study.json`` / ``.md`` / ``.png``):

* per signal (π_ref surprisal, noise, the oracle critic, each run's implied reward β·ρ and a DQO
  run's critic advantage): token and step blame, their chance levels and the critic AUC, as
  mean ± std over seeds, with the token blame's 95 % interval over seeds × responses and the
  per-seed values;
* the value error of every learned critic beside its floors (constant, prompt-level
  leave-one-out, the oracle), per seed;
* :data:`BLAME_CONTRASTS` and :data:`ACCURACY_CONTRASTS`: paired differences with the calibrated
  interval (:func:`~.stats.paired_interval`) and a sign count. *oracle − flat* is
  what token-level credit can buy on the task; *DQO − flat* how much of it the learned critic
  captures.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..artifacts import atomic_write_json, save_figure_atomically, source_commit
from ..errors import DataError
from .plan import slug
from .stats import paired_interval, scores

__all__ = ["BLAME_CONTRASTS", "ACCURACY_CONTRASTS", "study_runs", "contrast", "credit_of_study"]

BLAME_CONTRASTS = (
    ("DQO critic", "π_ref surprisal"),
    ("DQO implied reward", "DRO implied reward"),
    ("oracle critic", "DQO critic"),
    ("DQO, λ=0, oracle critic implied reward", "DQO implied reward"),
)
"""Token-blame differences read (a, b): does DQO's critic beat the untrained signal, does DQO's
policy localise better than DRO's, how far is the learned critic from the oracle, and does a
policy trained on the oracle's token-level credit (λ = 0) localise better than DQO's."""

ACCURACY_CONTRASTS = (
    ("DQO, oracle critic", "DQO, flat critic"),
    ("DQO", "DQO, flat critic"),
    ("DQO, oracle critic", "DQO"),
    ("DQO, λ=0, oracle critic", "DQO, λ=0, flat critic"),
    ("DQO, λ=0", "DQO, λ=0, flat critic"),
)
"""Accuracy differences read (a, b), greedy and sampling: the headroom of token-level credit,
the share of it the learned critic captures, and what it leaves — at λ = 1 (the
specification's: V is a baseline) and at λ = 0 (V is the whole credit)."""


def study_runs(study: Path) -> dict[int, dict[str, Path]]:
    """``{seed: {variant: train folder}}`` of a study's trained test runs (``results.json``'s
    runs; each run folder is ``runs/seed-S/<variant slug>-<8 hex>`` with an ``eval-test``)."""
    results = json.loads((study / "results.json").read_text())
    found: dict[int, dict[str, Path]] = {}
    for r in results["runs"]:
        if r["method"] == "reference" or r.get("skipped"):
            continue
        pattern = re.escape(slug(r["variant"])) + r"-[0-9a-f]{8}"
        folder = study / "runs" / f"seed-{r['seed']}"
        dirs = [d for d in folder.iterdir() if re.fullmatch(pattern, d.name)
                and (d / "eval-test").is_dir() and (d / "train" / "policy").is_dir()]  # fmt: skip
        if len(dirs) != 1:
            raise DataError(f"{folder}: {len(dirs)} trained test runs of {r['variant']!r}, not 1")
        found.setdefault(int(r["seed"]), {})[r["variant"]] = dirs[0] / "train"
    return found


def contrast(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> dict[str, Any]:
    """mean(a − b) over seeds × items with its 95 % interval and sign count (seeds whose mean
    difference is above / below 0); ``a[s][i]``, ``b[s][i]``: paired scores."""
    per_seed = [statistics.fmean(x) - statistics.fmean(y) for x, y in zip(a, b, strict=True)]
    return {
        "mean": statistics.fmean(per_seed),
        "ci95": paired_interval(a, b),
        "per_seed": per_seed,
        "seeds_above_0": sum(d > 0 for d in per_seed),
        "seeds_below_0": sum(d < 0 for d in per_seed),
    }


def _signal_summary(per_seed: Mapping[int, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per signal: mean ± std over seeds of each metric, per-seed values, the token blame's
    interval (against 0: the interval of the mean)."""
    seeds = sorted(per_seed)
    names = [n for n in per_seed[seeds[0]]["signals"] if all(
        n in per_seed[s]["signals"] for s in seeds)]  # fmt: skip
    out = {}
    for name in names:
        rows = [per_seed[s]["signals"][name] for s in seeds]
        row: dict[str, Any] = {}
        for key in ("token_blame", "token_chance", "step_blame", "step_chance", "critic_auc"):
            values = [r[key] for r in rows if r.get(key) is not None]
            if values:
                std = statistics.stdev(values) if len(values) > 1 else float("nan")
                row[key] = {"mean": statistics.fmean(values), "std": std, "per_seed": values}
        hits = [r["hits"]["token"] for r in rows]
        row["token_blame"]["ci95"] = paired_interval(hits, [[0] * len(h) for h in hits])
        out[name] = row
    return out


def _accuracy_contrasts(results: Mapping[str, Any]) -> dict[str, Any]:
    """:data:`ACCURACY_CONTRASTS` from the study's per-problem hits (the seeds both have)."""
    hits = {(r["variant"], r["seed"]): r["test"]["hits"] for r in results["runs"]
            if not r.get("skipped") and r.get("test")}  # fmt: skip
    out = {}
    for a, b in ACCURACY_CONTRASTS:
        seeds = sorted(s for v, s in hits if v == a and (b, s) in hits)
        if not seeds:
            continue
        out[f"{a} − {b}"] = {
            d: contrast(
                [scores(hits[a, s], d) for s in seeds], [scores(hits[b, s], d) for s in seeds]
            )  # fmt: skip
            for d in ("greedy", "sampling")
        } | {"seeds": seeds}
    return out


def _blame_contrasts(per_seed: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    seeds = sorted(per_seed)
    out = {}
    for a, b in BLAME_CONTRASTS:
        rows = [per_seed[s]["signals"] for s in seeds]
        if all(a in r and b in r for r in rows):
            out[f"{a} − {b}"] = contrast([r[a]["hits"]["token"] for r in rows],
                                         [r[b]["hits"]["token"] for r in rows])  # fmt: skip
    return out


def _score_seed(runs: Mapping[str, Path], ref: Any, found: Sequence[Any], oracle: Any) -> dict:
    """One seed's signals and value errors (:func:`~dqo_tutorial.credit_study.score_runs`)."""
    from ..credit_study import alpha_of, critic_values, has_critic, score_runs, value_errors
    from ..viz import load_checkpoint

    loaded = {v: load_checkpoint(str(d), v) for v, d in runs.items()}
    wrong = [n for n, r in enumerate(found) if r.blameable]
    items = [found[n] for n in wrong]
    table = score_runs(loaded, ref, items, seed=0, oracle=[oracle[n] for n in wrong])
    v_star = [o["value"] for o in oracle]
    # a critic trained with process rewards estimates V* − αΦ, not V: no value error for it
    critics = {v: run for v, run in loaded.items() if has_critic(run) and not alpha_of(run)}
    errors, to_oracle = {}, {}
    for v, run in critics.items():
        values = critic_values(run, ref, found)  # one forward pass per response, for both
        errors[v] = value_errors(run, ref, found, {"oracle": v_star}, values=values)
        to_oracle[v] = value_errors(run, ref, found, targets=v_star, values=values)
    return {"signals": table, "value_error": errors, "value_error_to_oracle": to_oracle}


def credit_of_study(
    study: str, out: str, *, n_problems: int = 200, k: int = 4, seed: int = 0, oracle_k: int = 16
) -> dict[str, Any]:
    """Score every trained test run of the toy-claims ``study`` folder (module docstring) on
    π_ref's responses to the first ``n_problems`` test problems (``k`` each, the stream of
    ``seed``), with the oracle critic of ``oracle_k`` rollouts per anchor; write
    ``credit-study.{json,md,png}`` into ``out`` and return the JSON payload."""
    from .. import __version__
    from ..credit_study import held_out_responses, oracle_signals
    from ..viz import load_checkpoint

    commit, folder = source_commit(), Path(study)
    results = json.loads((folder / "results.json").read_text())
    ref = load_checkpoint("toy", "π_ref")
    found = held_out_responses(ref, task="toy", n_problems=n_problems, k=k, seed=seed)
    oracle = oracle_signals(ref, found, task="toy", k=oracle_k, seed=seed)
    per_seed = {s: _score_seed(runs, ref, found, oracle) for s, runs in study_runs(folder).items()}
    payload = {
        "meta": {"study": str(study), "n_problems": n_problems, "k": k, "seed": seed,
                 "oracle_k": oracle_k, "held_out": len(found),
                 "responses": sum(r.blameable for r in found),
                 "lines_wrong_answer_right": sum(r.wrong is not None and r.example.reward == 1
                                                 for r in found),
                 "seeds": sorted(per_seed), "package_version": __version__,
                 "commit": commit},  # fmt: skip
        "signals": _signal_summary(per_seed),
        "blame_contrasts": _blame_contrasts(per_seed),
        "accuracy_contrasts": _accuracy_contrasts(results),
        "value_error": {s: p["value_error"] for s, p in per_seed.items()},
        "value_error_to_oracle": {s: p["value_error_to_oracle"] for s, p in per_seed.items()},
        "per_seed": {s: {n: {k: v for k, v in m.items() if k != "hits"}
                         for n, m in p["signals"].items()} for s, p in per_seed.items()},
    }  # fmt: skip
    _write(payload, Path(out))
    return payload


def _write(payload: Mapping[str, Any], out: Path) -> None:
    from ..credit_study import plot_blame

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "credit-study.json", payload)
    (out / "credit-study.md").write_text(study_markdown(payload))
    means = {n: {k: r[k]["mean"] for k in ("token_blame", "token_chance", "step_blame",
                                            "step_chance")}
             for n, r in payload["signals"].items()}  # fmt: skip
    meta = payload["meta"]
    title = (f"toy: {meta['responses']} wrong π_ref responses, seeds {meta['seeds']} "
             f"(mean over seeds), commit {meta['commit'][:7]}")  # fmt: skip
    save_figure_atomically(plot_blame(means, title), out / "credit-study.png")


def _pm(x: Mapping[str, Any] | None, pct: bool = True) -> str:
    if x is None:
        return "–"
    f = 100.0 if pct else 1.0
    std = "" if x["std"] != x["std"] else f" ± {f * x['std']:.{1 if pct else 2}f}"
    return f"{f * x['mean']:.{1 if pct else 2}f}{std}"


def _contrast_cell(c: Mapping[str, Any], pct: bool = True) -> str:
    f = 100.0 if pct else 1.0
    lo, hi = (f * v for v in c["ci95"])
    n = len(c["per_seed"])
    return f"{f * c['mean']:+.1f} [{lo:+.1f}, {hi:+.1f}] ({c['seeds_above_0']}/{n} > 0)"


def study_markdown(payload: Mapping[str, Any]) -> str:
    """The signals table (mean ± std over seeds, token blame's interval), the contrasts and the
    value errors, as Markdown."""
    meta = payload["meta"]
    lines = [
        f"Blame on {meta['responses']} wrong π_ref responses (answer wrong, first wrong line "
        f"located) of {meta['held_out']} to {meta['n_problems']} held-out toy problems "
        f"({meta['k']} each, seed {meta['seed']}; {meta['lines_wrong_answer_right']} more had a "
        f"wrong line but the right answer and are left out); runs of seeds {meta['seeds']}; "
        f"oracle: {meta['oracle_k']} rollouts per anchor; commit {meta['commit'][:7]}. "
        "Accuracies in %, mean ± std over seeds.",
        "",
        "| signal | token blame | [95 % CI] | chance | step blame | chance | critic AUC |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in payload["signals"].items():
        lo, hi = (100 * v for v in r["token_blame"]["ci95"])
        cells = [_pm(r["token_blame"]), f"[{lo:.1f}, {hi:.1f}]", _pm(r["token_chance"]),
                 _pm(r.get("step_blame")), _pm(r.get("step_chance")),
                 _pm(r.get("critic_auc"), False)]  # fmt: skip
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "| token blame, paired | difference [95 % CI] (seeds > 0) |", "|---|---|"]
    lines += [f"| {n} | {_contrast_cell(c)} |" for n, c in payload["blame_contrasts"].items()]
    lines += ["", "| test accuracy, paired | greedy | sampling τ=1 |", "|---|---|---|"]
    for n, c in payload["accuracy_contrasts"].items():
        lines.append(f"| {n} | {_contrast_cell(c['greedy'])} | {_contrast_cell(c['sampling'])} |")
    lines += _errors_lines(payload["value_error"], "|R − V|, R the outcome")
    lines += _errors_lines(payload["value_error_to_oracle"], "|V* − V|, V* the oracle's value")
    return "\n".join(lines) + "\n"


def _errors_lines(errors: Mapping[Any, Mapping[str, Mapping[str, float]]], what: str) -> list[str]:
    """Value error (``what``) of every learned critic and its floors, per seed."""
    rows = [(s, run, e) for s, by_run in errors.items() for run, e in by_run.items()]
    if not rows:
        return []
    keys = list(rows[0][2])
    head = "| seed | run | " + " | ".join(keys) + " |"
    out = ["", f"Value error, token mean {what}, on the finished held-out responses:", "",
           head, "|---|---|" + "---|" * len(keys)]  # fmt: skip
    out += [f"| {s} | {run} | " + " | ".join(f"{e[k]:.3f}" for k in keys) + " |"
            for s, run, e in rows]  # fmt: skip
    return out
