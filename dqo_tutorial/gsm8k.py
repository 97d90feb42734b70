"""GSM8K: loading, prompting, answer extraction and grading.

Data sources (see :func:`load_gsm8k`):

- the Hugging Face Hub, ``datasets.load_dataset("openai/gsm8k", "main")`` (7,473 train / 1,319
  test problems), for users with a network;
- a local copy of the original MIT release (https://github.com/openai/grade-school-math):
  ``train.jsonl`` / ``test.jsonl`` with fields ``question`` and ``answer``, found through the
  environment variable ``DQO_GSM8K_DIR`` or passed as a directory or a ``.jsonl`` file;
- an embedded subset shipped in this package (``data/gsm8k``: the first 300 problems of each
  split, MIT licence), the default, so that everything runs offline.

An ``answer`` is a worked solution with calculator annotations (``48/2 = <<48/2=24>>24``) whose
last line is ``#### N``. Answer extraction follows these rules, in both modes:

- A number is written with ASCII digits, optionally a sign (``-``, ``+`` or the unicode minus
  ``−``) and a ``$``, thousands commas in groups of three, and a decimal point: ``-$1,234.50``,
  ``.5``. It is normalised with :class:`decimal.Decimal`: no commas, ``$`` or ``+``, no trailing
  zeros (``5.00`` → ``5``, ``2.50`` → ``2.5``), ``-0`` → ``0``, never rounded.
- Text after a number is ignored (sentence punctuation, units, ``%``: ``50%.`` → ``50``); a
  number glued to a preceding letter is part of a word (``B12``, ``H2O``) and is not a number.
- A numeric token that is not a plain number is no answer (``None``), never partly read: fractions
  ``3/4``, scientific notation ``1e5``, versions ``1.2.3``, bad groupings ``1234,567``, decimal
  commas ``0,5``. (Every GSM8K gold answer is an integer.)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from decimal import Context, Decimal
from pathlib import Path
from typing import Any

from .errors import ConfigError, MissingDataError
from .problems import Problem, read_problems

SPLITS = ("train", "test")
MODES = ("strict", "flexible")
ENV_VAR = "DQO_GSM8K_DIR"
HUB_ID = "openai/gsm8k"
EMBEDDED_DIR = Path(__file__).with_name("data") / "gsm8k"

# ----------------------------------------------------------------------------- extraction

# A numeric token: sign, dollar, then digits with any '.' or ',' between them, optionally
# followed by '/', 'e' or 'E' and more digits (so that '3/4' and '1e5' are seen whole).
_DIGITS = r"\.?[0-9](?:[0-9.,]*[0-9])?"
_TOKEN = rf"(?P<sign>[-+\u2212]?)\$?(?P<body>{_DIGITS}(?:[/eE][-+]?{_DIGITS})?)"
_ANY_NUMBER = re.compile(rf"(?<![\w.]){_TOKEN}")
_AFTER_MARKER = re.compile(rf"[\s*_:$]*{_TOKEN}")  # '####' then spaces, markdown bold, '$'
_PLAIN = re.compile(r"(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?|\.[0-9]+")


def _normalise(match: re.Match[str] | None) -> str | None:
    """The normalised number of a matched token, or None if it is not a plain number."""
    if match is None or not _PLAIN.fullmatch(match["body"]):
        return None
    digits = match["body"].replace(",", "")
    value = Decimal(digits).normalize(Context(prec=len(digits)))  # exact: enough precision
    if value.is_zero():
        return "0"
    return ("-" if match["sign"] in ("-", "\u2212") else "") + f"{value:f}"


def extract_answer(text: str, mode: str = "strict") -> str | None:
    """The final answer of ``text`` as a normalised number string, or None.

    ``strict``: the last ``#### N`` — the number after the last ``####`` that is followed by a
    number at all (a trailing bare ``####``, e.g. a repetition cut by the length limit, is
    skipped); None if there is none, or if that number is not a plain number (``#### 3/4``).
    ``flexible``: the strict answer if there is one, else the last numeric token of the text
    (None if that token is not a plain number).
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    answer, marker = None, len(text)
    while (marker := text.rfind("####", 0, marker)) >= 0:  # the last '####' followed by a number
        if match := _AFTER_MARKER.match(text, marker + 4):
            answer = _normalise(match)
            break
    if answer is None and mode == "flexible":
        numbers = list(_ANY_NUMBER.finditer(text))
        answer = _normalise(numbers[-1] if numbers else None)
    return answer


def is_correct(response: str, gold: str, mode: str = "strict") -> bool:
    """Whether the answer extracted from ``response`` equals ``gold`` numerically.

    ``gold`` is a full GSM8K solution (``... #### 72``) or a bare number (``"1,000"``).
    Raises ValueError if ``gold`` contains no number.
    """
    gold_answer = extract_answer(gold, "flexible")
    if gold_answer is None:
        raise ValueError(f"gold answer has no number: {gold!r}")
    answer = extract_answer(response, mode)
    return answer is not None and Decimal(answer) == Decimal(gold_answer)


# ----------------------------------------------------------------------------- loading


GSM8KProblem = Problem
"""GSM8K's problems are the package's neutral :class:`~dqo_tutorial.problems.Problem`."""


def _problem(index: int, record: Any) -> GSM8KProblem:
    if not isinstance(record, dict):
        raise ValueError("expected a JSON object")
    missing = [key for key in ("question", "answer") if not isinstance(record.get(key), str)]
    if missing:
        raise ValueError(f"missing or non-string field(s): {', '.join(missing)}")
    gold = extract_answer(record["answer"])
    if gold is None:
        raise ValueError("answer does not end with '#### <number>'")
    return GSM8KProblem(record["question"], record["answer"], gold, index)


def read_jsonl(path: str | os.PathLike[str]) -> list[GSM8KProblem]:
    """Read GSM8K problems from a JSONL file, skipping blank lines.

    Raises ValueError naming the file and the 1-based line number of a malformed line (bad
    JSON, missing ``question``/``answer``, or an answer without a final ``#### N``).
    """
    return read_problems(path, _problem)


def _load_hub(split: str) -> list[GSM8KProblem]:
    try:
        from datasets import load_dataset

        rows = load_dataset(HUB_ID, "main", split=split)
    except Exception as e:  # offline, no `datasets`, hub error: all end the same way
        raise MissingDataError(
            f"could not load {HUB_ID!r} from the Hugging Face Hub ({type(e).__name__}: {e}). "
            f"Without a network: set {ENV_VAR} to a directory holding train.jsonl and "
            "test.jsonl, pass a local directory or .jsonl file as `--data-source` "
            "(`data_source` in a config), or `--data-source embedded` (the first 300 problems "
            "of each split)"
        ) from e
    return [_problem(i, row) for i, row in enumerate(rows)]


def load_gsm8k(
    split: str = "train",
    source: str | os.PathLike[str] | None = None,
    limit: int | None = None,
) -> list[GSM8KProblem]:
    """Load a GSM8K split, optionally only its first ``limit`` problems.

    ``source``: None → the directory in ``$DQO_GSM8K_DIR`` if set, else ``"embedded"``;
    ``"embedded"`` → the subset shipped in the package; ``"hub"`` → ``openai/gsm8k`` via
    ``datasets``; a directory → its ``{split}.jsonl``; a file → that file (``split`` is then
    only validated).
    """
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; expected one of {SPLITS}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if source is None:
        source = os.environ.get(ENV_VAR) or "embedded"
    if source == "hub":
        problems = _load_hub(split)
    else:
        path = EMBEDDED_DIR if source == "embedded" else Path(source)
        if path.is_dir():
            path = path / f"{split}.jsonl"
        if not path.is_file():
            raise MissingDataError(
                f"no GSM8K file at {path}: pass `--data-source` a directory holding "
                f"{split}.jsonl, or a .jsonl file"
            )
        problems = read_jsonl(path)
    return problems if limit is None else problems[:limit]


def dataset_hash(problems: list[GSM8KProblem]) -> str:
    """sha256 of the problems' questions and answers, in order, for run manifests.

    It depends only on the content, not on the source: the hub and a local copy agree.
    """
    payload = json.dumps([[p.question, p.answer] for p in problems], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


# ----------------------------------------------------------------------------- prompting

# Record PROMPT_TEMPLATE_VERSION in run manifests; bump it whenever a prompt string changes.
PROMPT_TEMPLATE_VERSION = "gsm8k-v1"
SYSTEM_PROMPT = (
    "Solve the grade-school math problem. Reason step by step, one step per line. "
    "End with a final line of the form '#### <number>', where <number> is the final answer "
    "as a plain number."
)
PLAIN_TEMPLATE = "{system}\n\nQuestion: {question}\nAnswer:"


def build_messages(question: str) -> list[dict[str, str]]:
    """Chat messages for one problem: the system instructions, then the question."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": question},
    ]


def format_prompt(question: str, tokenizer: Any = None) -> str:
    """The prompt string for one problem, ending where the model's solution starts.

    Uses the tokenizer's chat template (with the generation prompt) when it has one; otherwise
    (no tokenizer, or a tokenizer without ``chat_template``) :data:`PLAIN_TEMPLATE`.
    """
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        return PLAIN_TEMPLATE.format(system=SYSTEM_PROMPT, question=question)
    return tokenizer.apply_chat_template(
        build_messages(question), tokenize=False, add_generation_prompt=True
    )


_CALCULATOR = re.compile(r"<<[^<>]*>>")


def format_gold_solution(answer: str) -> str:
    """The SFT target of a GSM8K solution: calculator annotations ``<<...>>`` removed and the
    final line rewritten as ``#### N`` with N normalised (``#### 1,200`` → ``#### 1200``)."""
    gold = extract_answer(answer)
    if gold is None:
        raise ValueError(f"solution does not end with '#### <number>': {answer[-80:]!r}")
    steps = _CALCULATOR.sub("", answer[: answer.rfind("####")]).rstrip()
    return f"{steps}\n#### {gold}" if steps else f"#### {gold}"
