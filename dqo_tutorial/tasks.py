r"""Tasks: what a problem set contributes to the one harness (sampling, training, evaluation).

The harness is written once; a task supplies only what differs between datasets:

====================  ========================  ===========================  ===================
field                 GSM8K (``"gsm8k"``)       MATH (``"math"``)            toy (``"toy"``)
====================  ========================  ===========================  ===================
``load``              ``gsm8k.load_gsm8k``      ``math_problems.load_math``  ``toy.load_toy``
``format_prompt``     chat template + system    the same; final answer in    ``"Q: …\nA:\n"``
                      prompt; ``#### N``        ``\boxed{}``
``gold_solution``     annotations stripped,     the worked solution          the step-by-step
                      ``#### N``                                             solution
``default_model``     ``"smollm2"`` (GGUF)      ``"smollm2"``                ``"toy"`` (π_ref)
``exact_potentials``  None: Monte-Carlo Φ (§6)  None: Monte-Carlo Φ (§6)     exact, step checker
``is_correct``        last ``#### N``           last ``\boxed{…}``,          as GSM8K
                                                math-verify, time-limited
``variants``          none                      none                         the gold solution
                                                                             slipped at step k
``line_correctness``  None                      None                         the step checker,
                                                                             ``toy.line_correctness``
====================  ========================  ===========================  ===================

``is_correct(response, gold, mode)`` is the reward of sampling and the accuracy of evaluation;
``extract_answer(response, mode)`` gives the recorded answer and the invalid-format rate (no
strict answer). GSM8K and toy share :func:`dqo_tutorial.gsm8k.is_correct` (last ``#### N``), so
the reward, the accuracy and the invalid-format rate mean the same thing on both; MATH uses
:func:`dqo_tutorial.math_problems.is_correct` in the same two modes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from . import forks, gsm8k, math_problems, toy
from .errors import ConfigError
from .problems import Problem

__all__ = ["Task", "TASKS", "TOY_CHAIN_TASKS", "FORK_TASKS", "get_task"]


_NO_DEFAULTS: Mapping[str, Mapping[str, Any]] = {"sample": {}, "train": {}, "eval": {}}


@dataclass(frozen=True)
class Task:
    """What the harness needs to know about a problem set (see the module table).

    Every rule is stated by the task itself — the grader and the answer extraction have no
    default. ``pipeline_defaults``: values of the ``sample`` / ``train`` / ``eval`` sections of
    :class:`~dqo_tutorial.pipeline.PipelineConfig` under what a configuration gives (none: the
    dataclass defaults, dqo-method.md §8). ``variants``: named responses to a problem beside its
    gold solution (the explorer's presets; the toy task's slip at each step), None: none.
    ``line_correctness``: the task's step checker, ``(question, response) -> one bool per
    response line`` (True: that line and every line before it are right); the explorer marks
    each line ✓/✗ with it and names the first wrong line. None: no step checker (no marks)."""

    name: str
    load: Callable[[str, str | None, int | None], list[Problem]]
    format_prompt: Callable[[str, Any], str]
    gold_solution: Callable[[Problem], str]
    extract_answer: Callable[[str, str], str | None]
    is_correct: Callable[[str, str, str], bool]
    prompt_template_version: str
    default_model: str
    max_new_tokens: int
    splits: tuple[str, ...]
    exact_potentials: Callable[[Any, str, Sequence[int]], list[tuple[int, float]]] | None = None
    variants: Callable[[Problem], Mapping[str, str]] | None = None
    line_correctness: Callable[[str, str], list[bool]] | None = None
    pipeline_defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: _NO_DEFAULTS)


_TOY_PIPELINE = {
    "sample": {"limit": 1000, "num_samples": 8, "batch_size": 256, "shard_size": 250},
    "train": {
        "batch_size": 64,
        "epochs": 1,
        "policy_lr": 1e-4,
        "value_lr": 1e-3,
        "beta": 0.1,
        "value_warmup_steps": 20,
        "warmup_ratio": 0.05,
        "checkpoint_every": 100,
        "mixed_precision": "no",
    },
    "eval": {"num_samples": 4, "batch_size": 256},
}
"""The toy task's pipeline defaults: a 1 M-parameter model tolerates larger learning rates;
sizes chosen so that the whole comparison takes minutes on a CPU (``configs/toy.yaml`` spells
the same values out; tests/test_robustness.py checks they are one run)."""


def _check_toy_source(source: str | None) -> None:
    if source not in (None, "embedded"):
        raise ConfigError(
            f"data_source: the toy task is generated in code: leave it unset (None), not {source!r}"
        )


def _load_toy(split: str, source: str | None, limit: int | None) -> list[Problem]:
    _check_toy_source(source)
    return toy.load_toy(split, limit)


TASKS: dict[str, Task] = {
    "gsm8k": Task(
        name="gsm8k",
        load=gsm8k.load_gsm8k,
        format_prompt=gsm8k.format_prompt,
        gold_solution=lambda p: gsm8k.format_gold_solution(p.answer),
        prompt_template_version=gsm8k.PROMPT_TEMPLATE_VERSION,
        default_model="smollm2",
        max_new_tokens=256,
        splits=gsm8k.SPLITS,
        extract_answer=gsm8k.extract_answer,
        is_correct=gsm8k.is_correct,
    ),
    "math": Task(
        name="math",
        load=math_problems.load_math,
        format_prompt=math_problems.format_prompt,
        gold_solution=math_problems.format_gold_solution,
        prompt_template_version=math_problems.PROMPT_TEMPLATE_VERSION,
        default_model="smollm2",
        max_new_tokens=512,
        splits=math_problems.SPLITS,
        extract_answer=math_problems.extract_answer,
        is_correct=math_problems.is_correct,
    ),
    "toy": Task(
        name="toy",
        load=_load_toy,
        format_prompt=toy.format_prompt,
        gold_solution=lambda p: p.answer,
        prompt_template_version=toy.PROMPT_TEMPLATE_VERSION,
        default_model="toy",
        max_new_tokens=toy.MAX_NEW_TOKENS,
        splits=toy.SPLITS,
        extract_answer=gsm8k.extract_answer,  # the same `#### N` line as GSM8K
        is_correct=gsm8k.is_correct,
        pipeline_defaults=_TOY_PIPELINE,
        variants=lambda p: toy.slipped_solutions(p.question),
        line_correctness=toy.line_correctness,
        exact_potentials=lambda tok, question, ids: toy.exact_boundary_potentials(
            tok, question, ids
        ),
    ),
}


def _chain_task(name: str, load_chain: Callable[[str, int | None], list[Problem]],
                max_new_tokens: int) -> Task:  # fmt: skip
    """The toy task with another problem set of the same grammar (chains of one length): the
    same checker, exact Φ and tokenizer, ``load_chain(split, limit)`` for the problems and a
    generation budget to match."""

    def load(split: str, source: str | None, limit: int | None) -> list[Problem]:
        _check_toy_source(source)
        return load_chain(split, limit)

    return replace(TASKS["toy"], name=name, load=load, max_new_tokens=max_new_tokens)


TOY_CHAIN_TASKS = tuple(f"toy-{n}ops" for n in toy.CHAIN_LENGTHS)
"""``toy-<n>ops``: the toy task with every chain exactly n operations long
(:func:`dqo_tutorial.toy.load_chains`; the claims experiment's horizon sweep)."""
FORK_TASKS = tuple(f"forks-{n}ops" for n in forks.LENGTHS)
"""``forks-<n>ops``: fork chains of n operations (:mod:`dqo_tutorial.forks`, docs/forks.md);
their π_ref is :func:`dqo_tutorial.recipes.train_forks_reference`'s (no default model ships)."""
for _n, _name in zip(toy.CHAIN_LENGTHS, TOY_CHAIN_TASKS):
    TASKS[_name] = _chain_task(_name, lambda split, limit, n=_n: toy.load_chains(split, n, limit),
                               toy.max_new_tokens_for(_n))  # fmt: skip
for _n, _name in zip(forks.LENGTHS, FORK_TASKS):
    TASKS[_name] = _chain_task(_name, lambda split, limit, n=_n: forks.load_forks(split, n, limit),
                               forks.max_new_tokens_for(_n))  # fmt: skip


def get_task(name: str) -> Task:
    """The task called ``name``; a :class:`~dqo_tutorial.errors.ConfigError` lists the known
    ones."""
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown task {name!r}; expected one of {sorted(TASKS)}") from None
