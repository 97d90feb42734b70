r"""Fork chains: the toy task rebuilt so that token-level credit assignment has work to do.

**Why another task.** On the toy task (:mod:`dqo_tutorial.toy`) a wrong response has almost no
uncertain decision before its slip (0.5 tokens where π_ref's probability is below 0.9, on
average), and the slip is π_ref's least likely token in two wrong samples of three: a bandit
gradient and π_ref's surprisal already point at it, so a critic has nothing left to locate
(docs/credit-assignment.md). A fork chain has **several genuinely uncertain decisions per
response**, made at known steps, and success needs every one of them.

**Problems.** Chains of ``n`` = 2 … 12 operations ``+b`` / ``-b`` (1 ≤ b ≤ 20; no ``*``), every
value of the gold solution in 0 … 99 (the start 1 … 60), written and graded exactly as the toy
task's (``a<op>b=c`` lines, ``#### N``; :func:`dqo_tutorial.toy.line_correctness` is the step
checker and :func:`dqo_tutorial.toy.exact_boundary_potentials` the exact Φ). What is controlled
is *where the hard steps are*: a question has :func:`forks_of` (n) = min(n, 2 + n // 4)
**forks** — 2 at n = 2, 3 at n = 4 … 7, 4 at n = 8 … 11, 5 at n = 12 — at random steps; every
other step is **plain** (``+b`` without carry, ``-b`` without borrow). A fork is a ``+b`` with a
carry (units digits sum to 10 or more), except that with probability 1/2 one fork of the
question is a ``-b`` with a borrow instead.

**π_ref's habits (the demonstrations).** :func:`demonstration` writes the gold solution, but
drops a carry with probability :data:`CARRY_DROP` = 0.25 and a borrow with probability
:data:`BORROW_DROP` = 0.55 (the result off by 10; the chain then goes on correctly from the
wrong value), slips a plain step with probability :data:`PLAIN_SLIP` = 0.02, and writes each
line as ``a+b =c`` instead of ``a+b=c`` with probability :data:`FREE_SPACE` = 1/2 — a **free
choice**: the checker ignores spaces, so the choice never matters for the outcome. The
demonstrations are right at a carry with probability 0.75 and at a borrow with 0.45 (the rates,
tests/test_forks.py); a π_ref fitted to them should win a carry fork greedily and lose it in one
sample of four, and mostly lose a borrow fork greedily (a misconception, as the toy task's
carries) while winning about half its samples. Measured on the π_ref of the recipe
(docs/forks.md): greedy accuracy 40.5–75 % at lengths 2 … 12, sampled accuracy falling from 42.5
% to 12.8 % with the number of forks (π_ref's per-fork probabilities were not measured). The
free choices are the distractors that real reasoning text is full of (stylistic tokens of high
entropy): without them a wrong sample's first error was π_ref's least likely token in 76–81 % of
wrong samples at 2 and 4 operations (a dropped borrow, probability ≈ 0.55, is still the least
likely token of a response whose other tokens are near-certain), and surprisal alone located it.
The measured structure statistics, beside the toy task's, are in docs/forks.md.

**Splits.** As the toy task's: test is hash bucket 0 of 5 of the question text
(:func:`dqo_tutorial.toy.split_of`), dev the train bucket with its own seed minus the 2,000 train
questions of that length; a smaller ``n`` is a prefix of a larger one. Tasks ``forks-<n>ops``
(:mod:`dqo_tutorial.tasks`), n = 2 … 12.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterable, Sequence

from . import toy
from .problems import Problem

__all__ = [
    "LENGTHS",
    "CARRY_DROP",
    "BORROW_DROP",
    "PLAIN_SLIP",
    "FREE_SPACE",
    "REFERENCE_RECIPE",
    "START_RANGE",
    "forks_of",
    "step_kind",
    "make_problems",
    "load_forks",
    "max_new_tokens_for",
    "demonstration",
    "sft_corpus",
]

LENGTHS = range(2, 13)
"""Chain lengths of the tasks ``forks-2ops`` … ``forks-12ops``."""
CARRY_DROP = 0.25  # a demonstration drops a carry with this probability …
BORROW_DROP = 0.55  # … a borrow with this one …
PLAIN_SLIP = 0.02  # … and slips a plain step (result off by one of toy.SLIPS) with this one
FREE_SPACE = 0.5  # a line is written "a+b =c" (a free, harmless choice) with this probability
REFERENCE_RECIPE = {"per_length": 400, "passes": 8, "lr": 1e-3}
"""π_ref's recipe (:func:`dqo_tutorial.recipes.train_forks_reference`): 400 train problems of
each length 2 … 12, 8 fresh demonstrations of each, AdamW at 1e-3 from the toy π_ref."""
_SPLIT_SEEDS = {"train": 1, "dev": 3, "test": 2}
_SEED_BASE = 50_000  # forks questions draw from seeds of their own (toy.load_chains: 1000·n + …)
START_RANGE = (1, 60)  # wider than the toy's 1 … 20: enough distinct 2-step chains of each plan


def forks_of(n_ops: int) -> int:
    """How many forks a chain of ``n_ops`` operations has: min(n, 2 + n // 4)."""
    return min(n_ops, 2 + n_ops // 4)


def step_kind(value: int, op: toy.Op) -> str:
    """``"carry"`` (``+b`` whose units digits sum to 10 or more), ``"borrow"`` (``-b`` with the
    larger units digit in b) or ``"plain"``."""
    if not toy.has_carry(value, op):
        return "plain"
    return "carry" if op[0] == "+" else "borrow"


def _operands(value: int, kind: str) -> list[toy.Op]:
    """Every operation of ``kind`` from ``value`` that keeps the result in 0 … MAX_VALUE."""
    low, high = toy.ADD_RANGE
    ops = [("+", b) for b in range(low, min(high, toy.MAX_VALUE - value) + 1)]
    ops += [("-", b) for b in range(low, min(high, value) + 1)]
    return [op for op in ops if step_kind(value, op) == kind]


def _plan(rng: random.Random, n_ops: int) -> list[str]:
    """The kind of each step: :func:`forks_of` forks at random steps, one of them a borrow with
    probability 1/2, the rest plain."""
    kinds = ["plain"] * n_ops
    forks = rng.sample(range(n_ops), forks_of(n_ops))
    for k in forks:
        kinds[k] = "carry"
    if rng.random() < 0.5:
        kinds[rng.choice(forks)] = "borrow"
    return kinds


def _walk(rng: random.Random, kinds: Sequence[str]) -> str | None:
    """A question whose steps have the planned ``kinds``; None when the walk reaches a value
    with no operation of the next kind."""
    start = value = rng.randint(*START_RANGE)
    ops: list[toy.Op] = []
    for kind in kinds:
        feasible = _operands(value, kind)
        if not feasible:
            return None
        ops.append(op := rng.choice(feasible))
        value = toy.apply_op(value, op)
    return toy.format_question(start, ops)


def _random_question(rng: random.Random, n_ops: int) -> str | None:
    """A question following a random plan (walks are redrawn for the *same* plan, so that
    plans easy to walk are not favoured: one question in two has a borrow fork); None if 100
    walks fail."""
    kinds = _plan(rng, n_ops)
    for _ in range(100):
        if (question := _walk(rng, kinds)) is not None:
            return question
    return None


def make_problems(
    n: int, seed: int, n_ops: int, *, split: str | None = None, exclude: Collection[str] = ()
) -> list[Problem]:
    """``n`` distinct fork chains of ``n_ops`` operations, deterministic in ``seed`` and
    prefix-stable in ``n``; ``split``: keep one hash bucket (:func:`dqo_tutorial.toy.split_of`),
    ``exclude``: questions never to return."""
    if n_ops not in LENGTHS:
        raise ValueError(f"n_ops must lie in {LENGTHS.start}..{LENGTHS.stop - 1}, got {n_ops}")
    rng = random.Random(seed)
    seen, problems, attempts = set(exclude), [], 0
    while len(problems) < n:
        attempts += 1
        if attempts > 100 * n + 10_000:
            raise ValueError(f"could not find {n} distinct fork chains of {n_ops} operations")
        question = _random_question(rng, n_ops)
        if question is None or question in seen:
            continue
        if split is not None and toy.split_of(question) != split:
            continue
        seen.add(question)
        gold = str(toy.running_values(question)[-1])
        problems.append(Problem(question, toy.gold_solution(question), gold, len(problems)))
    return problems


def load_forks(split: str, n_ops: int, n: int | None = None) -> list[Problem]:
    """The ``forks-<n_ops>ops`` split: ``n`` problems (default
    :data:`dqo_tutorial.toy.SPLIT_SIZES`); the split rules of the module docstring."""
    if split not in toy.SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {toy.SPLITS}")
    size = toy.SPLIT_SIZES[split] if n is None else n
    seed = _SEED_BASE + 1000 * n_ops + _SPLIT_SEEDS[split]
    if split == "dev":
        exclude = {p.question for p in load_forks("train", n_ops)}
        return make_problems(size, seed, n_ops, split="train", exclude=exclude)
    return make_problems(size, seed, n_ops, split=split)


def max_new_tokens_for(n_ops: int) -> int:
    """The generation budget: :func:`dqo_tutorial.toy.max_new_tokens_for` (12 characters a step
    line, 16 for the answer and slack)."""
    return toy.max_new_tokens_for(n_ops)


def demonstration(problem: Problem, rng: random.Random) -> str:
    """The gold solution with π_ref's habits (module docstring): a carry dropped with
    probability :data:`CARRY_DROP`, a borrow with :data:`BORROW_DROP` (the result 10 off), a
    plain step slipped with :data:`PLAIN_SLIP`; later steps go on correctly from the value
    written. Each line puts a space before its ``=`` with probability :data:`FREE_SPACE` (the
    checker ignores spaces). Whether a step is a carry or a borrow is judged on the value the
    demonstration has reached (after an earlier slip, as π_ref itself would)."""
    start, ops = toy.parse_question(problem.question)
    values = toy.running_values(problem.question)
    value, lines = start, []
    for k, op in enumerate(ops):
        result, kind = toy.apply_op(value, op), step_kind(value, op)
        rate = {"carry": CARRY_DROP, "borrow": BORROW_DROP, "plain": PLAIN_SLIP}[kind]
        if rng.random() < rate:
            dropped = result - 10 if op[0] == "+" else result + 10
            slip = kind != "plain" and dropped != values[k + 1]
            result = dropped if slip else toy.slip(result, values[k + 1], ops[k + 1 :], rng)
        space = " " if rng.random() < FREE_SPACE else ""
        lines.append(f"{value}{op[0]}{op[1]}{space}={result}")
        value = result
    return "\n".join([*lines, f"#### {value}"])


def sft_corpus(problems: Iterable[Problem], seed: int, *, copies: int = 1) -> list[tuple[str, str]]:
    """``(prompt, response)`` pairs: ``copies`` passes over ``problems`` (pass-major), each a
    fresh :func:`demonstration`; deterministic in ``seed``. Responses carry no EOS (as
    :func:`dqo_tutorial.toy.sft_corpus`)."""
    problems, rng = list(problems), random.Random(seed)
    return [
        (toy.format_prompt(p.question), demonstration(p, rng))
        for _ in range(copies)
        for p in problems
    ]


def mixed_train_problems(lengths: Sequence[int], per_length: int) -> list[Problem]:
    """``per_length`` train problems of every length in ``lengths``, interleaved (π_ref's SFT
    set): the first ``per_length`` of each ``forks-<n>ops`` train split."""
    by_length = [load_forks("train", n, per_length) for n in lengths]
    return [p for group in zip(*by_length) for p in group]
