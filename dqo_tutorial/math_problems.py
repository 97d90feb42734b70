r"""MATH (competition mathematics): loading, prompting, ``\boxed{}`` answer extraction and grading.

The counterpart of :mod:`dqo_tutorial.gsm8k` for the MATH dataset of Hendrycks et al. (2021):
problems from AMC/AIME-style competitions whose worked solutions end with the final answer in
``\boxed{…}``. The answer is any LaTeX expression — ``\frac{\sqrt3}{2}``, ``(-\infty, 2]``, a
``pmatrix``, ``30^\circ``, ``5\text{ cm}`` — so grading has two parts:

- **extraction** (:func:`extract_answer`, written here): the argument of the last ``\boxed{…}``
  (or ``\fbox{…}``), read by counting braces, so ``\boxed{\frac{1}{\sqrt{2}}}`` is seen whole;
- **equivalence** (:func:`answers_match`): whether two LaTeX answers denote the same value, which
  needs a real parser and a computer algebra system. It is delegated to the maintained
  `math-verify <https://github.com/huggingface/Math-Verify>`_ library (LaTeX → SymPy through
  ``latex2sympy2_extended``, then numeric, symbolic, set, interval and matrix comparisons), with
  a time limit on each comparison (:mod:`dqo_tutorial.time_limit`): some answers take SymPy
  minutes (``10^{10^{10}}``), and a reward function must not hang.

Data sources (see :func:`load_math`):

- the Hugging Face Hub (code only: not run in this project's tests, which have no network):
  ``"hub"`` → ``EleutherAI/hendrycks_math``, the full release (7,500 train / 5,000 test problems
  in seven subject configurations, fields ``problem``, ``level``, ``type``, ``solution``);
  ``"math500"`` → ``HuggingFaceH4/MATH-500``, the 500-problem test subset of Lightman et al.
  (fields ``problem``, ``solution``, ``answer``, ``subject``, ``level``, ``unique_id``);
- a local JSONL file (or a directory holding ``train.jsonl`` / ``test.jsonl``, also found through
  ``$DQO_MATH_DIR``), one problem per line with fields ``problem`` and ``solution`` and an
  optional ``answer``.

A problem is a :class:`~dqo_tutorial.problems.Problem` record, like the toy task's: ``question``
is the problem, ``answer`` the worked solution and ``gold`` the final answer — the record's
``answer`` field when it has one, else the last ``\boxed{}`` of the solution.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import ConfigError, MissingDataError
from .gsm8k import MODES
from .problems import Problem, read_problems
from .time_limit import call_with_time_limit

__all__ = [
    "last_boxed",
    "extract_answer",
    "gold_answer",
    "answers_match",
    "is_correct",
    "load_math",
    "read_jsonl",
    "format_prompt",
    "format_gold_solution",
    "PROMPT_TEMPLATE_VERSION",
]

SPLITS = ("train", "test")
ENV_VAR = "DQO_MATH_DIR"
HUB_ID = "EleutherAI/hendrycks_math"
HUB_SUBJECTS = (
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
)
MATH500_ID = "HuggingFaceH4/MATH-500"
VERIFY_TIMEOUT_S = 5.0
"""Time limit of one equivalence check (math-verify's own default is 5 s too)."""

# ----------------------------------------------------------------------------- extraction

_BOX = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")  # \boxed, \fbox; not \boxedfoo
_BARE_ARGUMENT = re.compile(r"[^\s$]+")  # '\boxed 5': up to a space or a '$'


def _box_argument(text: str, start: int) -> str | None:
    r"""The argument of a box command whose name ends at ``start``, or None if there is none.

    ``{…}``: everything up to the matching brace; an escaped character (``\{``, ``\}``, ``\\``)
    never opens or closes a group; an unclosed group (a response cut by the length limit) is no
    argument. Without a brace (``\boxed 5``, ``\boxed5``): the run of characters up to the next
    space or ``$``, without a trailing ``.`` or ``,`` — the usual reading in MATH solutions (TeX
    itself would box only the first token).
    """
    i = start
    while i < len(text) and text[i] in " \t":
        i += 1
    if i < len(text) and text[i] == "{":
        depth, j = 0, i
        while j < len(text):
            char = text[j]
            if char == "\\":
                j += 2
                continue
            if char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
                if depth == 0:
                    return text[i + 1 : j]
            j += 1
        return None
    match = _BARE_ARGUMENT.match(text, i)
    return match.group().rstrip(".,") if match else None


def last_boxed(text: str) -> str | None:
    r"""The stripped argument of the last ``\boxed``/``\fbox`` that has one, else None.

    A box with no usable argument — empty (``\boxed{}``, e.g. the format echoed from the prompt),
    unclosed (cut by the length limit) or bare at the end of the text — is skipped, like a
    trailing bare ``####`` in :func:`dqo_tutorial.gsm8k.extract_answer`. The argument is returned
    as written: ``\dfrac``, units and ``\text{}`` are left for :func:`answers_match`.
    """
    for match in reversed(list(_BOX.finditer(text))):
        argument = _box_argument(text, match.end())
        if argument and argument.strip():
            return argument.strip()
    return None


# Inline math ($…$, $$…$$, \(…\), \[…\]; an escaped dollar \$ is text) and plain numbers, for the
# flexible fallback.
_MATH_SPAN = re.compile(
    r"(?<!\\)\$\$(.+?)(?<!\\)\$\$|(?<!\\)\$(.+?)(?<!\\)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.S
)
_NUMBER = re.compile(r"(?<![\w.])[-\u2212]?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?")


def _last_span_or_number(text: str) -> str | None:
    candidates = [(m.end(), next(g for g in m.groups() if g)) for m in _MATH_SPAN.finditer(text)]
    candidates += [(m.end(), m.group()) for m in _NUMBER.finditer(text)]
    candidates = [(end, s.strip()) for end, s in candidates if s.strip()]
    return max(candidates, key=lambda c: c[0])[1] if candidates else None


def extract_answer(text: str, mode: str = "strict") -> str | None:
    r"""The final answer of ``text`` as a LaTeX string, or None.

    ``strict``: :func:`last_boxed` — the argument of the last ``\boxed{…}`` / ``\fbox{…}`` /
    ``\boxed 5``. ``flexible``: the strict answer if there is one, else the content of the last
    inline-math span (``$…$``, ``\(…\)``, ``\[…\]``) or plain number (``-12``, ``3.5``,
    ``1,000``, ``3/4``), whichever ends later.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    answer = last_boxed(text)
    if answer is None and mode == "flexible":
        answer = _last_span_or_number(text)
    return answer


def gold_answer(gold: str) -> str:
    r"""The final answer of a gold string: its last ``\boxed{}`` if it has one (a full solution),
    else the whole string (a bare answer such as ``\frac{1}{2}``). Raises ValueError if empty."""
    answer = last_boxed(gold)
    if answer is None:
        answer = gold.strip()
    if not answer:
        raise ValueError(f"gold answer is empty: {gold!r}")
    return answer


# ----------------------------------------------------------------------------- equivalence


class _DropTimeoutNotice(logging.Filter):
    """math-verify warns once that its time limit is off; here it is off on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


_INSTALL_HINT = "pip install 'math-verify[antlr4_13_2]>=0.9'"


def _math_verify() -> Any:
    """math-verify (SymPy and the LaTeX parser come with it), imported quietly.

    Raises ImportError if it is missing, or if its ANTLR runtime is: without one every LaTeX
    answer fails to parse, math-verify only logs it, and every comparison would silently be False.
    """
    import importlib.util

    if importlib.util.find_spec("math_verify") is None:
        raise ImportError(f"grading MATH answers needs math-verify: {_INSTALL_HINT}")
    if importlib.util.find_spec("antlr4") is None:
        raise ImportError(
            f"math-verify cannot parse LaTeX without an ANTLR runtime: {_INSTALL_HINT}"
        )
    import math_verify

    for name in ("math_verify.parser", "math_verify.grader"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropTimeoutNotice) for f in logger.filters):
            logger.addFilter(_DropTimeoutNotice())
    return math_verify


def _load() -> None:
    """Import math-verify before the clock starts: the first import takes about a second."""
    _math_verify()


def _verify(gold: str, answer: str) -> bool:
    r"""math-verify's judgement, untimed: both strings are parsed as the argument of a
    ``\boxed{}`` and compared gold-first (the comparison is not symmetric: ``x = 2`` as an answer
    matches a gold ``2``)."""
    mv = _math_verify()
    config = [mv.LatexExtractionConfig(boxed_match_priority=0)]
    parsed = [
        mv.parse("\\boxed{" + s + "}", extraction_config=config, parsing_timeout=None)
        for s in (gold, answer)
    ]
    return bool(mv.verify(parsed[0], parsed[1], timeout_seconds=None))


def answers_match(gold: str, answer: str, timeout_s: float = VERIFY_TIMEOUT_S) -> bool:
    r"""Whether ``answer`` denotes the same mathematical object as ``gold`` (two LaTeX answers).

    Identical strings (up to the length of runs of whitespace) match at once; otherwise
    math-verify decides, within ``timeout_s`` seconds
    (:func:`~dqo_tutorial.time_limit.call_with_time_limit`, which works in any thread). A
    comparison that runs out of time counts as no match. Among the equivalences:
    ``\dfrac{1}{2}`` = ``0.5`` = ``1/2``, ``2\sqrt{3}`` = ``\sqrt{12}``, ``30^\circ`` = ``30``,
    ``5\text{ cm}`` = ``5``, ``x = 2`` (answer) = ``2`` (gold); and not: ``\frac12`` ≠ ``0.6``,
    ``(1,2)`` ≠ ``[1,2]``. Known wrong judgements are listed in ``tests/test_math.py``.
    """
    if " ".join(gold.split()) == " ".join(answer.split()):
        return True
    try:
        return bool(call_with_time_limit(_verify, (gold, answer), timeout_s, setup=_load))
    except TimeoutError:
        return False


def is_correct(
    response: str, gold: str, mode: str = "strict", timeout_s: float = VERIFY_TIMEOUT_S
) -> bool:
    """Whether the answer extracted from ``response`` (:func:`extract_answer`) matches ``gold``
    (a full solution or a bare answer, :func:`gold_answer`). The reward of the ``math`` task."""
    reference = gold_answer(gold)
    answer = extract_answer(response, mode)
    return answer is not None and answers_match(reference, answer, timeout_s)


# ----------------------------------------------------------------------------- loading


def _problem(index: int, record: Any) -> Problem:
    if not isinstance(record, dict):
        raise ValueError("expected a JSON object")
    missing = [key for key in ("problem", "solution") if not isinstance(record.get(key), str)]
    if missing:
        raise ValueError(f"missing or non-string field(s): {', '.join(missing)}")
    answer = record.get("answer")
    if answer is not None and not isinstance(answer, str):
        raise ValueError(f"field 'answer' must be a string, got {type(answer).__name__}")
    gold = answer.strip() if answer is not None else last_boxed(record["solution"])
    if not gold:
        raise ValueError(
            "no answer: the 'answer' field is missing or empty and the solution has no \\boxed{...}"
        )
    return Problem(record["problem"], record["solution"], gold, index)


def read_jsonl(path: str | os.PathLike[str]) -> list[Problem]:
    """Read MATH problems from a JSONL file, skipping blank lines.

    Raises ValueError naming the file and the 1-based line number of a malformed line (bad JSON,
    missing ``problem``/``solution``, a non-string ``answer``, or no answer at all).
    """
    return read_problems(path, _problem)


def _hub_rows(hub_id: str, configs: Iterable[str | None], split: str) -> list[dict[str, Any]]:
    """Rows of ``hub_id`` (each configuration in turn). Needs a network: not run in the tests."""
    try:
        from datasets import load_dataset

        return [row for config in configs for row in load_dataset(hub_id, config, split=split)]
    except Exception as e:  # offline, no `datasets`, hub error: all end the same way
        raise MissingDataError(
            f"could not load {hub_id!r} from the Hugging Face Hub ({type(e).__name__}: {e}). "
            f"Without a network: set {ENV_VAR} to a directory holding train.jsonl and test.jsonl "
            "(fields problem, solution and optionally answer), or pass a local directory or "
            ".jsonl file as `--data-source` (`data_source` in a config)"
        ) from e


def load_math(
    split: str = "train",
    source: str | os.PathLike[str] | None = None,
    limit: int | None = None,
) -> list[Problem]:
    """Load a MATH split, optionally only its first ``limit`` problems.

    ``source``: None → the directory in ``$DQO_MATH_DIR`` if set, else ``"hub"``; ``"hub"`` →
    ``EleutherAI/hendrycks_math``, its seven subjects concatenated in the order of
    :data:`HUB_SUBJECTS`; ``"math500"`` → ``HuggingFaceH4/MATH-500`` (``split="test"`` only); a
    directory → its ``{split}.jsonl``; a file → that file (``split`` is then only validated).
    The two hub sources need a network and the ``datasets`` package.
    """
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; expected one of {SPLITS}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if source is None:
        source = os.environ.get(ENV_VAR) or "hub"
    if source in ("hub", "math500"):
        if source == "math500" and split != "test":
            raise ValueError(f"{MATH500_ID} has only a test split, not {split!r}")
        rows = (
            _hub_rows(HUB_ID, HUB_SUBJECTS, split)
            if source == "hub"
            else _hub_rows(MATH500_ID, [None], split)
        )
        problems = [_problem(i, row) for i, row in enumerate(rows)]
    else:
        path = Path(source)
        if path.is_dir():
            path = path / f"{split}.jsonl"
        if not path.is_file():
            raise MissingDataError(
                f"no MATH file at {path}: pass `--data-source` a directory holding "
                f"{split}.jsonl, or a .jsonl file"
            )
        problems = read_jsonl(path)
    return problems if limit is None else problems[:limit]


# ----------------------------------------------------------------------------- prompting

# Record PROMPT_TEMPLATE_VERSION in run manifests; bump it whenever a prompt string changes.
PROMPT_TEMPLATE_VERSION = "math-v1"
SYSTEM_PROMPT = (
    "Solve the competition math problem. Reason step by step. End with the final answer in "
    "LaTeX inside \\boxed{}, in simplest form."
)
PLAIN_TEMPLATE = "{system}\n\nProblem: {question}\nSolution:"


def format_prompt(question: str, tokenizer: Any = None) -> str:
    """The prompt string for one problem, ending where the model's solution starts.

    The same mechanism as :func:`dqo_tutorial.gsm8k.format_prompt`: the tokenizer's chat template
    (system prompt, then the problem) when it has one, else :data:`PLAIN_TEMPLATE`.
    """
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        return PLAIN_TEMPLATE.format(system=SYSTEM_PROMPT, question=question)
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": question},
    ]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def format_gold_solution(problem: Problem) -> str:
    r"""The SFT target of a problem: its worked solution, which already ends with the answer in
    ``\boxed{}``; a solution without one gets a last line ``The final answer is $\boxed{…}$.``"""
    if last_boxed(problem.answer) is not None:
        return problem.answer
    return f"{problem.answer.rstrip()}\n\nThe final answer is $\\boxed{{{problem.gold}}}$."
