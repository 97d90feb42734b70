"""Tests of dqo_tutorial.gsm8k: extraction, grading, loading, prompting. Offline."""

from __future__ import annotations

import json
import sys
import types
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dqo_tutorial import gsm8k
from dqo_tutorial.errors import MissingDataError
from dqo_tutorial.gsm8k import (
    GSM8KProblem,
    build_messages,
    dataset_hash,
    extract_answer,
    format_gold_solution,
    format_prompt,
    is_correct,
    load_gsm8k,
    read_jsonl,
)

FIXTURE = Path(__file__).parent / "fixtures" / "gsm8k"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k"  # full set, if present

# (text, strict, flexible), expected values written by hand.
EXTRACTION_CASES = [
    ("#### 72", "72", "72"),
    ("The answer is 72", None, "72"),
    ("Step 1: 48/2 = 24\nStep 2: 48+24 = 72\n#### 72", "72", "72"),
    ("#### 1,234,567", "1234567", "1234567"),
    ("#### $1,000", "1000", "1000"),
    ("#### 42.", "42", "42"),
    ("#### 42.\n", "42", "42"),
    ("#### -3", "-3", "-3"),
    ("#### +7", "7", "7"),
    ("#### \u221212", "-12", "-12"),  # unicode minus
    ("#### -$5", "-5", "-5"),
    ("#### 5.00", "5", "5"),
    ("#### 2.50", "2.5", "2.5"),
    ("#### -0.50", "-0.5", "-0.5"),
    ("#### .5", "0.5", "0.5"),
    ("#### -.25", "-0.25", "-0.25"),
    ("#### 1,000.50", "1000.5", "1000.5"),
    ("#### 007", "7", "7"),
    ("#### -0", "0", "0"),
    ("#### 0.0", "0", "0"),
    ("#### 5\n#### 7", "7", "7"),  # the last marker wins
    ("#### 1/2\n#### 6", "6", "6"),
    ("#### 5\nHmm, let me recheck.\n#### 8.", "8", "8"),
    ("#### **42**", "42", "42"),
    ("**#### 42**", "42", "42"),
    ("#### __42__", "42", "42"),
    ("####42", "42", "42"),
    ("#####42", "42", "42"),
    ("####  \t 9", "9", "9"),
    ("#### 50%", "50", "50"),
    ("#### 12 apples", "12", "12"),
    ("#### 5th", "5", "5"),
    ("#### 18 dollars. Check: 3 * 6 = 18, plus 2", "18", "18"),
    ("#### 12\n\nThe end.", "12", "12"),
    ("#### ", None, None),
    ("####", None, None),
    ("Total 18.\n####", None, "18"),  # empty last marker
    ("#### 5\n####", "5", "5"),  # a bare trailing marker (cut-off repetition) is skipped
    ("#### 6\n#### 1/2", None, None),  # the last '#### N' has no plain number
    ("#### 9\n#### 9\n####", "9", "9"),
    ("#### The answer is 5", None, "5"),
    ("", None, None),
    ("no numbers here", None, None),
    ("#### 3/4", None, None),  # fractions are not plain numbers
    ("1/2 + 1/4 = 3/4", None, None),
    ("#### 1e5", None, None),  # no scientific notation
    ("version 1.2.3", None, None),
    ("#### 1234,567", None, None),  # bad thousands grouping
    ("#### 0,5", None, None),  # no decimal commas
    ("She takes B12", None, None),  # a number glued to a preceding letter is a word
    ("Total 7 apples, then H2O", None, "7"),
    ("The result is x-5", None, "5"),  # a minus after a letter is an operator
    ("10-3=7", None, "7"),
    ("It costs 5.5.", None, "5.5"),
    ("He paid 3,000 dollars.", None, "3000"),
    ("counted 1, 2, 3", None, "3"),
    ("Answer: $ 5", None, "5"),
    ("The answer is 5. Double-check: 2 + 3 = 5.0", None, "5"),
    (
        "#### 100000000000000000000000000000001",
        "100000000000000000000000000000001",
        "100000000000000000000000000000001",
    ),  # exact: more digits than Decimal's default 28
    (
        "#### 3.14159265358979323846264338327950",
        "3.1415926535897932384626433832795",
        "3.1415926535897932384626433832795",
    ),
]


@pytest.mark.parametrize(("text", "strict", "flexible"), EXTRACTION_CASES)
def test_extract_answer(text: str, strict: str | None, flexible: str | None) -> None:
    assert extract_answer(text) == strict
    assert extract_answer(text, "strict") == strict
    assert extract_answer(text, "flexible") == flexible


def test_extract_answer_unknown_mode() -> None:
    with pytest.raises(ValueError, match="strict.*flexible"):
        extract_answer("#### 1", mode="lenient")


@st.composite
def formatted_integers(draw: st.DrawFn) -> tuple[int, str]:
    n = draw(st.integers(min_value=-(10**12), max_value=10**12))
    body = f"{abs(n):,}" if draw(st.booleans()) else str(abs(n))
    dollar = "$" if draw(st.booleans()) else ""
    sign = "-" if n < 0 else draw(st.sampled_from(["", "+"]))
    tail = draw(st.sampled_from(["", ".", ".00", " dollars.", "%", "\n"]))
    return n, f"{sign}{dollar}{body}{tail}"


@given(formatted_integers())
def test_extract_answer_formatted_integers(case: tuple[int, str]) -> None:
    n, formatted = case
    text = f"Add 3 and 4 to get 7.\n#### {formatted}"
    assert extract_answer(text, "strict") == str(n)
    assert extract_answer(text, "flexible") == str(n)
    assert is_correct(text, str(n))


@pytest.mark.parametrize(
    ("response", "gold", "expected"),
    [
        ("#### 72", "She sold 48+24 = <<48+24=72>>72 clips.\n#### 72", True),
        ("#### 72", "72", True),
        ("#### 5.00", "5", True),
        ("#### 5", "5.00", True),
        ("#### 1,000", "1000", True),
        ("#### 1000", "1,000", True),
        ("#### $1,000.", "So 1,000 in total.\n#### 1,000", True),
        ("#### -3", "-3", True),
        ("#### 3", "-3", False),
        ("#### 71", "72", False),
        ("The answer is 72", "72", False),  # strict needs '####'
        ("#### 3/4", "0.75", False),
        ("", "72", False),
    ],
)
def test_is_correct(response: str, gold: str, expected: bool) -> None:
    assert is_correct(response, gold) is expected


def test_is_correct_flexible() -> None:
    assert is_correct("The answer is 72.", "#### 72", mode="flexible")
    assert not is_correct("The answer is 71.", "#### 72", mode="flexible")


def test_is_correct_rejects_gold_without_number() -> None:
    with pytest.raises(ValueError, match="gold"):
        is_correct("#### 1", "no number")


# ----------------------------------------------------------------------------- loading


def test_load_fixture_directory_and_file() -> None:
    train = load_gsm8k("train", FIXTURE)
    test = load_gsm8k("test", str(FIXTURE))
    assert len(train) == len(test) == 40
    assert train[0].question.startswith("Natalia sold clips to 48 of her friends")
    assert train[0].gold == "72" and train[0].index == 0
    assert [p.index for p in test] == list(range(40))
    assert load_gsm8k("train", FIXTURE / "train.jsonl") == train
    assert load_gsm8k("train", FIXTURE, limit=5) == train[:5]
    assert load_gsm8k("train", FIXTURE, limit=0) == []


def test_problem_is_frozen() -> None:
    problem = load_gsm8k("train", FIXTURE, limit=1)[0]
    with pytest.raises(AttributeError):
        problem.gold = "0"  # type: ignore[misc]


def test_load_from_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(gsm8k.ENV_VAR, str(FIXTURE))
    assert len(load_gsm8k("test")) == 40
    monkeypatch.delenv(gsm8k.ENV_VAR)
    assert len(load_gsm8k("test")) == 300  # the embedded subset


@pytest.mark.parametrize("split", ["train", "test"])
def test_embedded_subset(split: str) -> None:
    problems = load_gsm8k(split, "embedded")
    assert len(problems) == 300
    assert all(p.gold == extract_answer(p.answer) for p in problems)
    assert problems[:40] == load_gsm8k(split, FIXTURE)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="split"):
        load_gsm8k("validation")
    with pytest.raises(ValueError, match="limit"):
        load_gsm8k("train", limit=-1)
    with pytest.raises(FileNotFoundError):
        load_gsm8k("train", tmp_path)


GOOD_LINE = json.dumps({"question": "What is 1+1?", "answer": "1+1=<<1+1=2>>2\n#### 2"})


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        ("{not json", "JSON|Expecting"),
        (json.dumps({"question": "q"}), "answer"),
        (json.dumps({"answer": "#### 1"}), "question"),
        (json.dumps({"question": "q", "answer": "no final number"}), "####"),
        (json.dumps(["q", "#### 1"]), "object"),
    ],
)
def test_malformed_jsonl_names_file_and_line(tmp_path: Path, bad_line: str, reason: str) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text(f"{GOOD_LINE}\n{GOOD_LINE}\n{bad_line}\n{GOOD_LINE}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=reason) as info:
        read_jsonl(path)
    assert str(path) in str(info.value) and "line 3" in str(info.value)
    with pytest.raises(ValueError, match="line 3"):
        load_gsm8k("train", tmp_path)


def test_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "test.jsonl"
    path.write_text(f"\n{GOOD_LINE}\n   \n{GOOD_LINE}\n\n", encoding="utf-8")
    problems = read_jsonl(path)
    assert [(p.gold, p.index) for p in problems] == [("2", 0), ("2", 1)]


def _fake_datasets(monkeypatch: pytest.MonkeyPatch, load_dataset: object) -> None:
    module = types.ModuleType("datasets")
    module.load_dataset = load_dataset  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", module)


def test_hub_source(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [{"question": p.question, "answer": p.answer} for p in load_gsm8k("test", FIXTURE)]
    calls = []

    def load_dataset(*args: object, **kwargs: object) -> list[dict[str, str]]:
        calls.append((args, kwargs))
        return rows

    _fake_datasets(monkeypatch, load_dataset)
    assert load_gsm8k("test", "hub", limit=3) == load_gsm8k("test", FIXTURE, limit=3)
    assert calls == [(("openai/gsm8k", "main"), {"split": "test"})]


def test_hub_offline_error_names_the_ways_out(monkeypatch: pytest.MonkeyPatch) -> None:
    def load_dataset(*args: object, **kwargs: object) -> None:
        raise ConnectionError("no network")

    _fake_datasets(monkeypatch, load_dataset)
    with pytest.raises(MissingDataError) as info:
        load_gsm8k("train", "hub")
    message = str(info.value)
    assert "no network" in message and gsm8k.ENV_VAR in message
    assert "--data-source embedded" in message and ".jsonl" in message


def test_dataset_hash() -> None:
    train = load_gsm8k("train", FIXTURE)
    digest = dataset_hash(train)
    assert len(digest) == 64
    assert digest == dataset_hash(load_gsm8k("train", FIXTURE / "train.jsonl"))
    assert digest == "5502ff423993b79b4fd4915eb89eb334f80e2b878f59bb7a6e1c30335428b541"  # pinned
    assert dataset_hash(train[::-1]) != digest
    assert dataset_hash(train[:-1]) != digest
    edited = [GSM8KProblem(p.question + " ", p.answer, p.gold, p.index) for p in train]
    assert dataset_hash(edited) != digest


@pytest.mark.skipif(not SHARED.is_dir(), reason="full GSM8K copy not present")
def test_full_dataset() -> None:
    """Every real gold answer parses, and matches the raw text after '####'."""
    sizes = {"train": 7473, "test": 1319}
    for split, size in sizes.items():
        problems = load_gsm8k(split, SHARED)  # the loader itself requires a gold per line
        assert len(problems) == size
        for p in problems:
            raw = p.answer.rsplit("####", 1)[1].strip().replace(",", "")
            assert Decimal(p.gold) == Decimal(raw)
        assert dataset_hash(problems[:300]) == dataset_hash(load_gsm8k(split, "embedded"))


# ----------------------------------------------------------------------------- prompting


def test_build_messages() -> None:
    question = "Natalia sold 48 clips. How many?"
    messages = build_messages(question)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[1]["content"] == question
    system = messages[0]["content"]
    assert "step by step" in system and "one step per line" in system
    assert "#### <number>" in system


def test_format_prompt_without_chat_template() -> None:
    prompt = format_prompt("What is {1+1}?")
    assert prompt == f"{gsm8k.SYSTEM_PROMPT}\n\nQuestion: What is {{1+1}}?\nAnswer:"
    assert format_prompt("q", types.SimpleNamespace(chat_template=None)) == format_prompt("q")


def test_format_prompt_with_chat_template() -> None:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    )
    tokenizer.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    prompt = format_prompt("What is 1+1?", tokenizer)
    assert prompt == f"<|system|>{gsm8k.SYSTEM_PROMPT}\n<|user|>What is 1+1?\n<|assistant|>"


def test_format_gold_solution() -> None:
    problems = load_gsm8k("train", FIXTURE) + load_gsm8k("test", FIXTURE)
    assert format_gold_solution(problems[0].answer) == (
        "Natalia sold 48/2 = 24 clips in May.\n"
        "Natalia sold 48+24 = 72 clips altogether in April and May.\n"
        "#### 72"
    )
    for p in problems:
        solution = format_gold_solution(p.answer)
        assert "<<" not in solution and ">>" not in solution
        assert solution.splitlines()[-1] == f"#### {p.gold}"
        assert solution.count("####") == 1
        assert extract_answer(solution) == p.gold
    assert format_gold_solution("#### 1,200") == "#### 1200"
    with pytest.raises(ValueError):
        format_gold_solution("no final answer")
