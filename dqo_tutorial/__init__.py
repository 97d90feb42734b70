"""dqo_tutorial: Direct Q-function Optimization (DQO), a tested reference implementation and course.

One concept per module (``import dqo_tutorial as dqo``; submodules load on first use), in
layers that ``make test`` checks (pyproject's ``[tool.importlinter]``, docs/architecture.md):

- :mod:`~dqo_tutorial.kernels`   pure tensor kernels: log-probs, λ-returns, importance weights,
  the soft-Bellman residual and the DQO / DPO / DRO losses (no model inside);
- :mod:`~dqo_tutorial.naive`     slow per-row reference loops the kernels are tested against;
- :mod:`~dqo_tutorial.modeling`  action-aligned per-token log-probs of a causal LM, the value model;
- :mod:`~dqo_tutorial.tabular`   a finite tree MDP with the exact soft-optimal Q*, V*, π*;
- :mod:`~dqo_tutorial.problems`  the neutral problem type every task produces, one JSONL reader;
- :mod:`~dqo_tutorial.gsm8k`     GSM8K loading, prompting and answer checking;
- :mod:`~dqo_tutorial.toy`       the toy arithmetic-chain task with an exact per-step checker;
- :mod:`~dqo_tutorial.tokenization` tokenizer conventions, the tiny tokenizer, step boundaries;
- :mod:`~dqo_tutorial.models`    loading real and tiny models and tokenizers, offline;
- :mod:`~dqo_tutorial.collate`   joint tokenisation, action masks and padding;
- :mod:`~dqo_tutorial.sampling`  the offline dataset: samples with log μ, log π_ref and rewards;
- :mod:`~dqo_tutorial.methods`   one unit per training method (SFT, RFT, DPO, DRO, DQO), a registry;
- :mod:`~dqo_tutorial.evaluate`  greedy and sampling accuracy on GSM8K;
- :mod:`~dqo_tutorial.experiments` the toy-claims experiment (seeds, error bars, ablations), the
  credit study across its seeds, the critic alone;
- :mod:`~dqo_tutorial.recipes`   how the shipped toy π_ref was made (``dqo-tutorial toy-ref``);
- :mod:`~dqo_tutorial.configs`   the sampling, training and evaluation configs, each field checked;
- :mod:`~dqo_tutorial.errors`    the package's own errors (one line each; the CLI exits 2 on them);
- :mod:`~dqo_tutorial.artifacts` atomic writes, resumable and locked run directories;
- :mod:`~dqo_tutorial.cli`       the ``dqo-tutorial`` command.
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "kernels",
    "naive",
    "modeling",
    "tabular",
    "problems",
    "gsm8k",
    "math_problems",
    "time_limit",
    "toy",
    "tasks",
    "tokenization",
    "models",
    "collate",
    "sampling",
    "methods",
    "train",
    "evaluate",
    "pipeline",
    "experiments",
    "recipes",
    "viz",
    "course",
    "exercises",
    "artifacts",
    "configs",
    "errors",
    "cli",
)
__all__ = ["__version__", *_SUBMODULES]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
