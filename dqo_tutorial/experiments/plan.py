r"""DQO's claims, tested on the toy task: equal tuning budgets, seeds, intervals, sweeps.

    dqo-tutorial experiment toy-claims --out outputs/toy-claims [--smoke] [--workers 2]
        [--variants ablations | horizon | data-size sweep | critic | diagnostics | knobs tuned
                    | credit | forks | forks-data | forks-compare | forks-oracle | forks-long
                    | forks-12 | forks-compare-long]
        [--budgets-from STUDY.json] [--oracle-k 16]
    dqo-tutorial experiment toy-claims --out DIR --resummarize   # the summary again, from its runs

The paper (arXiv 2410.09302) reports gains without seeds or error bars. This module reruns its
comparisons on the toy reasoning task (:mod:`dqo_tutorial.toy`, shipped π_ref, CPU) so that
anyone can see which claims hold and how strongly. The written analysis of a full run is
``docs/toy-claims.md``.

**Protocol.**

1. *Data, per seed s.* ``prompts`` training prompts × ``num_samples`` responses at τ = 1 from
   π_ref (sampling seed s), labelled with the exact potentials Φ of the toy step checker; the
   same responses relabelled with Monte-Carlo Φ (``process_k`` rollouts of μ per distinct state,
   :func:`~dqo_tutorial.sampling.with_monte_carlo_potentials`). Every variant of seed s trains on
   (a subset of) these rows — one offline dataset per seed (per sweep point in the sweeps).
2. *Tuning, the same budget for every trained method* (SFT, RFT, DPO, DRO, DQO): every policy
   learning rate of ``policy_lrs`` × every epoch count of ``epoch_grid`` (DRO/DQO: value lr =
   ``value_lr_ratio`` × policy lr), all other knobs fixed at
   :attr:`~.config.ClaimsConfig.train`; seed 0; chosen by greedy accuracy on ``dev_problems``
   problems of the toy *dev* split (held out from π_ref's training problems and from test; ties
   go to the cheaper trial, :func:`~.config.choose_budgets`). Every variant, sweeps included,
   inherits its method's budget.
   Optionally (variants ``"DRO, knobs tuned"`` / ``"DQO, knobs tuned"``) a second stage gives DRO
   and DQO the same further budget: every knob set of ``knob_grid`` (β and the value head) at the
   chosen budget, seed 0, the best on dev wins.
3. *Grid.* Every variant × its seeds (``seeds``; sweeps and critics: ``sweep_seeds``; training
   seed = s), evaluated on ``test_problems`` test problems: greedy, and ``eval_samples`` samples
   at τ = 1 per problem (sampling seed s). Variants whose config equals a tuning run's share its
   training (one run per distinct config).
4. *Aggregation.* Per variant: mean and sample standard deviation (ddof = 1) over seeds of the
   strict greedy and sampling accuracy, and the paired difference to its DQO anchor (same seed,
   same data) with a 95 % interval over seeds × problems (:func:`~.stats.paired_interval`:
   two-way random effects, a t quantile on Satterthwaite's degrees of freedom) and the number of
   seeds on which it is above 0; each run keeps its per-problem hits, so ``--resummarize``
   recomputes the summary from them (:func:`resummarize`).

**Variants** (:data:`~.variants.VARIANTS`). Default: the baselines (π_ref, SFT, RFT, DPO, DRO,
DQO with the toy defaults and §8's β, λ = 1, prefix IS clipped at 2). ``ablations``: DQO
without importance sampling; λ ∈ {0, 0.95}; process rewards α = 0.5 with exact and with
Monte-Carlo Φ; imbalance — only ``positive_keep`` of the correct responses kept (all wrong ones),
and wrong responses only (DPO and RFT have nothing to train on there: reported as skipped, with
the reason); DQO trained on exactly the responses DPO's pairs use
(:func:`~dqo_tutorial.train.dpo_pairs`). ``horizon``: π_ref, RFT, DRO, DQO and DQO + process
rewards on chains of exactly 2, 4, 6 and 8 operations (tasks ``toy-<n>ops``, ``horizon_prompts``
prompts, ``horizon_test_problems`` test problems), all sampled from one mixed-length π_ref
(:data:`~.config.HORIZON_REFERENCE`, trained by the experiment). ``data-size sweep``: RFT, DRO
and DQO on ¼ and 4 × ``prompts`` (the baselines are the middle point). ``critic``: DQO with a
deeper critic, a wider value head, a longer value warm-up. ``diagnostics`` vary β, the IS clip,
target detaching and the value model; ``knobs tuned`` compares DRO and DQO after the second
tuning stage. ``credit``: DQO with the oracle, a flat and a warmed critic
(docs/credit-assignment.md). ``forks`` (no toy baselines): the fork chains of
:mod:`dqo_tutorial.forks` at :data:`~.variants.FORK_OPS` operations — π_ref, DRO, DQO and DQO
with the learned, flat and oracle critic at λ = 1 and λ = 0 and the flat critic shifted ±0.2,
``forks_prompts`` prompts, their own π_ref (``reference-forks-<hash>/``, trained by the
experiment) and oracle labels (docs/forks.md). ``forks-data``: at
:data:`~.variants.FORK_DATA_OPS` operations, DRO, DQO and the flat and oracle critics on ¼ and
4 × ``forks_prompts`` at the middle point's optimiser steps (``fixed_steps``), DQO without IS
at the largest. ``forks-compare``: RFT, DPO and DQO + Φ at the same budget, and DRO and DQO
each with four knob sets of its own chosen on dev (``forks_knob_grid``). ``forks-oracle``: the
fixed critics from :data:`~.variants.PRECISE_ORACLE_K` rollouts per anchor, and the oracle
critics from the pooled oracle. ``forks-long``: the bound at :data:`~.variants.LONG_FORK_OPS`
operations on the sweep seeds; ``forks-12``: at :data:`~.variants.LONGEST_FORK_OPS`, its oracle
pooled; ``forks-compare-long``: ``forks-compare`` at both, on the sweep seeds.

**Outputs** in ``out/``: ``experiment_config.json`` (a rerun must match it, then resumes),
``data/[<setting>/]seed-S/{exact,monte_carlo}``, ``reference-mixed-<hash>/`` (the horizon π_ref),
``runs/seed-S/<variant>-<hash>/`` (``spec.json``, ``train/``, ``eval-test/``, ``eval-dev/``),
``results.json`` (every run, every seed, the configuration, the tuning table, the summary),
``results.md`` (the tables: variants, tuning and cost, sweeps), ``accuracy.png`` (per variant,
mean ± std, one dot per seed), ``curves.png`` (dev greedy accuracy during training),
``lambda.png`` (accuracy vs λ, with the ablations), one figure per sweep (``horizon.png``,
``data-size-sweep.png``, ``forks.png``, …: :func:`~.plots.plot_sweep`) and, with fork
critics, ``critic-signals.png`` (:func:`~.plots.plot_critic_signals`). Jobs run in
``workers`` processes of one thread each (small models gain nothing from intra-op threads);
each job resumes on its own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..artifacts import atomic_write_json, check_run_identity, run_lock
from ..errors import DataError
from .config import ClaimsConfig, choose_budgets
from .jobs import (
    Job,
    Setting,
    epoch_steps,
    job_data,
    job_forks_reference,
    job_mixed_reference,
    job_monte_carlo,
    job_oracle,
    job_run,
    schedule,
)
from .plots import plot_accuracy, plot_critic_signals, plot_curves, plot_lambda, plot_sweep
from .stats import summarize_runs
from .sweeps import SWEEPS, signals_table, sweep_table
from .tables import budget_table, results_table
from .variants import VARIANTS, VARIANTS_BY_NAME, Variant

__all__ = [
    "run_toy_claims",
    "resummarize",
    "slug",
]


def _key(payload: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:8]


def slug(name: str) -> str:
    keep = "".join(c if c.isalnum() else "-" for c in name.lower())
    return "-".join(filter(None, keep.split("-")))


def run_toy_claims(
    cfg: ClaimsConfig, out_dir: str | os.PathLike[str], *, progress: bool = True
) -> dict[str, Any]:
    """Run (or resume) the experiment into ``out_dir``; returns ``results.json``'s dict. A
    second experiment into the same folder is refused while this one runs."""
    with run_lock(out_dir):
        return _run_toy_claims(cfg, out_dir, progress=progress)


def _run_toy_claims(
    cfg: ClaimsConfig, out_dir: str | os.PathLike[str], *, progress: bool = True
) -> dict[str, Any]:
    """The experiment: its job graph (:class:`_Plan`), scheduled on the workers, then the
    aggregation of what the jobs returned (:meth:`_Plan.results`)."""
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # what the shared artifacts depend on. Seeds, rates and variants may change on a rerun (each
    # run directory is keyed by its own training configuration, each dataset and evaluation
    # checks its own), and so may the number of workers.
    free = ("seeds", "policy_lrs", "epoch_grid", "variants", "workers", "knob_grid", "sweep_seeds",
            "budgets", "forks_knob_grid")  # fmt: skip
    free += ("horizon_prompts", "horizon_test_problems", "horizon_eval_samples")
    free += ("horizon_reference",)  # (the mixed π_ref's folder is keyed by it)
    shared = {k: v for k, v in asdict(cfg).items() if k not in free}
    check_run_identity(out / "experiment_config.json", {"config": _jsonable(shared)})

    def say(msg: str) -> None:
        if progress:
            print(f"[{time.perf_counter() - start:6.0f} s] {msg}", flush=True)

    plan = _Plan(cfg, out)
    jobs = plan.jobs()
    say(
        f"{len(jobs)} jobs on {cfg.workers} worker(s): {len(cfg.seeds)} seeds × "
        f"{len(plan.variants)} variants, tuning {len(plan.tuned)} methods × "
        f"{len(cfg.policy_lrs)} rates × {len(cfg.epoch_grid)} epoch counts"
    )
    done = schedule(jobs, cfg.workers, say)
    payload = plan.results(done)
    payload["wall_s_this_run"] = time.perf_counter() - start
    _write_outputs(payload, out, progress=progress)
    return payload


def resummarize(out_dir: str | os.PathLike[str], *, progress: bool = True) -> dict[str, Any]:
    """``--resummarize``: recompute ``results.json``'s summary from its runs (their per-seed
    accuracies and per-problem hits; nothing is retrained or re-evaluated) and rewrite it with
    ``results.md`` and the plots. For a study written by an older aggregation."""
    path = Path(out_dir) / "results.json"
    if not path.is_file():
        raise DataError(f"--resummarize: no {path}; run the experiment into --out first")
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"--resummarize: {path} is not valid JSON ({err})") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("runs"), list):
        raise DataError(f"--resummarize: {path} has no list of runs")
    payload["summary"] = summarize_runs(payload["runs"])
    _write_outputs(payload, Path(out_dir), progress=progress)
    return payload


def _write_outputs(payload: dict[str, Any], out: Path, *, progress: bool) -> None:
    """``results.json``, ``results.md`` (the tables) and the plots of one experiment."""
    table = results_table(payload["summary"])
    budget = budget_table(payload["tuning"], payload["chosen"], payload["runs"])
    sweeps = {axis: sweep_table(payload["summary"], payload["runs"], axis) for axis in SWEEPS}
    sweeps = {axis: t for axis, t in sweeps.items() if t}
    signals = signals_table(payload["runs"])
    text = "\n\n".join([table, budget, *sweeps.values(), *([signals] if signals else [])])
    (out / "results.md").write_text(text + "\n")
    plots = ["accuracy.png", "curves.png"]
    plot_accuracy(payload["summary"], payload["runs"], out / "accuracy.png")
    plot_curves(payload["runs"], payload["reference_curve_start"], out / "curves.png")
    if any(r["group"] == "λ-return" for r in payload["runs"]):
        plot_lambda(payload["summary"], out / "lambda.png")
        plots.append("lambda.png")
    for axis in sweeps:
        plot_sweep(payload["summary"], payload["runs"], axis, out / f"{slug(axis)}.png")
        plots.append(f"{slug(axis)}.png")
    if signals:
        plot_critic_signals(payload["runs"], out / "critic-signals.png")
        plots.append("critic-signals.png")
    atomic_write_json(out / "results.json", payload)
    if progress:
        print(text)
        print(
            f"wall time {payload['wall_s_this_run']:.0f} s; wrote {out}/results.{{json,md}}, "
            + ", ".join(plots)
        )


class _Plan:
    """The toy-claims experiment as a graph of resumable jobs (data, tuning, knob tuning, the
    mixed π_ref, test runs) and the rules that read the finished jobs (chosen budgets and knobs,
    the results)."""

    def __init__(self, cfg: ClaimsConfig, out: Path) -> None:
        self.cfg, self.out = cfg, out
        self.variants = cfg.selected
        self.tuned = sorted({v.method for v in self.variants} - {"reference"} - set(cfg.budgets))
        self.tune_seed = cfg.seeds[0]
        self.base_variant = {v.method: v for v in VARIANTS if v.group == "baselines"}
        self.default = Setting(prompts=cfg.prompts)
        self.mixed_ref = str(out / f"reference-mixed-{_key(_jsonable(cfg.horizon_reference))}")
        self.forks_ref = str(out / f"reference-forks-{_key(_jsonable(cfg.forks_reference))}")
        self.knob_groups = self._knob_groups()

    def seeds_of(self, v: Variant) -> tuple[int, ...]:
        return self.cfg.sweep_seeds if v.sweep else self.cfg.seeds

    def _knob_groups(self) -> dict[str, tuple[Variant, tuple[Mapping[str, Any], ...]]]:
        """Per knob-tuned (method, setting) its job-name prefix → (the variant its knob sets
        train on top of, the knob sets): the toy's baseline with ``knob_grid``, or a fork
        chain's plain run of the method at that length (e.g. ``DQO, forks 6 ops``) with
        ``forks_knob_grid``."""
        groups = {}
        for v in (v for v in self.variants if v.tune_knobs):
            if v.family == "toy":
                base, grids = self.base_variant[v.method], self.cfg.knob_grid
            else:
                plain = f"{self.base_variant[v.method].name}, {v.family} {v.ops} ops"
                base, grids = VARIANTS_BY_NAME.get(plain, v), self.cfg.forks_knob_grid
            if v.method not in grids:
                raise ValueError(f"ClaimsConfig knob grid: no knob sets for {v.method!r}")
            groups[self.knob_prefix(v)] = (dataclasses.replace(base, tune_knobs=False),
                                           tuple(grids[v.method]))  # fmt: skip
        return groups

    def knob_prefix(self, v: Variant) -> str:
        """The knob jobs' name of ``v`` without the knob set's index (``knobs dqo``, or
        ``knobs dqo forks-6ops-100p`` off the default setting)."""
        folder = self.setting(v).folder(self.default)
        return f"knobs {v.method}" + (f" {folder}" if folder else "")

    def setting(self, v: Variant) -> Setting:
        if v.family == "forks":
            policy = str(Path(self.forks_ref) / "policy")
            prompts = max(1, round(v.data_scale * self.cfg.forks_prompts))
            return Setting(v.task, prompts, policy, "π_ref forks")
        if v.ops is not None:
            policy = str(Path(self.mixed_ref) / "policy")
            return Setting(v.task, self.cfg.horizon_prompts, policy, "π_ref mixed")
        return Setting(prompts=max(1, round(v.data_scale * self.cfg.prompts)))

    def steps_prompts(self, v: Variant) -> int:
        """The prompts whose epochs set ``v``'s steps: its own, or with ``fixed_steps`` those
        of its family at ``data_scale`` 1 (epochs × ⌊prompts × samples / batch⌋ steps: what
        the trainer gives that size when every sampled row is an example, as for DQO and DRO on
        finished responses)."""
        if v.fixed_steps:
            return self.setting(dataclasses.replace(v, data_scale=1.0)).prompts
        return self.setting(v).prompts

    @staticmethod
    def reference_job(setting: Setting) -> tuple[str, ...]:
        """The job that trains ``setting``'s π_ref (none for the shipped one)."""
        return (setting.reference_job,) if setting.reference_job else ()

    def oracle_job(
        self, seed: int, setting: Setting, k: int | None = None, pooled: bool = False
    ) -> str:
        """The oracle labels of (``seed``, ``setting``) with ``k`` rollouts per anchor (None:
        :attr:`~.config.ClaimsConfig.oracle_k`), ``pooled`` or not."""
        folder = setting.folder(self.default)
        name = f"oracle {folder} s{seed}" if folder else f"oracle s{seed}"
        return name + ("" if k is None else f" k={k}") + (" pooled" if pooled else "")

    def _oracle_jobs(self) -> list[Job]:
        """One oracle job per (seed, setting, k, pooled) some variant reads, after its data."""
        wanted = {(s, self.setting(v), v.oracle_k, v.oracle_pooled) for v in self.variants
                  if v.potentials == "oracle" for s in self.seeds_of(v)}  # fmt: skip
        jobs = []
        for s, setting, k, pooled in sorted(
            wanted, key=lambda w: (w[0], str(w[1]), w[2] or 0, w[3])
        ):
            folder = str(Path(self.data_dir(s, setting=setting)).parent)
            jobs.append(
                Job(
                    self.oracle_job(s, setting, k, pooled),
                    100 * (k or self.cfg.oracle_k) / self.cfg.oracle_k,
                    (self.data_job(s, setting),),
                    lambda d, f=folder, s=s, g=setting, k=k, p=pooled: (
                        job_oracle,
                        (self.cfg, s, f, g, k, p),
                    ),
                )
            )
        return jobs

    def data_dir(self, seed: int, potentials: str = "exact", setting: Setting | None = None):
        folder = (setting or self.default).folder(self.default)
        return str(self.out / "data" / folder / f"seed-{seed}" / potentials)

    def data_job(self, seed: int, setting: Setting) -> str:
        folder = setting.folder(self.default)
        return f"data {folder} s{seed}" if folder else f"data s{seed}"

    def spec(
        self, v: Variant, seed: int, budget: Mapping[str, Any] | None, *, dev: bool, test: bool
    ) -> dict:
        """What one run job trains and evaluates, and its run directory (one per distinct
        training: the evaluations it gets may differ)."""
        from ..train import TrainConfig

        cfg, setting = self.cfg, self.setting(v)
        horizon = v.ops is not None
        base = {
            "method": v.method,
            "rows": v.rows,
            "seed": seed,
            "label": v.name,
            "task": v.task,
            "reference": setting.reference,
            "positive_keep": cfg.positive_keep,
            "prompts": setting.prompts,
            "dev_problems": cfg.dev_problems if dev else 0,
            "test_problems": (cfg.horizon_test_problems if horizon else cfg.test_problems)
            if test
            else 0,
            "eval_samples": cfg.horizon_eval_samples if horizon else cfg.eval_samples,
            # π_ref's curve is one point: step 0 of every method's curve
            "curve_problems": cfg.curve_problems
            if (v.curve or v.method == "reference") and not (horizon or v.sweep)
            else 0,
            "curve_points": cfg.curve_points,
        }
        if v.method != "reference":
            assert budget is not None
            lr = budget["policy_lr"]
            value_lr = cfg.value_lr_ratio * lr * v.value_lr_scale
            # the value warm-up scales with the steps of an epoch (the data size): with fixed
            # steps, with those of the data size the steps are fixed at (data_scale 1)
            prompts = self.steps_prompts(v)
            warmup = cfg.train.get("value_warmup_steps", 0) * v.warmup_scale
            warmup = max(1, round(warmup * prompts / cfg.prompts)) if warmup else 0
            if cfg.train.get("max_steps"):  # (smoke sizes: the policy must train at all)
                warmup = min(warmup, cfg.train["max_steps"] - 1)
            values = {**cfg.train, "value_warmup_steps": warmup, "policy_lr": lr,
                      "value_lr": value_lr, "epochs": budget["epochs"], **v.train}  # fmt: skip
            tcfg = TrainConfig(
                method=v.method,
                model=setting.reference,
                task=v.task,
                seed=seed,
                data=self.data_dir(seed, v.data_kind, setting),
                limit=setting.prompts,
                **values,
            )
            if v.fixed_steps and not tcfg.max_steps:
                steps = epoch_steps(prompts * cfg.num_samples, tcfg)
                tcfg = dataclasses.replace(tcfg, max_steps=steps)
            base |= {"train": tcfg.identity(), "data": tcfg.data}
        base["trained"] = {
            k: base.get(k)
            for k in ("method", "rows", "train", "positive_keep", "seed", "curve_problems")
        } | {"curve_points": cfg.curve_points}
        if horizon or v.data_scale != 1.0:  # (the default runs keep their directories)
            base["trained"] |= {"task": v.task, "reference": setting.reference,
                                "prompts": setting.prompts}  # fmt: skip
        key = _key(base["trained"])
        base["run_dir"] = str(self.out / "runs" / f"seed-{seed}" / f"{slug(v.name)}-{key}")
        return base

    def trials(self) -> list[tuple[str, float, int]]:
        """Every tuning trial: (method, policy lr, epochs) — the same grid for every method."""
        return [
            (m, lr, e)
            for m in self.tuned
            for e in self.cfg.epoch_grid
            for lr in self.cfg.policy_lrs
        ]

    @staticmethod
    def trial(m: str, lr: float, e: int) -> str:
        return f"tune {m} lr={lr:g} ep={e}"

    def jobs(self) -> list[Job]:
        """Every job with its dependencies; a job's arguments are built once its dependencies
        are done (the chosen budget of a test run comes from the finished tuning jobs)."""
        cfg, jobs = self.cfg, []
        needs_mc = any(v.potentials == "monte_carlo" for v in self.variants)
        data = self._data_jobs()
        horizon = any(v.ops is not None for v in self.variants)
        if any(v.ops is not None and v.family == "toy" for v in self.variants):
            jobs.append(
                Job("π_ref mixed", 600, (), lambda d: (job_mixed_reference, (cfg, self.mixed_ref)))
            )
        if any(v.family == "forks" for v in self.variants):
            jobs.append(
                Job("π_ref forks", 900, (), lambda d: (job_forks_reference, (cfg, self.forks_ref)))
            )
        for name, (s, setting) in data.items():
            folder = str(Path(self.data_dir(s, setting=setting)).parent)
            deps = self.reference_job(setting)
            cost = 30 * setting.prompts / cfg.prompts
            jobs.append(
                Job(
                    name,
                    cost,
                    deps,
                    lambda d, f=folder, s=s, g=setting: (job_data, (cfg, s, f, g)),
                )
            )
            if needs_mc and setting == self.default:
                jobs.append(
                    Job(
                        f"mc s{s}",
                        100,
                        (name,),
                        lambda d, f=folder, s=s: (job_monte_carlo, (cfg, s, f)),
                    )
                )
        jobs += self._oracle_jobs()
        for m, lr, e in self.trials():
            v = self.base_variant[m]
            budget = {"policy_lr": lr, "epochs": e}
            jobs.append(
                Job(
                    self.trial(m, lr, e),
                    _cost(m) * e,
                    (f"data s{self.tune_seed}",),
                    lambda d, v=v, b=budget: (
                        job_run,
                        (self.spec(v, self.tune_seed, b, dev=True, test=False),),
                    ),
                )
            )
        trials = tuple(self.trial(*t) for t in self.trials())
        for prefix, (base, grid) in self.knob_groups.items():
            deps = (*trials, self.data_job(self.tune_seed, self.setting(base)))
            deps += self.reference_job(self.setting(base))
            for i, knobs in enumerate(grid):
                v = dataclasses.replace(base, train={**knobs, **base.train})
                jobs.append(
                    Job(
                        f"{prefix} {i}",
                        _cost(v.method),
                        deps,
                        lambda d, v=v: (
                            job_run,
                            (
                                self.spec(
                                    v,
                                    self.tune_seed,
                                    self.chosen(d)[v.method],
                                    dev=True,
                                    test=False,
                                ),
                            ),
                        ),
                    )
                )
        jobs += self._test_jobs(trials, horizon)
        # π_ref on dev: the start of every learning curve and the tuning table's reference
        ref = VARIANTS_BY_NAME["π_ref"]
        jobs.append(
            Job(
                "π_ref dev",
                5,
                (),
                lambda d: (job_run, (self.spec(ref, self.tune_seed, None, dev=True, test=False),)),
            )
        )
        return jobs

    def _test_jobs(self, trials: tuple[str, ...], horizon: bool) -> list[Job]:
        """Every variant × its seeds on the test split, after its data, tuning and knob jobs."""
        cfg, jobs = self.cfg, []
        for v in self.variants:
            for s in self.seeds_of(v):
                deps = [self.data_job(s, self.setting(v))]
                deps += [f"mc s{s}"] if v.potentials == "monte_carlo" else []
                if v.potentials == "oracle":
                    deps.append(self.oracle_job(s, self.setting(v), v.oracle_k, v.oracle_pooled))
                deps += self.reference_job(self.setting(v))
                if v.tune_knobs:
                    prefix = self.knob_prefix(v)
                    deps += [f"{prefix} {i}" for i in range(len(self.knob_groups[prefix][1]))]
                if v.method != "reference":
                    deps += [t for t in trials if t.split()[1] == v.method]
                scale = (v.ops or 3) / 3 * (cfg.horizon_prompts / cfg.prompts if v.ops else 1)
                jobs.append(
                    Job(
                        f"{v.name} s{s}",
                        _cost(v.method) * scale * v.data_scale,
                        tuple(deps),
                        lambda d, v=v, s=s: (
                            job_run,
                            (
                                self.spec(
                                    self.resolved(v, d),
                                    s,
                                    self.chosen(d).get(v.method),
                                    dev=False,
                                    test=True,
                                ),
                            ),
                        ),
                    )
                )
        return jobs

    def tuning(self, d: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The finished tuning trials: method, rate, epochs, dev accuracy and what they cost."""
        rows = []
        for m, lr, e in self.trials():
            rec = d.get(self.trial(m, lr, e))
            if rec is None:
                continue
            rows.append(
                {
                    "method": m,
                    "policy_lr": lr,
                    "epochs": e,
                    "value_lr": self.cfg.value_lr_ratio * lr if m in ("dro", "dqo") else None,
                    "dev": rec.get("dev", {}).get("greedy"),
                    "skipped": rec.get("skipped"),
                    "train": rec.get("train"),
                    "curve": rec.get("curve"),
                }
            )
        return rows

    def chosen(self, d: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """The (policy lr, epochs) each method chose on dev (:func:`~.config.choose_budgets`), or
        was given (:attr:`~.config.ClaimsConfig.budgets`)."""
        return choose_budgets(self.tuning(d)) | {m: dict(b) for m, b in self.cfg.budgets.items()}

    def knobs_of(self, d: Mapping[str, Any], prefix: str) -> tuple[int, Mapping[str, Any]]:
        """The winning knob set of the knob jobs ``prefix`` on dev (ties: the earlier set)."""
        grid = self.knob_groups[prefix][1]
        scores = [d[f"{prefix} {i}"].get("dev", {}).get("greedy", -1.0) for i in range(len(grid))]
        best = max(range(len(scores)), key=lambda i: (scores[i], -i))
        return best, grid[best]

    def resolved(self, v: Variant, d: Mapping[str, Any]) -> Variant:
        if not v.tune_knobs:
            return v
        return dataclasses.replace(v, train={**self.knobs_of(d, self.knob_prefix(v))[1], **v.train})

    def results(self, done: Mapping[str, Any]) -> dict[str, Any]:
        """``results.json`` (without its wall time) from the finished jobs."""
        cfg, budgets = self.cfg, self.chosen(done)
        knob_tuning = [
            {
                "method": base.method,
                **({"task": base.task} if base.family != "toy" else {}),
                "knobs": dict(knobs),
                "dev": done[f"{prefix} {i}"].get("dev", {}).get("greedy"),
                "chosen": i == self.knobs_of(done, prefix)[0],
                "second_half": done[f"{prefix} {i}"].get("train", {}).get("second_half", {}),
            }
            for prefix, (base, grid) in self.knob_groups.items()
            for i, knobs in enumerate(grid)
        ]
        runs = []
        for v in self.variants:
            for s in self.seeds_of(v):
                rec = done[f"{v.name} s{s}"]
                v = self.resolved(v, done)
                runs.append(
                    {
                        "variant": v.name,
                        "group": v.group,
                        "method": v.method,
                        "anchor": v.anchor,
                        "seed": s,
                        "ops": v.ops,
                        "prompts": self.setting(v).prompts,
                        **({"budget": budgets[v.method]} if v.method in budgets else {}),
                        "overrides": dict(v.train),
                        "rows": v.rows,
                        "potentials": v.potentials,
                        **rec,
                    }
                )
        runs.sort(key=lambda r: (r["seed"], [v.name for v in self.variants].index(r["variant"])))
        data = {
            name: {
                "seed": s,
                "task": g.task,
                "prompts": g.prompts,
                "reference": g.reference_job or "shipped",  # (the job that trained π_ref)
                **done[name]["summary"],
            }
            for name, (s, g) in self._data_jobs().items()
        }
        return {
            "config": _jsonable(asdict(cfg)),
            "data": data,
            "mixed_reference": done.get("π_ref mixed"),
            "forks_reference": done.get("π_ref forks"),
            "reference_dev_greedy": done["π_ref dev"]["dev"]["greedy"],
            "reference_curve_start": done["π_ref dev"]["curve"][0][1],
            "tuning": self.tuning(done),
            "chosen": budgets,
            "knob_tuning": knob_tuning,
            "runs": runs,
            "summary": summarize_runs(runs),
        }

    def _data_jobs(self) -> dict[str, tuple[int, Setting]]:
        """Every (seed, setting) some job samples: the default setting's at every seed (at the
        tuning seed only when no variant trains on it: the fork chains alone), then the
        variants' own."""
        default_used = any(self.setting(v) == self.default for v in self.variants)
        seeds = self.cfg.seeds if default_used else (self.tune_seed,) if self.tuned else ()
        data = {self.data_job(s, self.default): (s, self.default) for s in seeds}
        for v in self.variants:
            for s in self.seeds_of(v):
                data.setdefault(self.data_job(s, self.setting(v)), (s, self.setting(v)))
        return data


def _cost(method: str) -> float:
    return {"reference": 10, "sft": 10, "rft": 20, "dpo": 25, "dro": 60, "dqo": 65}[method]


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=list))
