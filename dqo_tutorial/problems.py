"""The neutral problem type every task produces, and the one JSONL reader they share.

A :class:`Problem` is a question, its full gold solution (``answer``), the normalised final
answer (``gold``) and its position in the split (``index``). GSM8K, MATH and the toy task all
produce it (``gsm8k.GSM8KProblem`` is the same class), so sampling, training and evaluation
never ask which task a problem came from. :func:`read_problems` reads any task's JSONL file,
naming the file and line of a malformed record.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import DataError

__all__ = ["Problem", "read_problems"]


@dataclass(frozen=True)
class Problem:
    """One problem of any task; ``answer`` is the full solution, ``gold`` its normalised final
    answer and ``index`` its 0-based position in the split."""

    question: str
    answer: str
    gold: str
    index: int


def read_problems(
    path: str | os.PathLike[str], parse: Callable[[int, dict[str, Any]], Problem]
) -> list[Problem]:
    """``parse(index, record)`` of every non-blank JSONL line of ``path`` (any task's reader);
    a ValueError of a line (bad JSON or ``parse``'s) is re-raised naming the file and line."""
    problems: list[Problem] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                problems.append(parse(len(problems), json.loads(line)))
            except ValueError as e:  # json.JSONDecodeError is a ValueError
                raise DataError(f"{path}, line {lineno}: {e}") from e
    return problems
