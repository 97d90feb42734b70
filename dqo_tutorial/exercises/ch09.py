r"""Checkers of notebook 09: GSM8K answers, majority voting and pass@k.

- ``check_flexible_answer``: ``fn(text) -> str | None``, the flexible final answer of a
  response as a normalised number string (``#### -3.50`` → ``"-3.5"``, ``$1,200.`` →
  ``"1200"``), compared with :func:`dqo_tutorial.gsm8k.extract_answer` in ``flexible`` mode
- ``check_maj_at_k``: ``fn(responses, golds) -> (P,)``, majority-vote correctness of k
  samples per problem, a tie among m answers counting 1/m
- ``check_pass_at_k``: ``fn(correct (P, n), k) -> (P,)``, the unbiased pass@k estimate
  1 − C(n − c, k) / C(n, k)
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import torch
from torch import Tensor

from .. import gsm8k
from ._core import N_INPUTS, Slip, Verdict, check_function

__all__ = ["check_flexible_answer", "check_maj_at_k", "check_pass_at_k"]


# --------------------------------------------------------------------------------------------
# numbers as a model writes them
# --------------------------------------------------------------------------------------------


def _randint(gen: torch.Generator, low: int, high: int) -> int:
    return int(torch.randint(low, high, (), generator=gen))


def _coin(gen: torch.Generator, p: float = 0.5) -> bool:
    return bool(torch.rand((), generator=gen) < p)


def _written(gen: torch.Generator, value: int, cents: int = 0, negative: bool = False) -> str:
    """``value`` (+ ``cents``/100) as a model might write it: commas, ``$``, ``.00``, a
    trailing ``.``; the sign in front (``-$1,200.50``)."""
    style = _randint(gen, 0, 5)
    whole = f"{value:,}" if style in (1, 2) else str(value)
    frac = f".{cents:02d}" if cents else (".00" if style == 3 else "")
    text = ("$" if style == 2 else "") + whole + frac + ("." if style == 4 else "")
    return ("-" if negative else "") + text


def _number(gen: torch.Generator, kind: str = "any") -> str:
    """A random number, written as a model would: integers mostly, some negative, some with
    cents (``2.50``, ``-3.50``), some above 1,000 (commas)."""
    if kind == "any":
        kind = ["int", "int", "big", "negative", "decimal"][_randint(gen, 0, 5)]
    if kind == "big":
        return _written(gen, _randint(gen, 1000, 2_000_000))
    if kind == "negative":
        return _written(gen, _randint(gen, 1, 500), negative=True)
    if kind == "decimal":
        return _written(
            gen, _randint(gen, 0, 50), cents=_randint(gen, 1, 100), negative=_coin(gen, 0.3)
        )
    return _written(gen, _randint(gen, 0, 200))


def _response(gen: torch.Generator, i: int) -> str:
    """A response covering, by ``i % 12``, the cases the text demands."""
    a, b = _number(gen), _number(gen)
    kind = i % 12
    if kind == 0:
        return f"She pays 3 + 4 = 7 dollars.\n#### {a}"
    if kind == 1:
        return "The temperature drops 8 degrees from 3.\n#### -5"  # a negative answer
    if kind == 2:
        return f"Half of 5 is 2.50 each.\n#### {_number(gen, 'decimal')}"  # -3.50 → -3.5
    if kind == 3:
        return f"#### 5\nWait, I forgot the last bag: 5 + 1 = 6.\n#### {a}"  # the last one counts
    if kind == 4:
        return f"First 12 apples, then {b} more.\nThe answer is {a}"  # no '####': last number
    if kind == 5:
        return ["I cannot solve this problem.", "#### ", "The answer is unknown.\n####"][
            (i // 12) % 3
        ]
    if kind == 6:
        return f"So the answer is {a}, says robot B12 in room H2O."  # numbers inside words
    if kind == 7:
        return f"#### {a}\nQuestion: how many more?\n####"  # a trailing bare '####' is skipped
    if kind == 8:
        return f"It costs ${_randint(gen, 1000, 99999):,}."  # '$1,200.' → 1200
    if kind == 9:
        return f"The discount is 25%, so she pays {_number(gen, 'decimal')}."
    if kind == 10:
        return f"Total: {a} cookies. #### {_number(gen, 'big')}"
    return f"Each box holds {b} and {a} boxes remain"  # no final punctuation, no '####'


# --------------------------------------------------------------------------------------------
# a checker of functions that return a string (or None)
# --------------------------------------------------------------------------------------------


def _same_answer(got: Any, expected: str | None) -> str | None:
    """Answers are strings (or None) compared exactly: ``"5"`` and ``"5.00"`` differ (the
    exercise is the normalisation)."""
    if not (got is None or isinstance(got, str)):
        return f"returned {got!r}: expected a str or None"
    return None if got == expected else f"yours {got!r} vs reference {expected!r}"


def _check_answers(name, fn, reference, make_inputs, **kwargs) -> Verdict:
    """:func:`check_function` for a function whose answer is a string or None."""
    return check_function(name, fn, reference, make_inputs, compare=_same_answer, **kwargs)


def _first_marker(text: str) -> str | None:
    """The flexible answer read at the *first* ``####`` followed by a number (the slip)."""
    marker = -1
    while (marker := text.find("####", marker + 1)) >= 0:
        if match := gsm8k._AFTER_MARKER.match(text, marker + 4):
            return gsm8k._normalise(match)
    return gsm8k.extract_answer(text, "flexible")


FLEXIBLE_ANSWER_SLIPS = (
    Slip(
        _first_marker,
        "the *first* #### is read: a response that corrects itself ends with the answer it "
        "means, so take the number after the last #### followed by a number",
    ),
    Slip(
        lambda text: gsm8k.extract_answer(text, "strict"),
        "no fall-back: without a #### followed by a number, the flexible answer is the text's "
        "last number",
    ),
)


def check_flexible_answer(
    fn: Callable[[str], str | None], n: int = N_INPUTS, *, seed: int = 0, quiet: bool = False
) -> Verdict:
    """``fn(text) -> str | None``: the number after the last ``####`` that is followed by a
    number, else the last number of the text (not one glued to a letter: ``B12``, ``H2O``),
    normalised — no commas, ``$`` or trailing ``.``, no trailing zeros (``5.00`` → ``"5"``,
    ``-3.50`` → ``"-3.5"``), the sign kept —; None when the text has no number. Compared, as a
    string, with :func:`dqo_tutorial.gsm8k.extract_answer` in ``flexible`` mode."""

    def inputs(gen: torch.Generator, i: int):
        return (_response(gen, i),), {}

    def reference(text: str) -> str | None:
        return gsm8k.extract_answer(text, "flexible")

    return _check_answers(
        "flexible_answer",
        fn,
        reference,
        inputs,
        n=n,
        seed=seed,
        quiet=quiet,
        forbidden=(gsm8k.extract_answer, gsm8k.is_correct),
        slips=FLEXIBLE_ANSWER_SLIPS,
    )


# --------------------------------------------------------------------------------------------
# majority voting
# --------------------------------------------------------------------------------------------


def _gold(gen: torch.Generator, value: str) -> str:
    """The gold of a problem in one of the forms a grader meets: a bare number, with commas,
    or a full GSM8K solution ending in ``#### N``."""
    style = _randint(gen, 0, 3)
    if style == 0:
        return value
    if style == 1:
        return _written_again(gen, value)
    return f"Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### {_written_again(gen, value)}"


def _written_again(gen: torch.Generator, value: str) -> str:
    """``value`` (a normalised number string) written another way (commas, trailing zeros)."""
    negative, digits = value.startswith("-"), value.lstrip("-")
    whole, _, frac = digits.partition(".")
    if _coin(gen):
        whole = f"{int(whole):,}"
    if _coin(gen):  # trailing zeros: 5 → 5.00, -3.5 → -3.50
        frac = (frac or "0") + "0"
    return ("-" if negative else "") + whole + (f".{frac}" if frac else "")


def _maj_inputs(gen: torch.Generator, i: int):
    problems = 1 if i == 0 else _randint(gen, 1, 6)
    k = 1 if i == 0 else _randint(gen, 1, 9)
    responses, golds = [], []
    for _ in range(problems):
        pool = [gsm8k.extract_answer(f"#### {_number(gen)}") for _ in range(3)]
        gold = pool[0] if _coin(gen, 0.7) else gsm8k.extract_answer(f"#### {_number(gen)}")
        golds.append(_gold(gen, gold))
        row = []
        for _ in range(k):
            pick = _randint(gen, 0, 4)
            if pick == 3 or (i % 10 == 4):  # an invalid response; input 4: all of them invalid
                row.append(["No idea.", f"The answer is {pool[0]}", "####"][_randint(gen, 0, 3)])
            elif _coin(gen, 0.2):  # a first '####' then a correction: the last one counts
                row.append(
                    f"#### {pool[(pick + 1) % 3]}\nNo wait.\n#### {_written_again(gen, pool[pick])}"
                )
            else:
                row.append(f"Step one.\n#### {_written_again(gen, pool[pick])}")
        responses.append(row)
    return (responses, golds), {}


def _maj_reference(responses: list[list[str]], golds: list[str]) -> Tensor:
    out = []
    for row, gold in zip(responses, golds):
        votes = Counter(
            a for a in (gsm8k.extract_answer(r, "strict") for r in row) if a is not None
        )
        target = gsm8k.extract_answer(gold, "flexible")
        if not votes:
            out.append(0.0)
            continue
        top = max(votes.values())
        winners = [a for a, c in votes.items() if c == top]
        out.append(1.0 / len(winners) if target in winners else 0.0)
    return torch.tensor(out, dtype=torch.float64)


def _maj_slip(how: str):
    """maj@k with one slip: ``how`` "first of the ties" (``Counter.most_common(1)``), "no
    answer votes" (None counted as an answer), "raw gold" (the gold string as it is)."""

    def maj_at_k(responses: list[list[str]], golds: list[str]) -> Tensor:
        scores = []
        for row, gold in zip(responses, golds):
            answers = [gsm8k.extract_answer(r, "strict") for r in row]
            if how != "no answer votes":
                answers = [a for a in answers if a is not None]
            target = gold if how == "raw gold" else gsm8k.extract_answer(gold, "flexible")
            votes = Counter(answers)
            if how == "first of the ties":
                scores.append(float(bool(votes) and votes.most_common(1)[0][0] == target))
                continue
            top = max(votes.values(), default=0)
            tied = [a for a, c in votes.items() if c == top]
            scores.append(1.0 / len(tied) if target in tied else 0.0)
        return torch.tensor(scores, dtype=torch.float64)

    return maj_at_k


MAJ_AT_K_SLIPS = (
    Slip(
        _maj_slip("first of the ties"),
        "Counter.most_common(1) breaks a tie by order: a gold tied with m − 1 other answers "
        "scores 1/m",
    ),
    Slip(
        _maj_slip("no answer votes"),
        "a response without an answer voted (for None): it must not vote at all",
    ),
    Slip(
        _maj_slip("raw gold"),
        "the gold compared as a raw string: extract and normalise it first "
        "(gsm8k.extract_answer(gold, 'flexible')), '1,200' and '… #### 1200' are 1200",
    ),
)


def check_maj_at_k(
    fn: Callable[[list, list], Any], n: int = N_INPUTS, *, seed: int = 0, quiet: bool = False
) -> Verdict:
    """``fn(responses, golds) -> (P,)``: for each problem, the k responses vote with their
    strict answers (a response with none does not vote; ``1,200`` and ``1200`` are one answer);
    1 if the gold (a bare number or a full solution ``… #### N``) is the only most-voted
    answer, 1/m if it is one of m answers tied for most votes, 0 otherwise (and when no
    response has an answer)."""

    def as_tensor(responses, golds) -> Tensor:
        return torch.as_tensor(fn(responses, golds), dtype=torch.float64)

    return check_function(
        "maj_at_k",
        as_tensor,
        _maj_reference,
        _maj_inputs,
        n=n,
        seed=seed,
        quiet=quiet,
        slips=MAJ_AT_K_SLIPS,
    )


# --------------------------------------------------------------------------------------------
# pass@k
# --------------------------------------------------------------------------------------------


def _pass_inputs(gen: torch.Generator, i: int):
    if i == 0:
        return (torch.tensor([[True]]), 1), {}
    problems = _randint(gen, 1, 6)
    samples = _randint(gen, 1, 12) if i % 4 else _randint(gen, 100, 300)  # large n: C(n, k) huge
    k = [1, samples, _randint(gen, 1, samples + 1)][i % 3]
    rates = torch.rand(problems, 1, generator=gen) ** 2
    correct = torch.rand(problems, samples, generator=gen) < rates
    if i % 5 == 1:
        correct[0] = False  # a problem without a correct sample
    if problems > 1 and i % 5 == 2:
        correct[1] = True  # every sample correct
    return (correct, k), {}


def _pass_reference(correct: Tensor, k: int) -> Tensor:
    n = correct.shape[1]
    out = []
    for c in correct.sum(1).tolist():
        out.append(float(1 - Fraction(math.comb(n - int(c), k), math.comb(n, k))))
    return torch.tensor(out, dtype=torch.float64)


PASS_AT_K_SLIPS = (
    Slip(
        lambda correct, k: 1 - (1 - correct.to(torch.float64).mean(1)) ** k,
        "the plug-in 1 − (1 − c/n)^k is biased (it draws with replacement): use "
        "1 − C(n − c, k)/C(n, k) = 1 − Π_{i=n−c+1}^{n} (1 − k/i)",
    ),
)


def check_pass_at_k(
    fn: Callable[[Tensor, int], Tensor], n: int = N_INPUTS, *, seed: int = 0, quiet: bool = False
) -> Verdict:
    """``fn(correct (P, n) bool, k) -> (P,)``: the unbiased pass@k estimate per problem,
    1 − C(n − c, k) / C(n, k) with c the problem's number of correct samples (1 when
    n − c < k), for 1 ≤ k ≤ n; n goes up to 300, where C(n, k) overflows a float64."""

    def as_tensor(correct: Tensor, k: int) -> Tensor:
        return torch.as_tensor(fn(correct, k), dtype=torch.float64)

    return check_function(
        "pass_at_k",
        as_tensor,
        _pass_reference,
        _pass_inputs,
        n=n,
        seed=seed,
        quiet=quiet,
        slips=PASS_AT_K_SLIPS,
    )
