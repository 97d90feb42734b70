"""Command line of dqo_tutorial: one subcommand per task.

    dqo-tutorial tabular-demo --out outputs/tabular-demo [--beta --lam --steps --seed]
    dqo-tutorial sample --out runs/data --model smollm2 --limit 32 --num-samples 8
    dqo-tutorial train  --out runs/train --method dqo --model smollm2 --data runs/data
    dqo-tutorial eval   --out runs/eval --model smollm2 --limit 100 [--num-samples 4]
    dqo-tutorial run    --out runs/toy [--config configs/toy.yaml] [--smoke] [--limit N]
    dqo-tutorial experiment toy-claims --out outputs/toy-claims [--smoke] [--workers 2]
    dqo-tutorial experiment critic-alone --out outputs/critic-alone [--smoke]
    dqo-tutorial credit --out runs/credit --run DQO=runs/toy/train/dqo [--run ...] [--limit 200]
    dqo-tutorial credit --out docs/credit-assignment --study outputs/credit-claims [--oracle-k 16]
    dqo-tutorial toy-ref --out runs/toy-ref
    dqo-tutorial student-copies notebooks student-notebooks
    dqo-tutorial nbgrader-course notebooks dqo-course [--only 04_soft_bellman_and_dqo.ipynb]
    dqo-tutorial course --notebooks notebooks --out outputs/course [--smoke | --no-execute]

``sample``, ``train`` and ``eval`` take every field of their config dataclass
(:class:`~dqo_tutorial.sampling.SamplingConfig`, :class:`~dqo_tutorial.train.TrainConfig`,
:class:`~dqo_tutorial.evaluate.EvalConfig`) as a flag, and ``--config FILE.yaml`` with the same
field names; flags override the file, and an unknown field is an error that names it. ``run``
reads a nested :class:`~dqo_tutorial.pipeline.PipelineConfig` file (``configs/``). ``train``
also runs under ``accelerate launch`` / ``torchrun`` (several processes).

Errors: the package's own (:mod:`dqo_tutorial.errors`: a bad value, missing data or model, a
mismatch, a folder in use), an output folder that cannot be made or written (empty, a file, under
a file, read-only, full: :func:`~dqo_tutorial.artifacts.check_output_folder`,
:func:`~dqo_tutorial.artifacts.output_error`) and argparse's own usage errors each print one line
``dqo-tutorial COMMAND: error: …`` and exit with status 2; anything else keeps its traceback.
Flags are matched exactly (no abbreviations: ``--lr`` is not ``--lr-scheduler``). Library
progress bars and warnings (Hugging Face's "Loading weights", "Saving the dataset", the GGUF
conversion …) are silenced unless ``--verbose`` (:mod:`dqo_tutorial.quiet`); the package's own
bars stay, one per stage.

Add a subcommand by writing ``_add_<name>(subparsers)`` (it registers its arguments and sets
``func``, a callable taking the parsed namespace and returning an exit code) and calling it in
:func:`build_parser`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Only light modules at import time: `dqo-tutorial --help` must not wait for torch.
from dqo_tutorial.artifacts import check_output_folder, output_error
from dqo_tutorial.configs import EvalConfig, SamplingConfig, TrainConfig
from dqo_tutorial.errors import ConfigError, DQOError
from dqo_tutorial.quiet import quiet_libraries
from dqo_tutorial.threads import fit_threads


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as one line (no usage dump) that points to ``--help``, exact
    flag names only (``--lr`` is not ``--lr-scheduler``), and a hint for a misspelt flag."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message: str) -> typing.NoReturn:
        hint = self._hint(message) if message.startswith("unrecognized arguments") else ""
        self.exit(2, f"{self.prog}: error: {message}{hint}; see `{self.prog} --help`\n")

    def _hint(self, message: str) -> str:
        import difflib

        flags = [s for a in self._actions for s in a.option_strings if s.startswith("--")]
        unknown = [w for w in message.split(": ", 1)[1].split() if w.startswith("--")]
        rates = [f for f in flags if f.endswith("-lr")]
        if rates and any("lr" in w or "learning" in w or "rate" in w for w in unknown):
            return f" (the learning rates are {' and '.join(rates)})"
        close = [m for w in unknown for m in difflib.get_close_matches(w, flags, n=1)]
        return f" (did you mean {', '.join(close)}?)" if close else ""


def _tabular_demo(args: argparse.Namespace) -> int:
    from dqo_tutorial.tabular import demo

    demo(args.out, beta=args.beta, lam=args.lam, steps=args.steps, seed=args.seed)
    return 0


def _add_tabular_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tabular-demo",
        help="train tabular DQO on a random tree MDP and compare with the exact soft-optimal π*",
        description="Tabular DQO on a random tree MDP vs its exact solution: prints the error "
        "curve and writes tabular-dqo.png to --out.",
    )
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument(
        "--beta", type=_number_in(0, 1e6, open_lo=True), default=0.5, help="KL strength β > 0"
    )
    p.add_argument("--lam", type=_number_in(0, 1), default=1.0, help="λ ∈ [0, 1] of the λ-return")
    p.add_argument("--steps", type=_at_least_one, default=1000, help="Adam steps (default 1000)")
    p.add_argument("--seed", type=_count(0), default=0, help="seed of the MDP and the data")
    p.set_defaults(func=_tabular_demo)


def _parse_optional(kind: type) -> Any:
    def parse(text: str) -> Any:
        return None if text.lower() in ("none", "null", "") else kind(text)

    parse.__name__ = kind.__name__
    return parse


def _number_in(lo: float, hi: float, *, open_lo: bool = False) -> Any:
    """argparse type: a float in [lo, hi] (or (lo, hi] with ``open_lo``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (lo < value if open_lo else lo <= value) or not value <= hi:
            interval = f"{'(' if open_lo else '['}{lo:g}, {hi:g}]"
            raise argparse.ArgumentTypeError(f"must lie in {interval}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


def _count(lo: int) -> Any:
    """argparse type: an integer >= ``lo`` (counts such as ``--limit``, seeds)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lo}, got {text!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


_at_least_one = _count(1)


_ALIASES = {"task": ("--dataset",)}
"""Other spellings of a config flag: ``--dataset math`` is ``--task math``."""


def _field_help(f: dataclasses.Field) -> str:
    """A config field's one-line help and its default (one source: the dataclass)."""
    text = f.metadata.get("help", "")
    return f"{text} (default {f.default})" if text else f"(default {f.default})"


def _add_config_flags(p: argparse.ArgumentParser, cls: type, func: Any) -> None:
    """``--out``, ``--config`` and one ``--field-name`` flag per field of ``cls`` (default None =
    "not given"); ``func`` runs the subcommand."""
    p.set_defaults(func=func)
    p.add_argument("--out", required=True, help="output directory (rerun to resume)")
    p.add_argument("--config", type=Path, help="YAML file of config fields (flags override it)")
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        aliases = _ALIASES.get(f.name, ())
        hint = typing.get_type_hints(cls)[f.name]
        args = typing.get_args(hint)
        if hint is bool:
            p.add_argument(
                flag,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=_field_help(f),
            )
            continue
        optional = isinstance(hint, types.UnionType) and type(None) in args
        kind = next(a for a in args if a is not type(None)) if optional else hint
        p.add_argument(
            flag,
            *aliases,
            dest=f.name,
            type=_parse_optional(kind) if optional else kind,
            default=None,
            help=_field_help(f),
        )


def _read_yaml(path: Path, what: str) -> dict[str, Any]:
    """The mapping in the YAML file ``path``; a missing file or bad YAML is one ConfigError."""
    import yaml

    if not path.is_file():
        raise ConfigError(f"no configuration file at {path}")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:  # its message carries the line and column
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of {what} fields")
    return loaded


def config_from_args(cls: type, args: argparse.Namespace) -> Any:
    """Build ``cls`` from ``--config`` (YAML) and flags; unknown or ill-typed fields are named.

    The file alone is checked first, so that a flag overriding a bad value in it still gets the
    bad value named."""
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    if args.config is not None:
        values = _read_yaml(args.config, cls.__name__)
        unknown = sorted(set(values) - names)
        if {"sample", "train", "eval", "methods"} & set(unknown):
            raise ConfigError(
                f"{args.config} is a pipeline file (sections {unknown}): use "
                f"`dqo-tutorial run --config {args.config}`, or a file of {cls.__name__} fields"
            )
        if unknown:
            raise ConfigError(
                f"{args.config}: unknown field(s) {unknown} for {cls.__name__}; "
                f"known fields: {sorted(names)}"
            )
    flags = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    for checked in (values, values | flags) if values else (values | flags,):
        try:
            cfg = cls(**checked)
        except TypeError as err:
            raise ConfigError(f"bad {cls.__name__}: {err}") from None
        except ConfigError as err:
            where = f"{args.config}: " if checked is values else ""
            raise ConfigError(f"{where}{err}") from None
    return cfg


def _sample(args: argparse.Namespace) -> int:
    from dqo_tutorial.sampling import build_dataset

    cfg = config_from_args(SamplingConfig, args)
    fit_threads(cfg.device)
    build_dataset(cfg, args.out)
    if int(os.environ.get("RANK", "0")) == 0:  # one summary under torchrun / accelerate launch
        manifest = json.loads((Path(args.out) / "manifest.json").read_text())
        print(json.dumps({"summary": manifest["summary"], "timing": manifest["timing"]}, indent=2))
    return 0


def _add_sample(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sample",
        help="sample the offline DQO dataset (responses, log μ, log π_ref, rewards)",
        description="Sample responses from the reference model on a task (gsm8k, toy, math), "
        "label them, and save a resumable, sharded dataset with a manifest to --out.",
    )
    _add_config_flags(p, SamplingConfig, _sample)


def _eval(args: argparse.Namespace) -> int:
    from dqo_tutorial.evaluate import evaluate

    cfg = config_from_args(EvalConfig, args)
    fit_threads(cfg.device)
    results = evaluate(cfg, args.out)
    if int(os.environ.get("RANK", "0")) != 0:  # one summary under torchrun / accelerate launch
        return 0
    print(
        f"model {results['model']}  {results['data']['split']} "
        f"n={results['data']['num_problems']}  mean response "
        f"{results['mean_response_tokens']:.0f} tokens, cut {results['length_cut_share']:.1%}"
    )
    for decoding, row in results["accuracy"].items():
        cells = "  ".join(
            f"{m} {row[m]['mean']:.1%} ± {row[m]['stderr']:.1%}"
            for m in ("strict", "flexible", "invalid")
        )
        print(f"  {decoding:<9} {cells}")
    return 0


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="greedy / sampling accuracy on a task's test split (strict, flexible, invalid rate)",
        description="Evaluate a model on a task (gsm8k, toy, math); writes outputs.jsonl and "
        "results.json to --out (rerun to resume).",
    )
    _add_config_flags(p, EvalConfig, _eval)


def _train(args: argparse.Namespace) -> int:
    from dqo_tutorial.train import train

    cfg = config_from_args(TrainConfig, args)
    fit_threads()
    summary = train(cfg, args.out)
    print(json.dumps({k: summary[k] for k in ("method", "steps", "processes", "last")}, indent=2))
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train one method (sft, rft, dpo, dro, dqo) on a sampled dataset",
        description="Train one method from π_ref on the offline dataset of `sample` (SFT: on "
        "the gold solutions); checkpoints to --out and resumes from them. Multi-process: "
        "`accelerate launch -m dqo_tutorial.cli train ...` or `torchrun ... -m dqo_tutorial.cli "
        "train ...`.",
    )
    _add_config_flags(p, TrainConfig, _train)


def _run(args: argparse.Namespace) -> int:
    from dqo_tutorial.pipeline import SMOKE, load_config, run

    overrides: dict = dict(SMOKE) if args.smoke else {}
    if args.limit is not None:
        for section in ("sample", "eval"):
            overrides[section] = {**overrides.get(section, {}), "limit": args.limit}
    if args.methods:
        overrides["methods"] = [m.strip() for m in args.methods.split(",") if m.strip()]
    run(load_config(args.config, overrides=overrides), args.out, adapt_threads=True)
    return 0


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="the whole comparison: sample, train every method, evaluate, table and plot",
        description="Sample from π_ref, train each selected method on the same data, evaluate "
        "π_ref and every method, print the results table and write results.{md,json,png} to "
        "--out. Default configuration: the toy task with its shipped π_ref. Rerun to resume.",
    )
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument("--config", help="YAML pipeline configuration (see configs/)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: checks that all runs")
    p.add_argument(
        "--limit", type=_at_least_one, help="problems to sample from and to evaluate on (>= 1)"
    )
    p.add_argument("--methods", help="comma-separated subset of sft,rft,dpo,dro,dqo")
    p.set_defaults(func=_run)


def _critic_alone(args: argparse.Namespace) -> int:
    """``experiment critic-alone``: :func:`.critic_alone.run_critic_study`."""
    from dqo_tutorial.experiments.critic_alone import SMOKE, CriticConfig, run_critic_study

    given = [f for f, n in _CLAIMS_ONLY if getattr(args, n)]
    if given:
        raise ConfigError(f"{', '.join(given)}: toy-claims only, not for critic-alone")
    fit_threads()
    out = args.out or ("outputs/critic-alone-smoke" if args.smoke else "outputs/critic-alone")
    run_critic_study(CriticConfig(**(SMOKE if args.smoke else {})), out)
    print((Path(out) / "critic.md").read_text(), end="")
    print(f"critic.json, critic.md and critic.png in {out}")
    return 0


_CLAIMS_ONLY = (("--seeds", "seeds"), ("--sweep-seeds", "sweep_seeds"), ("--workers", "workers"),
                ("--variants", "variants"), ("--resummarize", "resummarize"),
                ("--oracle-k", "oracle_k"))  # fmt: skip


def _experiment(args: argparse.Namespace) -> int:
    if args.name == "critic-alone":
        return _critic_alone(args)
    from dqo_tutorial.experiments.config import SMOKE, ClaimsConfig
    from dqo_tutorial.experiments.plan import resummarize, run_toy_claims
    from dqo_tutorial.experiments.variants import expand_variants

    values: dict[str, Any] = dict(SMOKE) if args.smoke else {}
    for flag, name in (("--seeds", "seeds"), ("--sweep-seeds", "sweep_seeds")):
        given = getattr(args, name)
        if given:
            try:
                values[name] = tuple(int(s) for s in given.split(","))
            except ValueError:
                msg = f"{flag}: expected integers like 0,1,2, got {given!r}"
                raise ConfigError(msg) from None
    if args.workers:
        values["workers"] = args.workers
    if args.oracle_k:
        values["oracle_k"] = args.oracle_k
    if args.variants:
        values["variants"] = expand_variants([n.strip() for n in args.variants.split(";")])
    if args.budgets_from:
        values["budgets"] = _chosen_budgets(args.budgets_from)
    try:
        cfg = ClaimsConfig(**values)
    except ValueError as err:
        raise ConfigError(f"bad configuration: {err}") from None
    out = args.out or ("outputs/toy-claims-smoke" if args.smoke else "outputs/toy-claims")
    resummarize(out) if args.resummarize else run_toy_claims(cfg, out)
    return 0


def _chosen_budgets(path: str) -> dict[str, Any]:
    """The ``chosen`` budgets of an earlier study's results JSON, or one clear line."""
    try:
        chosen = json.loads(Path(path).read_text())["chosen"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        msg = f"--budgets-from {path}: no study results with 'chosen' ({err})"
        raise ConfigError(msg) from None
    return {m: {"policy_lr": b["policy_lr"], "epochs": b["epochs"]} for m, b in chosen.items()}


def _add_experiment(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "experiment",
        help="the toy-claims experiment (seeds, error bars and ablations of DQO's claims) or "
        "critic-alone (can V_φ learn the state value on the toy data?)",
        description="toy-claims: test DQO's claims on the toy task: every baseline and ablation "
        "on one offline dataset per seed, learning rates tuned on the dev split with the same "
        "budget for every method; writes results.{json,md} and plots (docs/toy-claims.md). "
        "critic-alone: train DQO's critic with the policy frozen at π_ref over a grid of value "
        "learning rates, schedules and step counts and score its value error on held-out "
        "responses against its floors; writes critic.{json,md,png} "
        "(docs/credit-assignment/critic-alone/). Rerun to resume.",
    )
    p.add_argument("name", choices=["toy-claims", "critic-alone"], help="the experiment to run")
    p.add_argument("--out", help="output directory (default outputs/<name>[-smoke])")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: checks that all runs")
    p.add_argument("--seeds", help="comma-separated seeds (default 0,1,2,3,4)")
    p.add_argument(
        "--sweep-seeds", help="the seeds of the sweeps and the critic runs (default 0,1,2)"
    )
    p.add_argument("--workers", type=_at_least_one, help="worker processes (default 2)")
    p.add_argument("--oracle-k", type=_at_least_one,
                   help="rollouts per anchor of the oracle critic's data (default 16)")  # fmt: skip
    p.add_argument(
        "--variants",
        help="semicolon-separated variant names, 'all', or one set: 'ablations' (IS, λ, "
        "process rewards, imbalance, data), 'horizon' (2–8 operations), 'data-size sweep', "
        "'critic', 'credit' (oracle and flat critics), 'diagnostics' or 'knobs tuned' — each "
        "with the baselines —, or the fork chains' 'forks' (the critic bound), 'forks-data' (data "
        "size at fixed steps), 'forks-compare' (the methods, knobs tuned on dev), 'forks-oracle' "
        "(a 64-rollout and a pooled oracle), 'forks-long' (8 operations), 'forks-12' (12 "
        "operations, a pooled oracle) or 'forks-compare-long' (the methods at 8 and 12), "
        "which need "
        "--budgets-from; default: the baselines (5 seeds, lr × epochs tuned on dev)",
    )
    p.add_argument(
        "--budgets-from",
        help="an earlier study's results JSON (e.g. docs/toy-claims/study.json): every method "
        "takes the (policy lr, epochs) that study chose on dev instead of being tuned again",
    )
    p.add_argument(
        "--resummarize",
        action="store_true",
        help="recompute the summary, tables and plots from --out's results.json",
    )
    p.set_defaults(func=_experiment)


def _named_run(item: str) -> tuple[str, str] | None:
    """``NAME=FOLDER`` → (name, folder), or None. Labels may hold "=" (the study's "DQO, λ=0"),
    and so may folders: the first split whose right side exists on disk wins, else the last
    "=" (a model spec such as ``toy``)."""
    cuts = [n for n, c in enumerate(item) if c == "="]
    found = [n for n in cuts if Path(item[n + 1 :]).exists()] or cuts[-1:]
    if not found or not item[: found[0]] or not item[found[0] + 1 :]:
        return None
    return item[: found[0]], item[found[0] + 1 :]


def _credit(args: argparse.Namespace) -> int:
    from dqo_tutorial.credit_study import credit_report

    if args.study:
        return _credit_study(args)
    if args.structure:
        return _structure(args)
    runs = {}
    for item in args.run:
        named = _named_run(item)
        if named is None:
            raise ConfigError(f"--run {item!r}: give NAME=FOLDER, e.g. --run DQO=outputs/toy/dqo")
        runs[named[0]] = named[1]
    payload = credit_report(runs, args.out, task=args.task, n_problems=args.limit,
                            k=args.num_samples, seed=args.seed,
                            oracle_k=args.oracle_k or 0)  # fmt: skip
    print((Path(args.out) / "credit.md").read_text(), end="")
    print(f"{payload['meta']['responses']} wrong responses scored; credit.json, credit.md and "
          f"credit.png in {args.out}")  # fmt: skip
    return 0


def _structure(args: argparse.Namespace) -> int:
    from dqo_tutorial.credit_study import structure_report

    if args.run or not args.reference:
        raise ConfigError("credit --structure: give --reference MODEL (π_ref) and no --run")
    tasks = [t.strip() for t in args.task.split(",") if t.strip()]
    payload = structure_report(args.reference, tasks, args.out, n_problems=args.limit,
                               k=args.num_samples, seed=args.seed)  # fmt: skip
    for task in tasks:
        print(task, json.dumps(payload[task]))
    print(f"structure.json in {args.out}")
    return 0


def _credit_study(args: argparse.Namespace) -> int:
    from dqo_tutorial.experiments.credit import credit_of_study

    if args.run:
        raise ConfigError("credit: give --study DIR or --run NAME=FOLDER, not both")
    if not (Path(args.study) / "results.json").is_file():
        raise ConfigError(f"--study {args.study}: no results.json (a toy-claims output folder)")
    oracle_k = 16 if args.oracle_k is None else args.oracle_k
    if oracle_k < 1:
        raise ConfigError("--oracle-k: the study needs the oracle critic, give at least 1")
    payload = credit_of_study(args.study, args.out, n_problems=args.limit, k=args.num_samples,
                              seed=args.seed, oracle_k=oracle_k)  # fmt: skip
    print((Path(args.out) / "credit-study.md").read_text(), end="")
    print(f"{payload['meta']['responses']} wrong responses scored for seeds "
          f"{payload['meta']['seeds']}; credit-study.{{json,md,png}} in {args.out}")  # fmt: skip
    return 0


def _add_credit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "credit",
        help="which tokens runs blame: blame accuracy on held-out wrong responses (toy tasks)",
        description="Sample π_ref's responses to held-out test problems (a seed of their own), "
        "keep the wrong ones whose first wrong line the task's checker finds, and score where "
        "each run's per-token signals put the blame: the implied reward β·log π_θ/π_ref, the "
        "critic's one-step advantage, π_ref's surprisal and noise (chance). Writes credit.json, "
        "credit.md and credit.png.",
    )
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument("--run", action="append", default=[], metavar="NAME=FOLDER",
                   help="a run's label (it may hold \"=\") and folder (or a model spec); "
                        "repeatable")  # fmt: skip
    p.add_argument("--task", default="toy", help="a task with a step checker: toy, toy-<n>ops, "
                   "forks-<n>ops (--structure: several, comma-separated)")  # fmt: skip
    p.add_argument(
        "--structure",
        action="store_true",
        help="instead of scoring runs: the "
        "task's structure seen by --reference's π_ref on its wrong samples (uncertain "
        "tokens before the first error, its surprisal rank, correct prefixes)",
    )
    p.add_argument("--reference", help="--structure: the π_ref's model spec or folder")
    p.add_argument("--limit", type=_at_least_one, default=200, help="held-out test problems")
    p.add_argument("--num-samples", type=_at_least_one, default=4, help="π_ref samples each")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out samples and noise")
    p.add_argument("--study", help="a toy-claims output folder: score all its trained runs, "
                   "every seed, with paired intervals (credit-study.{json,md,png})")  # fmt: skip
    p.add_argument(
        "--oracle-k",
        type=int,
        default=None,
        help="rollouts per anchor of the oracle critic (--study: 16; --run: 0: off)",
    )
    p.set_defaults(func=_credit)


def _toy_ref(args: argparse.Namespace) -> int:
    from dqo_tutorial.recipes import train_toy_reference

    summary = train_toy_reference(args.out, passes=args.passes, seed=args.seed)
    print(json.dumps({k: summary[k] for k in ("steps", "wall_s_this_run", "last")}, indent=2))
    return 0


def _add_toy_ref(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "toy-ref",
        help="retrain the toy task's π_ref from scratch (the package ships one: model 'toy')",
        description="SFT of a 1 M-parameter Llama on slip demonstrations of the toy task "
        "(about 5 min on a laptop CPU); the model lands in --out/policy.",
    )
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument(
        "--passes", type=_at_least_one, default=40, help="passes over the 2,000 problems"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of init and data (default 0)")
    p.set_defaults(func=_toy_ref)


def _student_copies(args: argparse.Namespace) -> int:
    from dqo_tutorial.course import make_student_copies

    written = make_student_copies(args.src, args.dst, force=args.force)
    for path in written:
        print(f"wrote {path}")
    print(f"{len(written)} student copies in {args.dst}")
    return 0


def _add_student_copies(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "student-copies",
        help="copy the course notebooks with every solution region blanked out",
        description="Write a copy of every notebook in SRC into DST with each "
        "### BEGIN SOLUTION / ### END SOLUTION region replaced by `raise NotImplementedError` "
        "and all outputs cleared (for instructors without nbgrader). A copy that differs "
        "from the blank copy written before (a student's work) is never overwritten "
        "without --force.",
    )
    p.add_argument("src", help="folder with the notebooks (e.g. notebooks)")
    p.add_argument("dst", help="folder for the student copies (created if missing)")
    p.add_argument("--force", action="store_true", help="overwrite edited copies too")
    p.set_defaults(func=_student_copies)


def _nbgrader_course(args: argparse.Namespace) -> int:
    from dqo_tutorial.course import make_nbgrader_course

    written = make_nbgrader_course(args.notebooks, args.root, args.only or None)
    keys = " ".join(sorted({p.parent.name for p in written}))
    print(f"nbgrader course in {args.root}: {len(written)} assignments ({keys})")
    print(f"next: cd {args.root} && nbgrader generate_assignment <assignment>")
    return 0


def _add_nbgrader_course(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "nbgrader-course",
        help="lay out an nbgrader course directory: one assignment per notebook",
        description="Write ROOT/nbgrader_config.py (smoke mode for the autograder, a 600 s cell "
        "timeout) and ROOT/source/nbNN/<notebook> for each numbered notebook, ready for "
        "`nbgrader generate_assignment nbNN` and `nbgrader autograde nbNN` (README: Teaching "
        "with the course).",
    )
    p.add_argument("notebooks", help="folder of the instructor's notebooks")
    p.add_argument("root", help="the course directory to write (created if missing)")
    p.add_argument("--only", nargs="+", help="notebook file names to include (default: all)")
    p.set_defaults(func=_nbgrader_course)


def _course(args: argparse.Namespace) -> int:
    from dqo_tutorial.course_site import build

    chapters = build(args.notebooks, args.out, execute=not args.no_execute, smoke=args.smoke,
                     timeout=args.timeout)  # fmt: skip
    print(f"{len(chapters)} pages and index.html in {args.out} (open index.html; works offline)")
    return 0


def _add_course(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "course",
        help="execute the numbered notebooks and write them as HTML pages that read offline",
        description="Execute every numbered notebook (NN_*.ipynb) of --notebooks and write it "
        "as an HTML page in --out, with its figures, a local copy of MathJax (mathjax/, no CDN) "
        "and index.html listing the chapters; a failing notebook is named with its cell.",
    )
    p.add_argument("--notebooks", default="notebooks", help="folder of the notebooks")
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--smoke", action="store_true", help="execute in smoke mode (DQO_SMOKE=1)")
    mode.add_argument("--no-execute", action="store_true", help="render the notebooks as stored")
    p.add_argument("--timeout", type=_at_least_one, default=900, help="seconds per cell")
    p.set_defaults(func=_course)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dqo-tutorial", description=__doc__.splitlines()[0])
    verbose_help = "keep the libraries' progress bars and warnings (Hugging Face, datasets)"
    parser.add_argument("--verbose", action="store_true", help=verbose_help)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_tabular_demo(sub)
    _add_sample(sub)
    _add_train(sub)
    _add_eval(sub)
    _add_run(sub)
    _add_experiment(sub)
    _add_credit(sub)
    _add_toy_ref(sub)
    _add_student_copies(sub)
    _add_course(sub)
    _add_nbgrader_course(sub)
    parser.commands = sub.choices  # main() lets a command's own parser name unknown flags
    for command in sub.choices.values():  # `dqo-tutorial run --verbose` works too
        command.add_argument(
            "--verbose", action="store_true", default=argparse.SUPPRESS, help=verbose_help
        )
    return parser


_OUT_ARGUMENTS = (("out", "--out"), ("dst", "DST"), ("root", "ROOT"))
"""Where each command writes: its argument and the name the error messages give it."""


def _refuse(command: str, err: Exception) -> int:
    """The error as one line of its own (a progress bar left open is closed first); status 2."""
    if "tqdm" in sys.modules:
        from tqdm import tqdm

        for bar in list(getattr(tqdm, "_instances", ())):
            bar.close()
    print(f"dqo-tutorial {command}: error: {err}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; returns its exit status (2 for the package's own errors, and for an
    output folder that cannot be made or written)."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # the command's parser names them, with a hint and its own --help
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    if not args.verbose:
        quiet_libraries()
    out, flag = next(
        ((getattr(args, k), f) for k, f in _OUT_ARGUMENTS if getattr(args, k, None) is not None),
        (None, "--out"),
    )
    try:
        if out is not None:
            check_output_folder(out, flag)
        return args.func(args)
    except DQOError as err:
        return _refuse(args.command, err)
    except (OSError, RuntimeError) as err:  # a full disk, a folder not writable: else a bug
        translated = output_error(err, out or ".", flag)
        if translated is None:
            raise
        return _refuse(args.command, translated)
    except KeyboardInterrupt:
        print(f"dqo-tutorial {args.command}: interrupted; rerun the same command to resume",
              file=sys.stderr)  # fmt: skip
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
