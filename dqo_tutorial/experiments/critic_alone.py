r"""Can DQO's critic V_φ learn the state value from the toy data at all? The critic alone.

The policy stays π_ref (frozen), so DQO's value loss (dqo-method.md §3–§5, λ = 1, μ = π_ref:
importance weights 1, log-ratio 0) is a plain regression of V_φ(s_h) on the outcome R of the
response through s_h — the target whose conditional mean is the state value V^{π_ref}(s_h). Each
run of the grid trains V_φ alone with the trainer (:func:`~dqo_tutorial.train.train`, DQO
with ``value_warmup_steps = max_steps − 1``: the trainer refuses a warm-up as long as training,
and the policy's one update at the last step never reaches V_φ, which is read from the
checkpoints with π_ref as the policy) and scores its checkpoints on held-out π_ref responses to
*test* problems (:func:`~dqo_tutorial.credit_study.held_out_responses`, a seed of their own):

====================  =====================================================================
measure               definition
====================  =====================================================================
value error           token mean |R − V_φ(s_h)| over the finished held-out responses
                      (:func:`~dqo_tutorial.credit.value_error`)
floor ``constant``    the same with V ≡ the token mean of R (a critic without features)
floor ``prompt``      V ≡ the mean outcome of the prompt's *other* held-out samples
                      (:func:`~dqo_tutorial.credit.leave_one_out_means`): a critic that reads
                      the prompt only; below it, the critic localises errors in the response
extra floors          any per-token predictor passed as ``extra_floors`` (e.g. an oracle
                      V^{π_ref}(s_h)): a callable of the finished responses returning a
                      (B, T) tensor laid out as :func:`value_targets`
blame, AUC            the critic advantage r_h + V(s_{h+1}) − V(s_h) scored on the wrong
                      responses (:mod:`dqo_tutorial.credit_study`: token / step blame, the AUC
                      of −V for "after the first wrong line" against "before it")
====================  =====================================================================

A run (:class:`CriticRun`) is TrainConfig fields over the study's base (the toy pipeline's
train section: batch 64, β 0.1, value lr 1e-3, cosine, warm-up ratio 0.05), a schedule length
``steps`` (``max_steps``), an optional ``budget`` where the study stops it (the schedule is
still the ``steps``-long one; a later rerun with a larger budget resumes it), the head's
initialisation (``zero``: the package's; ``default``: PyTorch's ``nn.Linear`` initialisation,
a diagnostic only, not a TrainConfig field) and whether the policy is frozen.
:func:`run_critic_study` builds the dataset, trains every run (skipping finished ones), scores
every checkpoint it has not scored and writes ``critic.json``, ``critic.md`` and ``critic.png``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import credit
from ..credit_study import HeldOutResponse, critic_auc, held_out_responses, metrics, padded
from ..tasks import TASKS
from ..viz import compute_quantities, token_rewards

__all__ = [
    "CriticRun",
    "CriticConfig",
    "DEFAULT_RUNS",
    "SMOKE",
    "train_config",
    "eval_steps",
    "value_targets",
    "floor_errors",
    "critic_values",
    "score_critic",
    "head_init",
    "table_markdown",
    "plot_curves",
    "run_critic_study",
]

MACHINE = "2-core CPU box"
"""The machine the committed results ran on (the figure's footer)."""

ExtraFloor = Callable[[Sequence[HeldOutResponse]], torch.Tensor]
"""An extra floor: finished held-out responses → (B, T) float per-token values, rows in their
order, columns their response tokens (the layout of :func:`value_targets`)."""


@dataclass(frozen=True)
class CriticRun:
    """One critic run: ``fields`` (TrainConfig fields over the study's base), ``steps`` (the
    schedule: ``max_steps``), ``budget`` (stop after this step; None: ``steps``), ``head`` (the
    scalar head's initialisation: ``zero`` or ``default``) and ``frozen`` (the policy stays
    π_ref; False: DQO as it trains, the policy updated after ``value_warmup_steps``)."""

    name: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    steps: int = 1000
    budget: int | None = None
    head: str = "zero"
    frozen: bool = True

    @property
    def stop(self) -> int:
        """The last step the study trains this run to."""
        return min(self.budget or self.steps, self.steps)


def _lr_run(lr: float, budget: int | None = None) -> CriticRun:
    return CriticRun(f"lr {lr:g}", {"value_lr": lr}, 1000, budget)


DEFAULT_RUNS: tuple[CriticRun, ...] = (
    CriticRun("DQO as trained (50 steps)", {}, 50, frozen=False),
    CriticRun("defaults (50 steps)", {}, 50),
    CriticRun("50 steps, PyTorch head init", {}, 50, head="default"),
    CriticRun("50 steps, constant lr", {"lr_scheduler": "constant", "warmup_ratio": 0.0}, 50),
    CriticRun("50 steps, lr 1e-2", {"value_lr": 1e-2}, 50),
    _lr_run(1e-4, 200),
    _lr_run(3e-4),
    _lr_run(1e-3),
    _lr_run(3e-3, 200),
)
"""The grid: DQO's critic as it trains; the frozen-policy critic at the defaults (50 steps); one
suspected cause changed at a time (head initialisation, warm-up + cosine decay, learning rate);
and 1,000-step schedules at four value learning rates. All four ran to step 200 first; the two
best there (3e-4, 1e-3) ran on to 1,000, the others stop at 200 (a 2-core CPU box trains
about one step a second: the whole grid is about 50 minutes of one core)."""


def _base_train() -> dict[str, Any]:
    base = dict(TASKS["toy"].pipeline_defaults["train"])
    base.pop("epochs")
    return base | {"value_warmup_steps": 10}  # the claims study's 10 (400 prompts)


@dataclass(frozen=True)
class CriticConfig:
    """The study: dataset (``prompts`` × ``num_samples`` π_ref samples at τ = 1, ``seed``), the
    held-out responses (``test_problems`` × ``test_samples``), the step counts scored
    (``eval_steps``, each a multiple of ``checkpoint_every``, and every run's last step), the
    TrainConfig ``base`` and the ``runs``."""

    prompts: int = 400
    num_samples: int = 8
    seed: int = 0
    test_problems: int = 200
    test_samples: int = 4
    eval_steps: tuple[int, ...] = (25, 50, 100, 200, 500, 1000)
    checkpoint_every: int = 25
    base: Mapping[str, Any] = field(default_factory=_base_train)
    runs: tuple[CriticRun, ...] = DEFAULT_RUNS

    def __post_init__(self) -> None:
        object.__setattr__(self, "eval_steps", tuple(self.eval_steps))
        object.__setattr__(self, "runs", tuple(self.runs))
        bad = [s for s in self.eval_steps if s % self.checkpoint_every]
        if bad:
            raise ValueError(f"eval_steps {bad}: not multiples of {self.checkpoint_every}")
        names = [r.name for r in self.runs]
        if len(set(names)) != len(names):
            raise ValueError(f"CriticConfig.runs: names must be distinct: {names}")
        for run in self.runs:
            if run.head not in ("zero", "default"):
                raise ValueError(f"{run.name}: head must be zero or default, got {run.head!r}")
            if run.stop != run.steps and run.stop % self.checkpoint_every:
                raise ValueError(f"{run.name}: budget {run.stop} is not a checkpoint step")
            train_config(self, run, "data")  # a bad field fails now


SMOKE: dict[str, Any] = {
    "prompts": 8,
    "num_samples": 2,
    "test_problems": 6,
    "test_samples": 2,
    "eval_steps": (2,),
    "checkpoint_every": 2,
    "base": _base_train() | {"batch_size": 4, "value_warmup_steps": 1},
    "runs": (
        CriticRun("frozen", {}, 4, budget=2),
        CriticRun("trained", {}, 3, frozen=False),
        CriticRun("head", {}, 2, head="default"),
    ),
}
"""Tiny sizes: every code path in seconds (``--smoke``)."""


def train_config(cfg: CriticConfig, run: CriticRun, data: str) -> Any:
    """The run's :class:`~dqo_tutorial.configs.TrainConfig`: DQO on ``data`` from the toy π_ref,
    ``cfg.base`` then ``run.fields``, ``max_steps = run.steps``, every checkpoint kept and, with
    a frozen policy, ``value_warmup_steps = steps − 1``."""
    from ..configs import TrainConfig

    fields = {**cfg.base, **run.fields}
    if run.frozen:
        fields["value_warmup_steps"] = run.steps - 1
    fields |= {"max_steps": run.steps, "checkpoint_every": cfg.checkpoint_every,
               "keep_checkpoints": 10_000, "seed": cfg.seed}  # fmt: skip
    return TrainConfig(method="dqo", model="toy", task="toy", data=data, **fields)


def eval_steps(cfg: CriticConfig, run: CriticRun) -> list[int]:
    """The steps at which ``run`` is scored: ``cfg.eval_steps`` up to its stop, and its stop."""
    return sorted({s for s in cfg.eval_steps if s <= run.stop} | {run.stop})


def run_folder(run: CriticRun) -> str:
    """The run's folder name under ``runs/``: its name made filesystem-safe."""
    keep = (c if c.isalnum() or c in "-." else "-" for c in run.name.lower())
    return "-".join(filter(None, "".join(keep).split("-")))


# ================================================================================== training


class _Stop(Exception):
    """Raised by the training callback at a run's budget (after that step's checkpoint)."""


@contextmanager
def head_init(kind: str) -> Iterator[None]:
    """While the block runs, V_φ's scalar head starts as ``kind`` says: ``zero`` (the package's
    :class:`~dqo_tutorial.modeling.ValueHead`: w = 0, c = 0, so V ≡ 0 and the trunk gets no
    gradient at the first step) or ``default`` (``nn.Linear``'s own initialisation, uniform in
    ±1/√d: V starts non-zero and the trunk is trained from the first step)."""
    if kind == "zero":
        yield
        return
    from .. import modeling

    original = modeling.ValueHead.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.proj.reset_parameters()

    modeling.ValueHead.__init__ = init
    try:
        yield
    finally:
        modeling.ValueHead.__init__ = original


def _checkpoint(folder: Path, step: int) -> Path:
    return folder / "checkpoints" / f"step-{step:06d}"


def train_seconds(folder: Path) -> float:
    """The wall seconds :func:`train_run` has spent on the run in ``folder`` over all its
    invocations (``wall_s.json``; 0.0 before the first)."""
    import json

    path = folder / "wall_s.json"
    return float(json.loads(path.read_text())["seconds"]) if path.is_file() else 0.0


def train_run(cfg: CriticConfig, run: CriticRun, folder: Path, data: str) -> float:
    """Train ``run`` into ``folder`` up to its stop (resuming from its newest checkpoint), adding
    the wall seconds spent to ``wall_s.json``; returns them (0.0 when its stop's checkpoint is
    already there)."""
    from ..artifacts import atomic_write_json
    from ..train import train

    if _checkpoint(folder, run.stop).is_dir():
        return 0.0

    def stop_at_budget(step: int, _stats: Mapping[str, float]) -> None:
        if step >= run.stop:
            raise _Stop

    start = time.perf_counter()
    with head_init(run.head):
        try:
            train(train_config(cfg, run, data), folder, progress=False, callback=stop_at_budget)
        except _Stop:
            pass
    spent = time.perf_counter() - start
    atomic_write_json(folder / "wall_s.json", {"seconds": train_seconds(folder) + spent})
    return spent


def load_critic(folder: Path, step: int, reference: Any) -> Any:
    """V_φ of the run in ``folder`` at checkpoint ``step`` (eval mode, float32), built on
    π_ref's architecture as the trainer builds it (Accelerate saves V_φ as the second model)."""
    from ..modeling import value_model_for

    config = train_config_of(folder)
    critic = value_model_for(reference.policy, config.get("value_model", "separate"),
                             extra_layers=config.get("value_extra_layers", 0),
                             head_width=config.get("value_head_width", 0))  # fmt: skip
    path = _checkpoint(folder, step) / "pytorch_model_1.bin"
    critic.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return critic.float().eval()


def train_config_of(folder: Path) -> dict[str, Any]:
    """The TrainConfig fields stored with a run (``train_config.json``)."""
    import json

    stored = json.loads((folder / "train_config.json").read_text())
    return dict(stored.get("config", stored))


# ================================================================================ evaluation


def value_targets(items: Sequence[HeldOutResponse]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(target, mask)``, (B, T): the outcome R of each *finished* response of ``items`` (in
    order) broadcast over its response tokens, and 1 on those tokens — the layout every
    per-token prediction (critic, floors) is scored in."""
    done = [i for i in items if i.example.terminal]
    rows = [np.full(len(i.line), i.example.reward) for i in done]
    target, mask, _ = padded(rows, [i.line for i in done])
    return target, mask


def squared_error(values: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> float:
    r"""Token mean (G − V)² over the response tokens (0.0 without any): the score of the squared
    loss V_φ is trained on, minimised by the conditional *mean* (|G − V| by the median).

    .. math::  \mathrm{mse}(V) = \frac{\sum_{b,h} m_{b,h}\,(G_{b,h} - V_{b,h})^2}
               {\sum_{b,h} m_{b,h}}
    """
    m = mask.bool()
    n = int(m.sum())
    err = torch.where(m, (targets.double() - values.double()) ** 2, 0.0)
    return float(err.sum()) / n if n else 0.0


def floor_errors(
    items: Sequence[HeldOutResponse],
    extra_floors: Mapping[str, ExtraFloor] | None = None,
    *,
    squared: bool = False,
) -> dict[str, float]:
    """The value error (``squared``: :func:`squared_error`) of the floors on the finished
    responses of ``items``: ``constant`` (the token mean of R), ``prompt (leave-one-out)``
    (the mean outcome of the prompt's other samples), the zero-initialised critic's V ≡ 0 (a
    baseline, not a floor: |R − V| is minimised by the median, so with fewer than half the
    responses correct V ≡ 0 beats the mean; a critic that learns the mean, as the squared loss
    teaches, is compared with the two mean predictors) and each of ``extra_floors`` (name →
    callable of the finished responses returning (B, T) values in the layout of
    :func:`value_targets`). Under the squared error the leave-one-out floor is pessimistic (its
    k − 1 samples add p(1 − p)/(k − 1) to the true prompt value's p(1 − p)), so ``squared``
    adds ``prompt value (unbiased)``: each response's squared error to its leave-one-out mean
    times (k − 1)/k, k the prompt's finished responses (an unbiased estimate of the error of a
    critic that knows each prompt's value)."""
    done = [i for i in items if i.example.terminal]
    target, mask = value_targets(items)
    outcome = [i.example.reward for i in done]
    loo = credit.leave_one_out_means(outcome, [i.prompt for i in done]).tolist()
    mean = float(target[mask.bool()].mean()) if mask.any() else 0.0
    loo_rows = [np.full(len(i.line), v) for i, v in zip(done, loo)]
    predictions = {
        "constant": torch.full(target.shape, mean, dtype=torch.float64),
        "prompt (leave-one-out)": padded(loo_rows, [i.line for i in done])[0],
        "V ≡ 0 (the untrained head)": torch.zeros(target.shape, dtype=torch.float64),
    }
    for name, predict in (extra_floors or {}).items():
        values = torch.as_tensor(predict(done), dtype=torch.float64)
        if values.shape != target.shape:
            raise ValueError(f"floor {name!r}: shape {tuple(values.shape)}, want {target.shape}")
        predictions[name] = values
    score = squared_error if squared else credit.value_error
    out = {k: score(v, target, mask) for k, v in predictions.items()}
    if squared and done:
        prompts = [i.prompt for i in done]
        k = torch.tensor([prompts.count(p) for p in prompts], dtype=torch.float64)
        shrink = torch.where(k > 1, (k - 1) / k, 1.0)[:, None]
        loo_err = (target - predictions["prompt (leave-one-out)"]) ** 2 * shrink
        out["prompt value (unbiased)"] = squared_error(loo_err.sqrt(), 0 * target, mask)
    return out


@torch.no_grad()
def critic_values(
    critic: Any, items: Sequence[HeldOutResponse], *, batch_size: int = 256
) -> list[np.ndarray]:
    """The critic advantage inputs of each response of ``items``, batched: per response a
    float64 array of length H + 1, V(s_h) at its H response tokens then V(s_{H+1})
    (the bootstrap value a length-cut response would use)."""
    out: list[np.ndarray] = []
    for lo in range(0, len(items), batch_size):
        chunk = items[lo : lo + batch_size]
        width = max(len(i.example.input_ids) for i in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        att = torch.zeros_like(ids)
        for b, item in enumerate(chunk):
            n = len(item.example.input_ids)
            ids[b, :n], att[b, :n] = torch.tensor(item.example.input_ids), 1
        v = critic(ids, att)
        for b, item in enumerate(chunk):
            ex = item.example
            row = v.values[b, ex.n_prompt : len(ex.input_ids)].double().numpy()
            out.append(np.append(row, float(v.final[b])))
    return out


def _advantages(values: Sequence[np.ndarray], items: Sequence[HeldOutResponse]) -> list:
    """r_h + T_{h+1} − V(s_h) at λ = 0 with π_θ = π_ref (:func:`~dqo_tutorial.viz.
    compute_quantities`, batched): the critic's one-step advantage per response token."""
    rows = [v[:-1] for v in values]
    value, mask, _ = padded(rows, [i.line for i in items])
    reward = padded([np.array(token_rewards(i.example, 0.0)[i.example.n_prompt :])
                      for i in items], [i.line for i in items])[0]  # fmt: skip
    final = torch.tensor([v[-1] for v in values])
    terminal = torch.tensor([i.example.terminal for i in items])
    zeros = torch.zeros(value.shape)
    q = compute_quantities(zeros, zeros, value, final, reward, mask, terminal, beta=1.0, lam=0.0)
    return [q["advantage"][b, : len(i.line)].double().numpy() for b, i in enumerate(items)]


def score_critic(critic: Any, items: Sequence[HeldOutResponse]) -> dict[str, float]:
    """A critic on the held-out responses: ``value_error`` and ``value_mse``
    (:func:`squared_error`) on the finished responses, and on the
    wrong ones with a located first wrong line the blame of its advantage
    (``token_blame``, ``step_blame`` with their chance levels, ``credit_*``) and ``critic_auc``."""
    values = critic_values(critic, items)
    done = [k for k, i in enumerate(items) if i.example.terminal]
    target, mask = value_targets(items)
    lines = [items[k].line for k in done]
    predicted = padded([values[k][:-1] for k in done], lines)[0]
    out = {"value_error": credit.value_error(predicted, target, mask),
           "value_mse": squared_error(predicted, target, mask)}  # fmt: skip
    wrong = [k for k, i in enumerate(items) if i.blameable]
    if wrong:
        w_items = [items[k] for k in wrong]
        out |= metrics(_advantages([values[k] for k in wrong], w_items), w_items)
        out["critic_auc"] = critic_auc([values[k][:-1] for k in wrong], w_items)
    return out


# =================================================================================== reports


def _run_label(run: Mapping[str, Any], train: Mapping[str, Any]) -> list[str]:
    """The table's description cells of a run: value lr, schedule, head, policy."""
    sched = f"{train['lr_scheduler']}, warm-up {train['warmup_ratio']:g}, {run['steps']} steps"
    policy = "frozen" if run["frozen"] else f"trains from step {train['value_warmup_steps']}"
    return [f"{train['value_lr']:g}", sched, run["head"], policy]


def _steps_table(
    runs: Mapping[str, Any], steps: Sequence[int], key: str, bold_below: float
) -> list[str]:
    """Markdown rows: each run's description and its ``key`` score at every step (bold below
    ``bold_below``)."""
    cols = ["run", "value lr", "schedule", "head", "policy", *[f"step {s}" for s in steps]]
    lines = ["| " + " | ".join(cols) + " |", "|---" * len(cols) + "|"]
    for name, r in runs.items():
        cells = [name, *_run_label(r["run"], r["train"])]
        for s in steps:
            e = r["scores"].get(str(s), {}).get(key)
            cells.append("" if e is None else f"**{e:.3f}**" if e < bold_below else f"{e:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def table_markdown(payload: Mapping[str, Any]) -> str:
    """``critic.json``'s payload as Markdown: the value error of every run at every scored step
    beside the floors (bold: below the prompt-level floor), then each run's blame and AUC at its
    last scored step and its training wall time."""
    meta, floors, runs = payload["meta"], payload["floors"], payload["runs"]
    steps = sorted({int(s) for r in runs.values() for s in r["scores"]})
    prompt = floors.get("prompt (leave-one-out)", -math.inf)
    head = (f"The critic alone: V_φ trained on DQO's targets, {meta['prompts']} train prompts × "
            f"{meta['num_samples']} π_ref samples (τ = 1, seed {meta['seed']}); value error = "
            f"token mean |R − V| on {meta['finished']} finished π_ref responses to "
            f"{meta['test_problems']} held-out test problems ({meta['test_samples']} each); "
            f"blame on the {meta['wrong']} wrong ones. {meta['machine']}, torch "
            f"{meta['torch']}, commit {meta['commit']}, {meta['date']}.")  # fmt: skip
    lines = [head, "", "Floors: " + ", ".join(f"{k} **{v:.3f}**" for k, v in floors.items()), ""]
    lines += _steps_table(runs, steps, "value_error", prompt)
    if "floors_mse" in payload:
        mse = payload["floors_mse"]
        lines += ["", "Squared error, token mean (R − V)² (the loss V_φ is trained on; bold: "
                  "below the unbiased prompt value). Floors: " + ", ".join(
                      f"{k} **{v:.3f}**" for k, v in mse.items()), ""]  # fmt: skip
        lines += _steps_table(runs, steps, "value_mse", mse.get("prompt value (unbiased)", 0))
    lines += ["", "At each run's last scored step (blame and chance in %; AUC: −V ranks the "
              "states after the first wrong line below those before it):", "",
              "| run | step | value error | token blame | chance | step blame | chance | "
              "critic AUC | steps trained | train wall s |", "|---" * 10 + "|"]  # fmt: skip
    for name, r in runs.items():
        if not r["scores"]:
            continue
        last = max(r["scores"], key=int)
        sc = r["scores"][last]
        pct = [f"{100 * sc[k]:.1f}" if k in sc else "–"
               for k in ("token_blame", "token_chance", "step_blame", "step_chance")]  # fmt: skip
        auc = f"{sc['critic_auc']:.3f}" if "critic_auc" in sc else "–"
        lines.append(f"| {name} | {last} | {sc['value_error']:.3f} | " + " | ".join(pct)
                     + f" | {auc} | {r['steps_trained']} | {r['train_s']:.0f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot_curves(payload: Mapping[str, Any]) -> Any:
    """Value error |R − V| (left) and, where scored, squared error (R − V)² (right) against
    training steps (log scale), one line per run, every floor a horizontal line; the footer
    names the date, commit, machine and torch version."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("value_error", "floors", "value error: token mean |R − V|, held out")]
    if "floors_mse" in payload:
        panels.append(("value_mse", "floors_mse", "squared error: token mean (R − V)², held out"))
    widths = [1.0] * len(panels) + [0.5]  # the last column holds the runs' legend
    fig, axes = plt.subplots(1, len(widths), figsize=(5.2 * len(panels) + 2.6, 4.8),
                             gridspec_kw={"width_ratios": widths})  # fmt: skip
    runs: list = []
    for ax, (key, floors, label) in zip(axes, panels):
        for k, (name, r) in enumerate(payload["runs"].items()):
            pts = sorted((int(s), v[key]) for s, v in r["scores"].items() if key in v)
            if pts:
                style = "-o" if r["run"]["steps"] > 100 else "--s"
                (line,) = ax.plot(*zip(*pts), style, ms=4, color=f"C{k % 10}", label=name)
                runs += [line] if ax is axes[0] else []
        colours = ("black", "tab:gray", "tab:brown", "tab:olive", "tab:cyan")
        lines = [ax.axhline(v, color=c, ls=":", lw=1.5, label=f"floor: {name} {v:.3f}")
                 for (name, v), c in zip(payload[floors].items(), colours * 3)]  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("critic training steps (batch 64)")
        ax.set_ylabel(label)
        ax.legend(handles=lines, fontsize=6, loc="upper right")
    axes[-1].axis("off")
    axes[-1].legend(handles=runs, fontsize=7, loc="center left")
    meta = payload["meta"]
    fig.suptitle(f"Critic alone on the toy data ({meta['prompts']} prompts × "
                 f"{meta['num_samples']}), policy frozen at π_ref", fontsize=9)  # fmt: skip
    fig.text(0.01, 0.01, f"{meta['date']} · commit {meta['commit']} · {meta['machine']} · torch "
             f"{meta['torch']}", fontsize=7, color="gray")  # fmt: skip
    return fig


# =============================================================================== the study


def _dataset(cfg: CriticConfig, out: Path) -> str:
    """Sample (or reuse) the study's dataset in ``out/data``: the toy π_ref at τ = 1 with exact
    process rewards stored (unused here: α = 0), as the claims study samples it."""
    from ..sampling import SamplingConfig, build_dataset

    sampling = SamplingConfig(model="toy", task="toy", limit=cfg.prompts,
                              num_samples=cfg.num_samples, temperature=1.0,
                              max_new_tokens=TASKS["toy"].max_new_tokens, batch_size=256,
                              shard_size=cfg.prompts, seed=cfg.seed,
                              process_rewards=True)  # fmt: skip
    if not (out / "data" / "manifest.json").is_file():
        build_dataset(sampling, out / "data", progress=False)
    return str(out / "data")


def _meta(cfg: CriticConfig, items: Sequence[HeldOutResponse]) -> dict[str, Any]:
    from datetime import date

    from .. import __version__
    from ..artifacts import source_commit

    return {"prompts": cfg.prompts, "num_samples": cfg.num_samples, "seed": cfg.seed,
            "test_problems": cfg.test_problems, "test_samples": cfg.test_samples,
            "finished": sum(i.example.terminal for i in items),
            "wrong": sum(i.blameable for i in items), "machine": MACHINE,
            "torch": torch.__version__, "commit": source_commit(),
            "date": date.today().isoformat(), "package_version": __version__}  # fmt: skip


def _write(out: Path, payload: Mapping[str, Any]) -> None:
    from ..artifacts import atomic_write_json, save_figure_atomically

    atomic_write_json(out / "critic.json", payload)
    (out / "critic.md").write_text(table_markdown(payload))
    save_figure_atomically(plot_curves(payload), out / "critic.png")


def run_critic_study(
    cfg: CriticConfig, out: str, *, extra_floors: Mapping[str, ExtraFloor] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:  # fmt: skip
    """Run the study into ``out``: the dataset (``data/``), every run (``runs/<name>/``, skipped
    when its stop's checkpoint exists), every unscored checkpoint, then ``critic.json``,
    ``critic.md`` and ``critic.png``. Rerun to resume; a run whose definition changed (other
    than its budget) is rescored. ``extra_floors``: see :func:`floor_errors`. Returns the
    payload."""
    import json

    from ..viz import load_checkpoint

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    done = folder / "critic.json"
    stored = json.loads(done.read_text()) if done.is_file() else {}
    data = _dataset(cfg, folder)
    reference = load_checkpoint("toy", "π_ref")
    items = held_out_responses(reference, task="toy", n_problems=cfg.test_problems,
                               k=cfg.test_samples, seed=cfg.seed)  # fmt: skip
    payload = {"meta": _meta(cfg, items), "floors": floor_errors(items, extra_floors),
               "floors_mse": floor_errors(items, extra_floors, squared=True),
               "runs": {}}  # fmt: skip
    for run in cfg.runs:
        entry = stored.get("runs", {}).get(run.name, {})
        if _definition(entry.get("run", {})) != _definition(_jsonable(asdict(run))):
            entry = {}  # another run under this name: score it anew
        run_dir = folder / "runs" / run_folder(run)
        log(f"critic-alone: {run.name} (steps {run.stop} of {run.steps})")
        train_run(cfg, run, run_dir, data)
        scores = dict(entry.get("scores", {}))
        for step in eval_steps(cfg, run):
            if "value_mse" not in scores.get(str(step), {}):
                scores[str(step)] = score_critic(load_critic(run_dir, step, reference), items)
        payload["runs"][run.name] = {
            "run": _jsonable(asdict(run)),
            "train": train_config_of(run_dir),
            "train_s": train_seconds(run_dir),
            "steps_trained": run.stop,
            "scores": scores,
        }
        _write(folder, payload)
    return payload


def _definition(run: Mapping[str, Any]) -> dict[str, Any]:
    """What a run's checkpoints depend on: its fields without the budget (a larger budget
    continues the same schedule, so the checkpoints scored so far stay valid)."""
    return {k: v for k, v in run.items() if k != "budget"}


def _jsonable(x: Any) -> Any:
    """``x`` as JSON gives it back (tuples → lists, mappings → dicts), for comparisons."""
    import json

    return json.loads(json.dumps(x))
