r"""Checkers of notebook 09: GSM8K grading.

- ``check_strict_grading``: GSM8K: the number after the last ``####`` = gold?
- ``check_flexible_grading``: GSM8K: strict answer, else the last number = gold?
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .. import gsm8k
from ._core import N_INPUTS, Verdict, check_function

__all__ = ["check_strict_grading", "check_flexible_grading"]


def _gsm8k_number(gen: torch.Generator) -> tuple[str, str]:
    """A random answer as a model might write it, and the bare gold number it equals."""
    value = int(torch.randint(0, 20000, (), generator=gen))
    style = int(torch.randint(0, 5, (), generator=gen))
    plain = str(value)
    written = [plain, f"{value:,}", f"${value:,}", f"{value}.00", f"{value}."][style]
    return written, plain


def _gsm8k_text(gen: torch.Generator, i: int) -> tuple[str, str]:
    written, gold = _gsm8k_number(gen)
    other, _ = _gsm8k_number(gen)
    kind = i % 5
    if kind == 0:
        text = f"She pays 3 + 4 = 7 dollars.\n#### {written}"
    elif kind == 1:
        text = f"First 12 apples, then {other} more.\nThe answer is {written}"  # no '####'
    elif kind == 2:
        text = f"#### {other}\nWait, recompute: 2 * 3 = 6.\n#### {written}"  # the last one counts
    elif kind == 3:
        text = f"Total: {written} cookies. #### {other}"
    else:
        text = f"So {other} minus 2 leaves {written}."
    if bool(torch.rand((), generator=gen) < 0.3):
        gold = str(int(torch.randint(0, 20000, (), generator=gen)))  # mostly a wrong answer
    return text, gold


def check_strict_grading(
    fn: Callable[[str, str], bool], n: int = N_INPUTS, *, seed: int = 0, quiet: bool = False
) -> Verdict:
    """``fn(response, gold) -> bool``: is the number after the response's last ``####`` equal
    to ``gold`` (commas, ``$``, a trailing ``.``, ``5.00 == 5``)? No ``####``: False. Compared
    with :func:`dqo_tutorial.gsm8k.is_correct` in ``strict`` mode."""

    def inputs(gen: torch.Generator, i: int):
        return _gsm8k_text(gen, i), {}

    def reference(text: str, gold: str) -> Tensor:
        return torch.tensor(float(gsm8k.is_correct(text, gold, "strict")), dtype=torch.float64)

    def as_float(text: str, gold: str) -> Tensor:
        return torch.tensor(float(bool(fn(text, gold))), dtype=torch.float64)

    return check_function(
        "strict_grading",
        as_float,
        reference,
        inputs,
        n=n,
        seed=seed,
        quiet=quiet,
        forbidden=(gsm8k.is_correct, gsm8k.extract_answer),
    )


def check_flexible_grading(
    fn: Callable[[str, str], bool], n: int = N_INPUTS, *, seed: int = 0, quiet: bool = False
) -> Verdict:
    """``fn(response, gold) -> bool``: the strict answer (last ``#### N``) if there is one, else
    the last number of the response, compared numerically with ``gold``; compared with
    :func:`dqo_tutorial.gsm8k.is_correct` in ``flexible`` mode."""

    def inputs(gen: torch.Generator, i: int):
        return _gsm8k_text(gen, i), {}

    def reference(text: str, gold: str) -> Tensor:
        return torch.tensor(float(gsm8k.is_correct(text, gold, "flexible")), dtype=torch.float64)

    def as_float(text: str, gold: str) -> Tensor:
        return torch.tensor(float(bool(fn(text, gold))), dtype=torch.float64)

    return check_function(
        "flexible_grading",
        as_float,
        reference,
        inputs,
        n=n,
        seed=seed,
        quiet=quiet,
        forbidden=(gsm8k.is_correct, gsm8k.extract_answer),
    )
