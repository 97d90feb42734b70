r"""A toy multi-step reasoning task: arithmetic chains with an exact per-step checker.

GSM8K is the real benchmark, but it needs a real model. To watch DQO work end to end on a CPU we
want a task that a *tiny* causal LM can half-learn in minutes, whose reasoning comes in explicit
steps, and whose steps can be graded **exactly** (dqo-method.md §6: "toy task: exact per-step
correctness is known, Φ follows from it"). This module is that task: the data, the checker and a
character-level tokenizer. It produces the same objects as :mod:`dqo_tutorial.gsm8k`, so the
sampling, training and evaluation code runs on both unchanged.

**Problems.** A question is a start value and 2–4 operations, applied left to right::

    question:  7 +5 *2 -3
    solution:  7+5=12
               12*2=24
               24-3=21
               #### 21

Operations are ``+b`` and ``-b`` with 1 ≤ b ≤ 20 and ``*k`` with 2 ≤ k ≤ 9; every intermediate
value of the gold solution stays in 0 … 99 (no negatives, no division). The solution has one
step per line, ``a<op>b=c``, and ends with GSM8K's ``#### N`` line, so
:func:`dqo_tutorial.gsm8k.extract_answer` / :func:`~dqo_tutorial.gsm8k.is_correct` grade it as
they grade GSM8K. Problems *are* :class:`~dqo_tutorial.problems.Problem` records (``question``,
``answer`` = the gold solution, ``gold`` = the final number, ``index``); the operations needed
for step checking are parsed back from the question (:func:`parse_question`), so no extra field
exists.

**Splits.** Generated on the fly, no data files: :func:`load_toy` gives 2,000 train, 500 dev and
500 test problems by default (any ``n`` works, and a smaller ``n`` is a prefix of a larger one).
Whether a question is test is a property of the question itself — a hash bucket
(:func:`split_of`, 1 in 5 → test) — so test is disjoint from the others for every ``n``. Dev
questions come from the train bucket with their own seed, minus the 2,000 default train
problems (the ones π_ref was trained on): a held-out set for choosing hyperparameters without
touching test (:mod:`dqo_tutorial.experiments` tunes on it). A train split larger than the default
may overlap dev.

**Step correctness: prefix semantics.** Line k of a response is correct iff it *is* line k of
the gold solution (up to spaces): the right operation applied to the **true** running value, with
the true result — and every earlier line is correct too. One slip therefore makes its own line
and every later line incorrect, even when the later lines do correct arithmetic on the wrong
value: for ``7 +5 *2 -3``, the response ``7+5=12, 12*2=25, 25-3=22`` (a slip at step 2) grades
``[True, False, False]``, and ``7+5=13, 13*2=26, 26-3=23`` grades ``[False, False, False]``. The
other useful reading, *local* correctness ("is this line right given the previous line"), is
available as ``semantics="local"``: it flags only the slip itself. Both agree on the first error
(:func:`first_error`).

**Exact potentials.** For process rewards (§6) Φ(s) should estimate the probability of finishing
correctly from the state s. Here we define it exactly, for the *faithful continuation*: the
solver that, from s on, makes no more mistakes and carries on from the values the response has
written (it never goes back to repair an earlier line — exactly how the demonstrations below
behave). Since ``+b``, ``-b`` and ``*k`` (k ≥ 2) are injective, a wrong value never turns right
again, so at a step boundary (the state right after a newline)

.. math::  \Phi(s) = \mathbb 1[\text{every completed line of } s \text{ is correct}]
           \quad(\text{prefix semantics}), \qquad \Phi(s_1) = 1.

It is "exact" in the sense of *recoverable from the text*, not the success probability of the
model being trained: a policy could in principle ignore its own wrong line and still finish
right (graded by the outcome reward, not by Φ). :func:`exact_potentials` gives Φ after each
completed line of a text; :func:`exact_boundary_potentials` gives the ``(h, Φ)`` pairs at the
token boundaries of :func:`dqo_tutorial.sampling.step_boundaries` — the same format as
:func:`~dqo_tutorial.sampling.monte_carlo_potentials`, free of sampling noise.

**Demonstrations with slips.** :func:`demonstration` writes the gold solution but, with
probability ``error_rate`` per step, makes an arithmetic slip (the result off by ±1, ±2 or ±10)
and then continues *correctly from the wrong value*. The final answer is then wrong and the
mistake sits at an identifiable step. Random slips alone make the SFT model's *samples* wrong, but
hardly its greedy answers (the right result stays the most likely one). So demonstrations can also
carry a **systematic** error, ``carry_error_rate``: a step with a carry or borrow drops it (with
probability above 0.5 this becomes the SFT model's greedy habit — a misconception that RL from the
outcome reward can unlearn, since the samples still find the right carry some of the time).

Observed on a 2-core CPU (4 layers, hidden 128 — :func:`toy_model_config`; 40 passes over the
2,000 training problems, batch 64, AdamW at 3e-3 with one-cycle decay: 1,250 steps, ~4.5 min),
one seed, accuracy on the test split (greedy: 500 problems; sampled: 200 problems × 4):

========================================  ========  ======================
demonstrations                            greedy    sampled (τ = 1)
========================================  ========  ======================
``error_rate=0.1``                        96 %      60 %
``error_rate=0.1, carry_error_rate=0.6``  53 %      43 %
``error_rate=0.1, carry_error_rate=0.7``  50 %      40 %
========================================  ========  ======================

(With random slips only, greedy accuracy is set by the training budget instead: 12 % after 10
passes.) The recommended π_ref recipe is therefore :data:`SFT_ERROR_RATE` = 0.1 and
:data:`SFT_CARRY_ERROR_RATE` = 0.6; 56 % of the test problems have at least one carry or borrow.

**Prompt and tokenizer.** The prompt is ``"Q: 7 +5 *2 -3\nA:\n"`` (:func:`format_prompt`); the
tokenizer (:func:`toy_tokenizer`) is character-level over exactly the 20 characters the task uses,
plus ``<pad>``, ``<unk>`` and ``<eos>``: 23 tokens. Its chat template renders the same prompt, so
:func:`dqo_tutorial.gsm8k.format_prompt` with this tokenizer gives the toy prompt too.
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # transformers loads on first use: `import dqo_tutorial.tasks` stays light
    from transformers import LlamaConfig, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from .problems import Problem
from .tokenization import fast_tokenizer_from_json, step_boundaries

__all__ = [
    "Op",
    "OPERATORS",
    "MAX_VALUE",
    "START_RANGE",
    "ADD_RANGE",
    "MUL_RANGE",
    "SPLITS",
    "SPLIT_SIZES",
    "PROMPT_TEMPLATE",
    "PROMPT_TEMPLATE_VERSION",
    "TASK_VERSION",
    "MAX_NEW_TOKENS",
    "SFT_ERROR_RATE",
    "SFT_CARRY_ERROR_RATE",
    "SLIPS",
    "ALPHABET",
    "SPECIAL_TOKENS",
    "TOY_CHAT_TEMPLATE",
    "apply_op",
    "parse_question",
    "format_question",
    "running_values",
    "gold_solution",
    "slipped_solution",
    "slipped_solutions",
    "split_of",
    "make_problems",
    "load_toy",
    "CHAIN_LENGTHS",
    "max_new_tokens_for",
    "load_chains",
    "format_prompt",
    "parse_step",
    "line_correctness",
    "step_correctness",
    "first_error",
    "exact_potentials",
    "exact_boundary_potentials",
    "has_carry",
    "slip",
    "demonstration",
    "sft_corpus",
    "toy_tokenizer",
    "toy_model_config",
    "REFERENCE_DIR",
]

Op = tuple[str, int]
"""One operation: ``("+", 5)``, ``("-", 3)`` or ``("*", 2)``."""

OPERATORS = ("+", "-", "*")
MAX_VALUE = 99  # every value of a gold solution lies in 0 … MAX_VALUE
START_RANGE = (1, 20)  # the start value
ADD_RANGE = (1, 20)  # operand of + and -
MUL_RANGE = (2, 9)  # factor of *: k ≥ 2 keeps every operation injective (no *0, no *1)
SLIPS = (-10, -2, -1, 1, 2, 10)  # how far a slipped result is off
SPLITS = ("train", "dev", "test")
SPLIT_SIZES = {"train": 2000, "dev": 500, "test": 500}
_SPLIT_SEEDS = {"train": 1, "dev": 3, "test": 2}
_TEST_BUCKETS = 5  # split_of: hash bucket 0 of 5 → test (20% of all questions)

# Bump when the generator, the prompt or the solution format changes (record it in manifests).
TASK_VERSION = "toy-v1"
PROMPT_TEMPLATE_VERSION = "toy-v1"
PROMPT_TEMPLATE = "Q: {question}\nA:\n"
SFT_ERROR_RATE = 0.1
"""Recommended ``error_rate`` of the π_ref demonstrations (module docstring)."""
SFT_CARRY_ERROR_RATE = 0.6
"""Recommended ``carry_error_rate`` of the π_ref demonstrations (module docstring)."""
MAX_NEW_TOKENS = 64
"""A sampling budget with room to spare: the longest gold response is 43 characters (+ EOS)."""

# ----------------------------------------------------------------------------- problems


def apply_op(value: int, op: Op) -> int:
    """``value <op> operand``."""
    symbol, operand = op
    if symbol == "+":
        return value + operand
    if symbol == "-":
        return value - operand
    if symbol == "*":
        return value * operand
    raise ValueError(f"unknown operator {symbol!r}; expected one of {OPERATORS}")


_QUESTION = re.compile(r"(\d+)((?: [+*-]\d+)+)")
_OP = re.compile(r" ([+*-])(\d+)")


def parse_question(question: str) -> tuple[int, list[Op]]:
    """``"7 +5 *2 -3"`` → ``(7, [("+", 5), ("*", 2), ("-", 3)])``; ValueError if malformed."""
    match = _QUESTION.fullmatch(question.strip())
    if match is None:
        raise ValueError(f"not a toy question (e.g. '7 +5 *2 -3'): {question!r}")
    ops = [(symbol, int(operand)) for symbol, operand in _OP.findall(match[2])]
    return int(match[1]), ops


def format_question(start: int, ops: Sequence[Op]) -> str:
    """The inverse of :func:`parse_question`."""
    return " ".join([str(start), *(f"{symbol}{operand}" for symbol, operand in ops)])


def running_values(question: str) -> list[int]:
    """The true values ``[v_0, v_1, …, v_n]``: the start, then the value after each step."""
    value, ops = parse_question(question)
    values = [value]
    for op in ops:
        values.append(value := apply_op(value, op))
    return values


def _step_line(a: int, op: Op, c: int) -> str:
    return f"{a}{op[0]}{op[1]}={c}"


def _answer_line(value: int) -> str:
    return f"#### {value}"


def _gold_lines(question: str) -> list[str]:
    values = running_values(question)
    _, ops = parse_question(question)
    steps = [_step_line(a, op, c) for a, op, c in zip(values, ops, values[1:])]
    return [*steps, _answer_line(values[-1])]


def gold_solution(question: str) -> str:
    """The gold solution: one ``a<op>b=c`` line per step, then ``#### N``."""
    return "\n".join(_gold_lines(question))


def slipped_solution(question: str, step: int) -> str:
    """The gold solution with the result of ``step`` (0-based) off by +1 and the later steps
    computed correctly from the wrong value, so ``step`` is the first wrong line."""
    value, ops = parse_question(question)
    lines = []
    for k, op in enumerate(ops):
        result = apply_op(value, op) + (1 if k == step else 0)
        lines.append(_step_line(value, op, result))
        value = result
    return "\n".join([*lines, _answer_line(value)])


def slipped_solutions(question: str) -> dict[str, str]:
    """``{"slip at step k": …}`` for every step k = 1 … n: responses whose first error is known
    (the explorer's presets, where a process reward should drop)."""
    n = len(parse_question(question)[1])
    return {f"slip at step {k + 1}": slipped_solution(question, k) for k in range(n)}


def _random_question(rng: random.Random, min_ops: int, max_ops: int) -> str:
    """A random question: each operator uniform among those that can keep the value in
    0 … MAX_VALUE, then its operand uniform among those that do."""
    start = value = rng.randint(*START_RANGE)
    ops: list[Op] = []
    for _ in range(rng.randint(min_ops, max_ops)):
        feasible = []
        if value < MAX_VALUE:
            feasible.append(("+", ADD_RANGE[0], min(ADD_RANGE[1], MAX_VALUE - value)))
        if value >= ADD_RANGE[0]:
            feasible.append(("-", ADD_RANGE[0], min(ADD_RANGE[1], value)))
        if 0 < value and value * MUL_RANGE[0] <= MAX_VALUE:
            feasible.append(("*", MUL_RANGE[0], min(MUL_RANGE[1], MAX_VALUE // value)))
        symbol, low, high = rng.choice(feasible)
        op = (symbol, rng.randint(low, high))
        ops.append(op)
        value = apply_op(value, op)
    return format_question(start, ops)


def split_of(question: str) -> str:
    """The split a question belongs to: ``"test"`` for hash bucket 0 of 5, else ``"train"``.

    A property of the text alone, so the splits are disjoint whatever their sizes.
    """
    digest = hashlib.sha256(question.encode("utf-8")).digest()
    return "test" if int.from_bytes(digest[:8], "big") % _TEST_BUCKETS == 0 else "train"


def make_problems(
    n: int,
    seed: int,
    *,
    min_ops: int = 2,
    max_ops: int = 4,
    split: str | None = None,
    exclude: Collection[str] = (),
) -> list[Problem]:
    """``n`` distinct random problems, deterministic in ``seed``.

    ``split``: keep only questions of that hash bucket (:func:`split_of`: ``"train"`` or
    ``"test"``); None keeps all. ``exclude``: questions never to return. The first ``m`` problems
    do not depend on ``n`` (prefix-stable). ``index`` is the position in the list.
    """
    if not 1 <= min_ops <= max_ops:
        raise ValueError(f"need 1 <= min_ops <= max_ops, got {min_ops}, {max_ops}")
    if split is not None and split not in ("train", "test"):
        raise ValueError(f"unknown hash bucket {split!r}; expected 'train' or 'test'")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    seen: set[str] = set(exclude)
    problems: list[Problem] = []
    attempts = 0
    while len(problems) < n:
        attempts += 1
        if attempts > 100 * n + 10_000:
            raise ValueError(f"could not find {n} distinct problems with {min_ops}..{max_ops} ops")
        question = _random_question(rng, min_ops, max_ops)
        if question in seen or (split is not None and split_of(question) != split):
            continue
        seen.add(question)
        answer = gold_solution(question)
        gold = str(running_values(question)[-1])
        problems.append(Problem(question, answer, gold, len(problems)))
    return problems


def load_toy(split: str = "train", n: int | None = None) -> list[Problem]:
    """The toy split: ``n`` problems (default :data:`SPLIT_SIZES`: 2,000 train, 500 dev, 500 test).

    Deterministic (a fixed seed per split) and prefix-stable in ``n``; test is disjoint from
    train and dev for any sizes, dev from the default 2,000 train problems (module docstring).
    The counterpart of :func:`dqo_tutorial.gsm8k.load_gsm8k`.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    size = SPLIT_SIZES[split] if n is None else n
    if split == "dev":
        exclude = {p.question for p in load_toy("train")}
        return make_problems(size, _SPLIT_SEEDS["dev"], split="train", exclude=exclude)
    return make_problems(size, _SPLIT_SEEDS[split], split=split)


CHAIN_LENGTHS = range(2, 9)
"""Chain lengths of :func:`load_chains` (and of the tasks ``toy-2ops`` … ``toy-8ops``): one
operation has too few distinct questions for a 2,000-problem train split."""


def max_new_tokens_for(n_ops: int) -> int:
    """The generation budget for chains of ``n_ops`` operations: 12 characters per step line
    (``a<op>b=c`` plus the newline; a dropped carry can leave 0 … 99) and 16 for the
    ``#### N`` line and slack — :data:`MAX_NEW_TOKENS` (64) at the default longest chain, 4."""
    return 12 * n_ops + 16


def load_chains(split: str, n_ops: int, n: int | None = None) -> list[Problem]:
    """Like :func:`load_toy`, but every question has exactly ``n_ops`` operations (the horizon
    sweep of :mod:`dqo_tutorial.experiments`). The same split rules: test is the hash bucket, dev
    the train bucket minus this length's default train problems; seeds differ per length."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if n_ops not in CHAIN_LENGTHS:
        raise ValueError(f"n_ops must lie in {CHAIN_LENGTHS.start}..{CHAIN_LENGTHS.stop - 1}")
    size = SPLIT_SIZES[split] if n is None else n
    seed = 1000 * n_ops + _SPLIT_SEEDS[split]
    if split == "dev":
        exclude = {p.question for p in load_chains("train", n_ops)}
        return make_problems(
            size, seed, min_ops=n_ops, max_ops=n_ops, split="train", exclude=exclude
        )
    return make_problems(size, seed, min_ops=n_ops, max_ops=n_ops, split=split)


def format_prompt(question: str, tokenizer: Any = None) -> str:
    r"""``"Q: {question}\nA:\n"``; the solution starts right after it.

    ``tokenizer`` is accepted for signature compatibility with
    :func:`dqo_tutorial.gsm8k.format_prompt` and ignored: the toy prompt is always plain text
    (no system instructions — a character-level model needs none).
    """
    return PROMPT_TEMPLATE.format(question=question)


# ----------------------------------------------------------------------------- checking

_STEP = re.compile(r"\s*(-?\d+)\s*([+*-])\s*(\d+)\s*=\s*(-?\d+)\s*")
_ANSWER = re.compile(r"\s*####\s*(-?\d+)\s*")


def parse_step(line: str) -> tuple[int, Op, int] | None:
    """``"12*2=24"`` → ``(12, ("*", 2), 24)``; None unless the line is exactly one step
    (spaces around the parts are allowed, negative a and c too)."""
    match = _STEP.fullmatch(line)
    if match is None:
        return None
    return int(match[1]), (match[2], int(match[3])), int(match[4])


def _lines(response: str) -> list[str]:
    """The lines of a response; a final empty piece (after a trailing newline) is no line."""
    lines = response.split("\n")
    return lines[:-1] if lines[-1] == "" else lines


def line_correctness(question: str, response: str) -> list[bool]:
    """Prefix correctness of every line of ``response`` (complete or not), including the answer
    line: line k is True iff lines 0 … k equal the gold solution's lines 0 … k (numerically; spaces
    ignored). Lines beyond the gold solution are False."""
    values = running_values(question)
    _, ops = parse_question(question)
    n = len(ops)
    result: list[bool] = []
    ok = True
    for k, line in enumerate(_lines(response)):
        if k < n:
            ok = ok and parse_step(line) == (values[k], ops[k], values[k + 1])
        elif k == n:
            answer = _ANSWER.fullmatch(line)
            ok = ok and answer is not None and int(answer[1]) == values[-1]
        else:
            ok = False
        result.append(ok)
    return result


def step_correctness(question: str, response: str, *, semantics: str = "prefix") -> list[bool]:
    """One bool per operation of ``question`` (the ``#### N`` line is not a step; the outcome
    reward grades it). Missing steps are False; lines after the last step are ignored.

    ``semantics="prefix"`` (default): step k is correct iff the response's first k + 1 lines are
    the gold solution's (the true running value, the right operation, the true result) — one slip
    makes every later step incorrect. ``"local"``: step k is correct iff its line is a well-formed
    ``a<op>b=c`` with the question's k-th operation, c = a <op> b, and a the value the previous
    line wrote (the start value for k = 0) — only the slip itself is flagged.
    """
    _, ops = parse_question(question)
    n = len(ops)
    if semantics == "prefix":
        flags = line_correctness(question, response)[:n]
    elif semantics == "local":
        flags = []
        previous: int | None = running_values(question)[0]
        for k, line in enumerate(_lines(response)[:n]):
            step = parse_step(line)
            if step is None:
                flags.append(False)
                previous = None
                continue
            a, op, c = step
            flags.append(a == previous and op == ops[k] and c == apply_op(a, op))
            previous = c
    else:
        raise ValueError(f"semantics must be 'prefix' or 'local', got {semantics!r}")
    return flags + [False] * (n - len(flags))


def first_error(question: str, response: str) -> int | None:
    """The 0-based index of the first incorrect step (the same under both semantics), or None."""
    flags = step_correctness(question, response)
    return flags.index(False) if False in flags else None


def exact_potentials(question: str, response: str) -> list[float]:
    r"""Φ after each *completed* line of ``response`` (one value per ``"\n"``).

    Φ = 1.0 iff every completed line so far is correct (prefix semantics, answer line included),
    else 0.0: the outcome of the faithful, error-free continuation (module docstring). Φ of the
    prompt state is 1.0; the final state's potential is the outcome reward.
    """
    flags = line_correctness(question, response)
    return [float(ok) for ok in flags[: response.count("\n")]]


def exact_boundary_potentials(
    tokenizer: PreTrainedTokenizerBase, question: str, response_ids: Sequence[int]
) -> list[tuple[int, float]]:
    """``(h, Φ(s_{h+1}))`` at every step boundary h of
    :func:`dqo_tutorial.sampling.step_boundaries` — the format of
    :func:`~dqo_tutorial.sampling.monte_carlo_potentials`, computed exactly. Feed the pairs to
    :func:`~dqo_tutorial.sampling.process_rewards` with ``phi_start=1.0``."""
    ids = list(response_ids)
    pairs = []
    for h in step_boundaries(tokenizer, ids):
        prefix = tokenizer.decode(ids[:h], skip_special_tokens=True)
        phis = exact_potentials(question, prefix)
        pairs.append((h, phis[-1] if phis else 1.0))
    return pairs


# ----------------------------------------------------------------------------- demonstrations


def slip(result: int, truth: int, rest: Sequence[Op], rng: random.Random) -> int:
    """A wrong result: ``result`` plus one of :data:`SLIPS`, never the true value ``truth`` (so
    the chain stays wrong); preferably one that keeps the rest of the chain in 0 … MAX_VALUE,
    else a non-negative one (else any: only after a systematic slip went negative)."""
    candidates = [result + d for d in SLIPS if result + d != truth]  # 5 or 6 of them

    def in_range(value: int) -> bool:
        for op in [None, *rest]:
            value = value if op is None else apply_op(value, op)
            if not 0 <= value <= MAX_VALUE:
                return False
        return True

    preferred = [v for v in candidates if in_range(v)] or [v for v in candidates if v >= 0]
    return rng.choice(preferred or candidates)


def has_carry(value: int, op: Op) -> bool:
    """Whether ``value <op> operand`` needs a carry (``+``: the units digits sum to 10 or more)
    or a borrow (``-``: the units digit of ``value`` is the smaller one). Never for ``*``."""
    symbol, operand = op
    if symbol == "+":
        return value % 10 + operand % 10 >= 10
    if symbol == "-":
        return value % 10 < operand % 10
    return False


def demonstration(
    problem: Problem,
    error_rate: float,
    rng: random.Random,
    *,
    carry_error_rate: float = 0.0,
) -> str:
    """The gold solution with arithmetic slips; later steps then compute correctly *from the
    wrong value*, and the last line reports it (``#### wrong``).

    Two kinds of slips, both decided step by step:

    - **random** (``error_rate``): the result is off by one of :data:`SLIPS`, chosen at random
      among those that keep the rest of the chain in 0 … MAX_VALUE (when there are any). An SFT
      model copies these as *noise*: its greedy answer stays right (the correct result is the
      most likely one), its samples go wrong at rate ≈ ``error_rate`` per step.
    - **systematic** (``carry_error_rate``, default 0): a step with a carry or borrow
      (:func:`has_carry`) drops it — the result is 10 too small (``+``) or too large (``-``).
      Above 0.5 this is a *misconception* of the SFT model: its greedy answer is wrong on most
      carry steps, while its samples still find the right result with probability
      ≈ 1 − ``carry_error_rate`` — exactly what RL from the outcome reward can fix. (This slip
      can take the later chain out of 0 … MAX_VALUE, even below 0.)

    Guarantees: with both rates 0 the result is ``problem.answer`` exactly; a slip never lands on
    the true value and the operations are injective, so the final answer is wrong iff some step
    slipped; each slip is the only step flagged by ``step_correctness(..., semantics="local")``.
    """
    for name, rate in (("error_rate", error_rate), ("carry_error_rate", carry_error_rate)):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {rate}")
    values = running_values(problem.question)
    _, ops = parse_question(problem.question)
    value, lines = values[0], []
    for k, op in enumerate(ops):
        result, truth = apply_op(value, op), values[k + 1]
        if carry_error_rate and has_carry(value, op) and rng.random() < carry_error_rate:
            dropped = result - 10 if op[0] == "+" else result + 10
            result = dropped if dropped != truth else slip(result, truth, ops[k + 1 :], rng)
        elif rng.random() < error_rate:
            result = slip(result, truth, ops[k + 1 :], rng)
        lines.append(_step_line(value, op, result))
        value = result
    lines.append(_answer_line(value))
    return "\n".join(lines)


def sft_corpus(
    problems: Iterable[Problem],
    error_rate: float,
    seed: int,
    *,
    copies: int = 1,
    carry_error_rate: float = 0.0,
) -> list[tuple[str, str]]:
    """``(prompt, response)`` pairs for supervised fine-tuning: ``copies`` passes over
    ``problems`` (pass-major), each response a :func:`demonstration` with fresh slips.

    Responses carry no EOS: tokenise with
    ``collate.tokenize_example(tokenizer, prompt, response, add_eos=True)`` so the model learns to
    stop. Deterministic in ``seed``.
    """
    problems = list(problems)
    rng = random.Random(seed)
    return [
        (
            format_prompt(p.question),
            demonstration(p, error_rate, rng, carry_error_rate=carry_error_rate),
        )
        for _ in range(copies)
        for p in problems
    ]


# ----------------------------------------------------------------------------- tokenizer

ALPHABET = "\n #*+-:=0123456789AQ"
"""Every character of the task's prompts and solutions, in id order (ids 3 … 22)."""
SPECIAL_TOKENS = ("<pad>", "<unk>", "<eos>")  # ids 0, 1, 2 (as models.tiny_causal_lm assumes)

TOY_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ 'Q: ' + message['content'] + '\\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ 'A:\\n' + message['content'] + '<eos>' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'A:\\n' }}{% endif %}"
)
r"""Renders user turns as ``Q: …`` and the generation prompt as ``A:\n``; system messages are
dropped. With it, ``gsm8k.format_prompt(q, toy_tokenizer()) == toy.format_prompt(q)``."""


@functools.lru_cache(maxsize=1)
def _toy_tokenizer_json() -> str:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *ALPHABET])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    # Every character is its own pre-token (newlines too: '.' would skip them); offsets are
    # per character. Fuse() joins the decoded tokens with nothing in between (the default
    # decoder would put a space between tokens).
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return tok.to_str()


def toy_tokenizer(padding_side: str = "left") -> PreTrainedTokenizerFast:
    r"""The character-level tokenizer of the toy task, built locally (no download): 23 tokens.

    Ids: ``<pad>`` 0 (pad), ``<unk>`` 1 (any character outside :data:`ALPHABET`), ``<eos>`` 2
    (EOS), then the 20 characters of :data:`ALPHABET`. No BOS, nothing added by
    ``add_special_tokens``. ``decode(encode(s)) == s`` for every string over the alphabet;
    character offsets work, so :func:`dqo_tutorial.collate.tokenize_example` can build action
    masks; ``"\n"`` is a token of its own, so :func:`dqo_tutorial.sampling.step_boundaries` finds
    every line end. The chat template is :data:`TOY_CHAT_TEMPLATE`. Every call returns a new,
    independent object.
    """
    return fast_tokenizer_from_json(
        _toy_tokenizer_json(),
        chat_template=TOY_CHAT_TEMPLATE,
        model_max_length=256,
        padding_side=padding_side,
        pad_token="<pad>",
        unk_token="<unk>",
        eos_token="<eos>",
    )


def toy_model_config(
    tokenizer: PreTrainedTokenizerBase | None = None,
    *,
    n_layers: int = 4,
    hidden: int = 128,
    heads: int = 4,
    max_positions: int = 128,
    **overrides: Any,
) -> LlamaConfig:
    """A suggested Llama configuration for the toy task: 1.05 M parameters, trains on a CPU in
    minutes.

    4 layers, hidden 128, 4 heads, MLP 512, tied embeddings, 128 positions (prompt ≤ 25
    characters + :data:`MAX_NEW_TOKENS` = 64 fits with room). Token ids come from ``tokenizer``
    (default :func:`toy_tokenizer`); extra keyword arguments override any config field. Build the
    model with ``LlamaForCausalLM(toy_model_config())`` under a fixed torch seed.
    """
    from transformers import LlamaConfig

    tokenizer = tokenizer if tokenizer is not None else toy_tokenizer()
    fields: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden,
        "intermediate_size": 4 * hidden,
        "num_hidden_layers": n_layers,
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "max_position_embeddings": max_positions,
        "tie_word_embeddings": True,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": None,
    }
    return LlamaConfig(**{**fields, **overrides})


# ----------------------------------------------------------------------------- the shipped π_ref

REFERENCE_DIR = Path(__file__).parent / "data" / "toy-ref"
"""The toy π_ref shipped with the package (model spec ``"toy"``): the output of
:func:`dqo_tutorial.recipes.train_toy_reference` with its defaults — a Hugging Face model
directory with the tokenizer."""
