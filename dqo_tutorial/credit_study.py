r"""Which tokens does a method blame? Blame accuracy of runs on held-out wrong responses.

The population: π_ref's own responses to *held-out* problems (the test split), drawn with a seed
of their own (never the training data's), kept when they are wrong and the task's step checker
finds their first wrong line w (the toy family: one line per operation,
:func:`dqo_tutorial.toy.line_correctness`). For each run and each response the per-token
signals (lower = more blamed) are

===================  ======================================================================
signal               s_h
===================  ======================================================================
``implied reward``   β·log π_θ(a_h|s_h)/π_ref(a_h|s_h): the token reward a DPO / DRO / DQO
                     policy implies
``critic``           r_h + V(s_{h+1}) − V(s_h): the critic's one-step advantage (DQO runs:
                     DRO's value model reads the prompt only; the λ = 0 advantage of
                     :func:`~dqo_tutorial.viz.compute_quantities`)
``surprisal``        log π_ref(a_h|s_h): π_ref's least likely token is blamed (no training)
``oracle critic``    r_h + V*(s_{h+1}) − V*(s_h) with V* π_ref's success probability
                     (:mod:`dqo_tutorial.oracle`; ``oracle_k`` > 0): the positive control
``random``           uniform noise: the chance level, measured
===================  ======================================================================

scored by :mod:`dqo_tutorial.credit` (token and step blame with their chance levels, partial
credit). A run's critic also gets the AUC of −V for "the state comes after the wrong line
started" against "the state is in the correct prefix" (within wrong responses; later states are
also deeper into the response, a confound the AUC does not remove).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import credit, toy
from .decoding import derive_seed
from .sampling import generate
from .tasks import get_task
from .viz import Checkpoint, Example, example_quantities, forward_example, make_example

__all__ = [
    "HeldOutResponse",
    "oracle_signals",
    "held_out_responses",
    "held_out_wrong_responses",
    "line_of_tokens",
    "score_runs",
    "value_errors",
    "credit_report",
    "first_error_token",
    "error_structure",
    "structure_statistics",
    "structure_report",
]


@dataclass
class HeldOutResponse:
    """A held-out response: its :class:`~dqo_tutorial.viz.Example`, the line of each response
    token, the first wrong line w (None for a correct one) and the prompt it answers."""

    example: Example
    line: list[int]
    wrong: int | None
    prompt: int = 0

    @property
    def blameable(self) -> bool:
        """Wrong *and* with a located first wrong line: finished, outcome 0, a line checked
        wrong. A response whose lines are wrong but whose answer is right (two slips that
        cancel: the toy π_ref drops carries and borrows alike, ``42-17=35`` then ``35+5=30``)
        has no error for an outcome-trained signal to find, and is left out."""
        return self.wrong is not None and self.example.terminal and self.example.reward == 0


def line_of_tokens(example: Example) -> list[int]:
    """The line index of each response token: the number of line starts at or before it, less
    one (``example.step_starts`` lists where each line starts, 0 first)."""
    starts, n = example.step_starts, len(example.tokens)
    return [sum(s <= h for s in starts) - 1 for h in range(n)]


def held_out_wrong_responses(
    reference: Checkpoint, *, task: str = "toy", n_problems: int = 200, k: int = 4, seed: int = 0
) -> list[HeldOutResponse]:
    """:func:`held_out_responses` that are wrong with a located first wrong line
    (:attr:`HeldOutResponse.blameable`)."""
    found = held_out_responses(reference, task=task, n_problems=n_problems, k=k, seed=seed)
    return [r for r in found if r.blameable]


def held_out_responses(
    reference: Checkpoint, *, task: str = "toy", n_problems: int = 200, k: int = 4, seed: int = 0
) -> list[HeldOutResponse]:
    """π_ref's sampled responses (τ = 1) to the first ``n_problems`` test problems, ``k`` each,
    drawn from the stream of ``derive_seed(seed, "credit")``, with the first wrong line of each
    wrong one (the toy family's line checker) and None for a correct one."""
    spec = get_task(task)
    problems = spec.load("test", None, n_problems)
    prompts = [spec.format_prompt(p.question, reference.tokenizer) for p in problems]
    gens = generate(reference.policy, reference.tokenizer, prompts, num_samples=k,
                    temperature=1.0, max_new_tokens=spec.max_new_tokens,
                    seed=derive_seed(seed, "credit"), record_logps=False)  # fmt: skip
    found = []
    for g in gens:
        p = problems[g.prompt_index]
        flags = toy.line_correctness(p.question, g.text)
        ex = make_example(reference.tokenizer, spec, p.question, p.gold, g.text,
                          terminal=g.finished)  # fmt: skip
        wrong = flags.index(False) if False in flags else None
        found.append(HeldOutResponse(ex, line_of_tokens(ex), wrong, g.prompt_index))
    return found


def value_errors(
    run: Checkpoint,
    reference: Checkpoint,
    items: Sequence[HeldOutResponse],
    extra: Mapping[str, Sequence[np.ndarray]] | None = None,
    targets: Sequence[np.ndarray] | None = None,
    values: Sequence[np.ndarray] | None = None,
) -> dict:
    r"""Token mean |G − V(s_h)| of ``run``'s critic on the finished responses of ``items``
    beside its floors from the same responses (:func:`~dqo_tutorial.credit.value_error`): a
    constant (the token mean of G), the prompt-level value (the mean outcome of the prompt's
    other samples) and each ``extra`` predictor (name → one value array per item of ``items``,
    e.g. the oracle's V*). G is the outcome R (the λ = 1 target of a policy still at π_ref),
    or ``targets`` (one array per item, e.g. V*: then the error is the distance to the true
    value, which a binary R hides — |R − V| is smallest at the median, V ≡ 0 or 1).
    ``values``: the critic's V(s_h) per item of ``items`` if already computed
    (:func:`critic_values`), else one forward pass each."""
    keep = [n for n, i in enumerate(items) if i.example.terminal]
    done = [items[n] for n in keep]
    outcome = [i.example.reward for i in done]
    loo = credit.leave_one_out_means(outcome, [i.prompt for i in done]).tolist()
    if values is None:
        values = critic_values(run, reference, items)
    values = [values[n] for n in keep]
    lines = [i.line for i in done]
    goals = [np.full(len(i.line), r) for i, r in zip(done, outcome)]
    if targets is not None:
        goals = [np.asarray(targets[n], dtype=np.float64) for n in keep]
    target, mask, _ = padded(goals, lines)
    mean = float(target[mask.bool()].mean()) if mask.any() else 0.0
    predictions = {
        "critic": padded(values, lines)[0],
        "constant": torch.full(target.shape, mean, dtype=torch.float64),
        "prompt (leave-one-out)": padded(
            [np.full(len(i.line), v) for i, v in zip(done, loo)], lines
        )[0],  # fmt: skip
    }
    for name, rows in (extra or {}).items():
        predictions[name] = padded([rows[n] for n in keep], lines)[0]
    return {k: credit.value_error(v, target, mask) for k, v in predictions.items()}


def critic_values(
    run: Checkpoint, reference: Checkpoint, items: Sequence[HeldOutResponse]
) -> list[np.ndarray]:
    """``run``'s critic V_φ(s_h) on each item's response tokens (one forward pass each)."""
    return [_signals(run, reference.policy, i, 0.1)["value"] for i in items]


def oracle_signals(
    reference: Checkpoint, items: Sequence[HeldOutResponse], *, task: str, k: int, seed: int
) -> list[dict[str, np.ndarray]]:
    r"""Per item, the oracle critic (:mod:`dqo_tutorial.oracle`, ``k`` rollouts of π_ref per
    anchor): ``value`` V*(s_h) and ``critic`` its one-step advantage
    r_h + V*(s_{h+1}) − V*(s_h) (R at the last action of a finished response)."""
    from .decoding import Generation
    from .oracle import oracle_values

    spec = get_task(task)
    gens, refs = [], []
    for i in items:
        ex = i.example
        prompt, response = ex.input_ids[: ex.n_prompt], ex.input_ids[ex.n_prompt :]
        gens.append(Generation(i.prompt, 0, prompt, response, ex.terminal, ex.response, None))
        refs.append(_ref_logps(reference, i).tolist())
    found = oracle_values(reference.policy, reference.tokenizer, gens,
                          [i.example.gold for i in items], refs,
                          [i.example.reward for i in items], grader=spec.is_correct,
                          max_new_tokens=spec.max_new_tokens, k=k, seed=seed)  # fmt: skip
    out = []
    for i, (values, boot, _) in zip(items, found):
        v = np.asarray(values, dtype=np.float64)
        after = np.append(v[1:], (i.example.reward if i.example.terminal else 0.0) + boot)
        out.append({"value": v, "critic": after - v})
    return out


def has_critic(run: Checkpoint) -> bool:
    """A token-level critic: a DQO run's V_φ (DRO's value model reads the prompt only)."""
    return run.value_model is not None and run.config.get("method", "dqo") == "dqo"


def alpha_of(run: Checkpoint) -> float:
    """The process-reward coefficient α the run's critic was trained with (0 without)."""
    return float(run.config.get("process_reward_coef", 0.0) or 0.0)


def _signals(run: Checkpoint, reference: Any, item: HeldOutResponse, beta: float) -> dict:
    """The run's per-token signals on one response. The critic's advantage uses the reward it
    was trained on: with process rewards r_h carries α(Φ(s_{h+1}) − Φ(s_h)) and V_φ learned
    V* − αΦ (Φ(terminal) = 0), so r_h + V_φ(s_{h+1}) − V_φ(s_h) is again V*'s advantage."""
    q = example_quantities(item.example, forward_example(run, reference, item.example),
                           beta=beta, lam=0.0, alpha=alpha_of(run))  # fmt: skip
    out = {"implied reward": q["log_ratio"]}
    if has_critic(run):
        out["critic"] = q["advantage"]
        out["value"] = q["value"]
    return out


def padded(rows: Sequence[np.ndarray], lines: Sequence[Sequence[int]]) -> tuple:
    t = max((len(r) for r in rows), default=0)
    score = torch.zeros(len(rows), t, dtype=torch.float64)
    mask = torch.zeros(len(rows), t, dtype=torch.long)
    line = torch.zeros(len(rows), t, dtype=torch.long)
    for b, (r, k) in enumerate(zip(rows, lines, strict=True)):
        score[b, : len(r)], mask[b, : len(r)] = torch.as_tensor(r), 1
        line[b, : len(r)] = torch.as_tensor(k)
    return score, mask, line


def metrics(rows: Sequence[np.ndarray], items: Sequence[HeldOutResponse]) -> dict[str, float]:
    """Blame accuracy of one signal over the population, with its chance levels."""
    score, mask, line = padded(rows, [i.line for i in items])
    wrong = torch.tensor([i.wrong for i in items])
    out = {
        "token_blame": float(credit.token_blame_hits(score, mask, line, wrong).double().mean()),
        "token_chance": float(credit.token_blame_chance(mask, line, wrong).mean()),
        "step_blame": float(credit.step_blame_hits(score, mask, line, wrong).double().mean()),
        "step_chance": float(credit.step_blame_chance(mask, line).mean()),
    }
    partial = credit.partial_credit(score, mask, line, wrong)
    hits = {"token": credit.token_blame_hits(score, mask, line, wrong).long().tolist(),
            "step": credit.step_blame_hits(score, mask, line, wrong).long().tolist()}  # fmt: skip
    return out | {f"credit_{k}": v for k, v in partial.items()} | {"hits": hits}


def critic_auc(values: Sequence[np.ndarray], items: Sequence[HeldOutResponse]) -> float:
    before, after = [], []
    for v, item in zip(values, items, strict=True):
        for h, k in enumerate(item.line):
            (before if k < item.wrong else after).append(-float(v[h]))
    return credit.auc(after, before)


def score_runs(
    runs: Mapping[str, Checkpoint], reference: Checkpoint, items: Sequence[HeldOutResponse],
    *, seed: int = 0, oracle: Sequence[Mapping[str, np.ndarray]] | None = None,
) -> dict[str, dict[str, float]]:  # fmt: skip
    """``{signal label: metrics}`` for π_ref's surprisal, noise, the oracle critic (``oracle``:
    :func:`oracle_signals` of ``items``) and every run's signals (β from the run's config, 0.1
    if it has none) on the same wrong responses; each metrics dict also holds ``hits``, the
    per-response 0/1 of token and step blame (for paired intervals across runs)."""
    if not items:
        return {}
    rng = random.Random(seed)
    table = {
        "π_ref surprisal": metrics([_ref_logps(reference, i) for i in items], items),
        "random": metrics([np.array([rng.random() for _ in i.line]) for i in items], items),
    }
    if oracle is not None:
        table["oracle critic"] = metrics([o["critic"] for o in oracle], items)
        table["oracle critic"]["critic_auc"] = critic_auc([o["value"] for o in oracle], items)
    for name, run in runs.items():
        beta = float(run.config.get("beta", 0.1))
        signals = [_signals(run, reference.policy, i, beta) for i in items]
        for key in ("implied reward", "critic"):
            if key in signals[0]:
                table[f"{name} {key}"] = metrics([s[key] for s in signals], items)
        if "value" in signals[0]:
            values = [s["value"] for s in signals]
            table[f"{name} critic"]["critic_auc"] = critic_auc(values, items)
    return table


def _ref_logps(reference: Checkpoint, item: HeldOutResponse) -> np.ndarray:
    fwd = forward_example(reference, reference.policy, item.example)
    return fwd["logp_ref"][0, item.example.n_prompt :].double().numpy()


_COLUMNS = (("token_blame", "token blame"), ("token_chance", "chance"),
            ("step_blame", "step blame"), ("step_chance", "chance"),
            ("credit_prefix", "mean s: prefix"), ("credit_wrong", "wrong line"),
            ("critic_auc", "critic AUC"))  # fmt: skip


def report_markdown(table: Mapping[str, Mapping[str, float]], meta: Mapping[str, Any]) -> str:
    """The table as Markdown, headed by what was scored (task, sizes, seed, responses)."""
    head = (f"Blame on {meta['responses']} wrong π_ref responses to {meta['n_problems']} "
            f"held-out {meta['task']} problems ({meta['k']} samples each, seed {meta['seed']}); "
            "accuracies in %, lower s = more blamed.")  # fmt: skip
    lines = [head, "", "| signal | " + " | ".join(c for _, c in _COLUMNS) + " |",
             "|---|" + "---|" * len(_COLUMNS)]  # fmt: skip
    for name, row in table.items():
        cells = []
        for key, _ in _COLUMNS:
            value = row.get(key)
            pct = key.endswith(("blame", "chance"))
            cells.append("–" if value is None else f"{100 * value:.1f}" if pct else f"{value:.3g}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _errors_markdown(errors: Mapping[str, Mapping[str, float]]) -> str:
    """Each critic's value error beside its floors, as Markdown (empty without critics)."""
    if not errors:
        return ""
    keys = list(next(iter(errors.values())))
    lines = ["", "Value error, token mean |R − V| on the finished responses:", "",
             "| run | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]  # fmt: skip
    for name, e in errors.items():
        lines.append(f"| {name} | " + " | ".join(f"{e[k]:.3f}" for k in keys) + " |")
    return "\n".join(lines) + "\n"


def plot_blame(table: Mapping[str, Mapping[str, float]], title: str) -> Any:
    """Token and step blame accuracy per signal, bars, with each one's chance level as a tick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(table)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(names) + 2), 3.6))
    x = np.arange(len(names))
    for shift, (key, label) in ((-0.2, ("token_blame", "token")), (0.2, ("step_blame", "step"))):
        chance = "token_chance" if key == "token_blame" else "step_chance"
        ax.bar(x + shift, [100 * table[n][key] for n in names], 0.38, label=f"{label} blame")
        tick = "chance" if shift < 0 else None
        ax.scatter(x + shift, [100 * table[n][chance] for n in names], marker="_", s=300,
                   color="black", zorder=3, label=tick)  # fmt: skip
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set_ylabel("blame lands on the first wrong line (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return fig


def credit_report(
    runs: Mapping[str, str], out: str, *, task: str = "toy", n_problems: int = 200, k: int = 4,
    seed: int = 0, reference: str | None = None, oracle_k: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """Score ``runs`` (label → run folder or model spec) against ``reference`` (default: the
    π_ref of the first run's config, else the toy π_ref) and write ``credit.json``,
    ``credit.md`` and ``credit.png`` into ``out``; returns the JSON payload. ``oracle_k`` > 0
    adds the oracle critic (:func:`oracle_signals`, that many rollouts per anchor) as a signal
    and as a floor of every critic's value error."""
    from pathlib import Path

    from . import __version__
    from .artifacts import atomic_write_json, save_figure_atomically, source_commit
    from .errors import ConfigError
    from .viz import load_checkpoint

    if get_task(task).line_correctness is None:
        raise ConfigError(f"credit: task {task!r} has no step checker; use toy or toy-<n>ops")
    commit = source_commit()  # the code this job starts on
    loaded = {name: load_checkpoint(spec, name) for name, spec in runs.items()}
    ref_spec = reference or next((c.reference for c in loaded.values() if c.reference), None)
    ref_spec = ref_spec or "toy"
    ref = load_checkpoint(ref_spec, "π_ref")
    found = held_out_responses(ref, task=task, n_problems=n_problems, k=k, seed=seed)
    wrong = [n for n, r in enumerate(found) if r.blameable]
    items = [found[n] for n in wrong]
    oracle = (oracle_signals(ref, found, task=task, k=oracle_k, seed=seed) if oracle_k
              else None)  # fmt: skip
    table = score_runs(loaded, ref, items, seed=seed,
                       oracle=None if oracle is None else [oracle[n] for n in wrong])  # fmt: skip
    extra = None if oracle is None else {"oracle": [o["value"] for o in oracle]}
    errors = {name: value_errors(run, ref, found, extra) for name, run in loaded.items()
              if has_critic(run)}  # fmt: skip
    meta = {"task": task, "n_problems": n_problems, "k": k, "seed": seed,
            "responses": len(items), "reference": ref_spec, "runs": dict(runs),
            "oracle_k": oracle_k, "held_out": len(found),
            "lines_wrong_answer_right": sum(r.wrong is not None and r.example.reward == 1
                                            for r in found),
            "package_version": __version__, "commit": commit}  # fmt: skip
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta, "signals": table, "value_error": errors}
    atomic_write_json(folder / "credit.json", payload)
    (folder / "credit.md").write_text(report_markdown(table, meta) + _errors_markdown(errors))
    if table:
        title = f"{task}: {len(items)} wrong responses, seed {seed}"
        save_figure_atomically(plot_blame(table, title), folder / "credit.png")
    return payload


# ----------------------------------------------------------------------------- task structure

UNCERTAIN = 0.9
"""A token is *uncertain* for π_ref when π_ref(a_h|s_h) < this (the structure statistics)."""


def first_error_token(item: HeldOutResponse) -> int:
    """The response position of a wrong response's first error: the first character of its
    first wrong line w that differs from the gold solution's line w, spaces skipped (the checker
    ignores them), or line w's end when it stops short. Character-level tasks (the toy family:
    one token per character)."""
    gold = toy.gold_solution(item.example.question).split("\n")
    line = item.example.response.split("\n")[item.wrong]
    target = gold[item.wrong] if item.wrong < len(gold) else ""
    j = 0
    for c, char in enumerate(line):
        if char == " ":
            continue
        if j >= len(target) or char != target[j]:
            return item.example.step_starts[item.wrong] + c
        j += 1
    return item.example.step_starts[item.wrong] + len(line)


def error_structure(logp_ref: np.ndarray, error: int, wrong_line: int) -> dict[str, float]:
    r"""One wrong response's structure: ``uncertain_prefix`` — tokens before the first error
    ``error`` where π_ref(a_h|s_h) < :data:`UNCERTAIN`; ``surprisal_rank`` — the error's rank
    by π_ref's log-probability among the response's tokens (1: it is π_ref's least likely
    token; ties count against it); ``correct_prefix`` — 1 if a correct line precedes the first
    wrong one (w > 0)."""
    uncertain = logp_ref < np.log(UNCERTAIN)
    rank = 1 + int(np.sum(np.delete(logp_ref, error) <= logp_ref[error]))
    return {"uncertain_prefix": float(uncertain[:error].sum()), "surprisal_rank": float(rank),
            "correct_prefix": float(wrong_line > 0)}  # fmt: skip


def structure_statistics(reference: Checkpoint, items: Sequence[HeldOutResponse]) -> dict:
    """The task's structure seen by π_ref on its wrong responses ``items`` (blameable ones):
    the means of :func:`error_structure`, the share whose first error is π_ref's least likely
    token (rank 1), the mean number of uncertain tokens per response and the counts."""
    rows = []
    for i in items:
        logp = _ref_logps(reference, i)
        rows.append(error_structure(logp, first_error_token(i), i.wrong)
                    | {"uncertain": float((logp < np.log(UNCERTAIN)).sum())})  # fmt: skip
    if not rows:
        return {"responses": 0}
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    least = float(np.mean([r["surprisal_rank"] == 1 for r in rows]))
    return {"responses": len(rows), "uncertain_prefix": mean["uncertain_prefix"],
            "error_is_least_likely": least, "surprisal_rank": mean["surprisal_rank"],
            "correct_prefix": mean["correct_prefix"],
            "uncertain_tokens": mean["uncertain"]}  # fmt: skip


def structure_report(
    reference: str, tasks: Sequence[str], out: str, *, n_problems: int = 200, k: int = 4,
    seed: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """:func:`structure_statistics` of π_ref (model spec ``reference``) on each task's held-out
    population (:func:`held_out_responses`), with the share of those samples that are right;
    writes ``structure.json`` into ``out`` and returns it."""
    from pathlib import Path

    from .artifacts import atomic_write_json, source_commit
    from .viz import load_checkpoint

    ref = load_checkpoint(reference, "π_ref")
    payload: dict[str, Any] = {"meta": {"reference": reference, "n_problems": n_problems,
                                        "k": k, "seed": seed, "commit": source_commit(),
                                        "uncertain_below": UNCERTAIN}}  # fmt: skip
    for task in tasks:
        found = held_out_responses(ref, task=task, n_problems=n_problems, k=k, seed=seed)
        items = [r for r in found if r.blameable]
        right = float(np.mean([r.example.reward == 1 for r in found])) if found else 0.0
        payload[task] = structure_statistics(ref, items) | {"sampled_accuracy": right}
    Path(out).mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(out) / "structure.json", payload)
    return payload
