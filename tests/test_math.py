r"""MATH: loading, prompts, \boxed{} extraction, equivalence through math-verify, the math task in
the harness, and the command line end to end on a tiny model (all offline)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dqo_tutorial import cli, tasks
from dqo_tutorial import evaluate as ev
from dqo_tutorial import math_problems as mp
from dqo_tutorial.errors import MissingDataError
from dqo_tutorial.gsm8k import dataset_hash
from dqo_tutorial.sampling import Generation, SamplingConfig, build_dataset

FIXTURE = Path(__file__).parent / "data" / "math_fixture.jsonl"


def known_verifier_error(*values, reason):
    """A case math-verify 0.9.0 judges wrongly: kept in the table, expected to fail."""
    return pytest.param(*values, marks=pytest.mark.xfail(strict=True, reason=reason))


# ----------------------------------------------------------------------------- extraction

EXTRACTION = [
    # (text, strict, flexible)
    (r"so the answer is $\boxed{5}$.", "5", "5"),
    (r"$\boxed{\frac{1}{\sqrt{2}}}$", r"\frac{1}{\sqrt{2}}", r"\frac{1}{\sqrt{2}}"),
    (r"\boxed{\dfrac{3}{4}}", r"\dfrac{3}{4}", r"\dfrac{3}{4}"),
    (r"first \boxed{1}, then \boxed{2}", "2", "2"),
    (r"\boxed{\boxed{7}}", "7", "7"),
    (r"\fbox{12}", "12", "12"),
    (r"the answer is $\boxed 5$", "5", "5"),
    (r"the answer is \boxed 12.", "12", "12"),
    (r"\boxed5", "5", "5"),
    (r"\boxed {8}", "8", "8"),
    (r"\boxed{ 9 }", "9", "9"),
    (r"\boxed{5\text{ cm}}", r"5\text{ cm}", r"5\text{ cm}"),
    (r"\boxed{21\text{ cm}^2}", r"21\text{ cm}^2", r"21\text{ cm}^2"),
    (r"\boxed{\text{Thursday}}", r"\text{Thursday}", r"\text{Thursday}"),
    (r"\boxed{65^\circ}", r"65^\circ", r"65^\circ"),
    (r"\boxed{25\%}", r"25\%", r"25\%"),
    (r"\boxed{\$60}", r"\$60", r"\$60"),
    (r"\boxed{\{1, 2\}}", r"\{1, 2\}", r"\{1, 2\}"),  # escaped braces do not count
    (r"\boxed{[2, \infty)}", r"[2, \infty)", r"[2, \infty)"),
    (
        r"\boxed{\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}}",
        r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}",
        r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}",
    ),
    (r"\boxed{3} and then, cut by the length limit, \boxed{\frac{4", "3", "3"),
    (r"\boxed{5}; format: \boxed{}", "5", "5"),
    (r"answer format \boxed{}", None, None),
    (r"\boxedfoo{5}", None, "5"),
    ("the answer is 5, I think", None, "5"),
    (r"so it is $\frac{1}{2}$.", None, r"\frac{1}{2}"),
    (r"so $x = 3$, that is 4 apples", None, "4"),
    (r"it costs \$5 in all: \(x^2\)", None, "x^2"),
    (r"$\frac12$ or roughly 0.5", None, "0.5"),
    ("a ratio of 3/4", None, "3/4"),
    ("no answer here", None, None),
]


@pytest.mark.parametrize("text, strict, flexible", EXTRACTION)
def test_extract_answer(text, strict, flexible):
    assert mp.extract_answer(text, "strict") == strict
    assert mp.extract_answer(text, "flexible") == flexible


def test_extract_answer_rejects_unknown_mode():
    with pytest.raises(ValueError, match="unknown mode"):
        mp.extract_answer(r"\boxed{1}", "lenient")


def test_gold_answer():
    assert mp.gold_answer(r"so $\boxed{\frac{5}{6}}$.") == r"\frac{5}{6}"
    assert mp.gold_answer(r"  \frac{5}{6} ") == r"\frac{5}{6}"
    with pytest.raises(ValueError, match="empty"):
        mp.gold_answer("  ")


# ----------------------------------------------------------------------------- equivalence

EQUIVALENCE = [
    # (gold, answer, same?)
    (r"\frac{1}{2}", "0.5", True),
    (r"\frac{1}{2}", "1/2", True),
    (r"\dfrac{3}{4}", r"\frac34", True),
    (r"\dfrac{9}{4}", "2.25", True),
    (r"\dfrac{7}{3}", r"2\frac{1}{3}", True),  # a mixed number
    (r"-\frac{2}{3}", r"\frac{-2}{3}", True),
    (r"\frac{1}{2}", r"\frac{2}{4}", True),
    (r"6\sqrt{2}", r"\sqrt{72}", True),
    (r"\sqrt{3}", r"\frac{3}{\sqrt3}", True),
    (r"3\sqrt[3]{2}", r"\sqrt[3]{54}", True),
    (r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}", True),
    (r"[2,\infty)", r"[2, \infty)", True),
    (r"(-\infty, -3] \cup [3, \infty)", r"(-\infty,-3]\cup[3,\infty)", True),
    (r"[2, 5)", r"x \in [2, 5)", True),
    (
        r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}",
        r"\begin{bmatrix}1&2\\3&4\end{bmatrix}",
        True,
    ),
    (
        r"\begin{pmatrix} \frac{1}{2} & 0 \\ 0 & \frac{1}{4} \end{pmatrix}",
        r"\begin{pmatrix} 0.5 & 0 \\ 0 & 0.25 \end{pmatrix}",
        True,
    ),
    (r"65^\circ", "65", True),
    (r"65^\circ", r"65^{\circ}", True),
    (r"120^{\circ}", r"120 \text{ degrees}", True),
    (r"25\%", r"\frac14", True),
    (r"25\%", "25", True),  # MATH's convention: the percent sign is optional
    (r"30\%", r"30 \text{ percent}", True),
    (r"21\text{ cm}^2", "21", True),  # ... and so are units
    (r"150\text{ miles}", "150", True),
    (r"\$60", r"\$ 60.00", True),
    (r"1{,}200", "1200", True),
    ("x = 6", "6", True),
    ("6", "x = 6", True),
    ("2, 3", "3, 2", True),
    (r"\text{Thursday}", "Thursday", True),
    (r"\text{(C)}", "C", True),
    ("5+5i", "5i + 5", True),
    ("x^2+2x+1", "(x+1)^2", True),
    (r"\frac{1}{2}", "0.5000001", True),  # numbers are compared to 6 decimals
    # must not match
    ("1/2", "0.6", False),
    (r"\frac{1}{2}", "0.6", False),
    ("(1,2)", "[1,2]", False),
    ("[-3, 5]", "[-3, 5)", False),
    (r"(-\infty, 4)", r"(-\infty, 4]", False),
    ("x=2", "3", False),
    ("x=6", "x=7", False),
    ("(2, 5)", "(5, 2)", False),
    ("2, 3", "2", False),
    ("2,3", "2, 3, 4", False),
    ("1,2", "12", False),
    (r"1{,}200", "1.2", False),
    (r"-\frac{2}{3}", r"\frac{2}{3}", False),
    (r"\pi", "3.14159", False),
    (r"9\pi", "28.27", False),
    (r"6\sqrt2", "8.485", False),
    ("0.3", "0.33", False),
    (r"25\%", "0.3", False),
    (r"\frac{1}{2}", r"\frac{1}{2}\%", False),
    ("5+5i", "5-5i", False),
    (
        r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}",
        r"\begin{pmatrix} 1 & 3 \\ 2 & 4 \end{pmatrix}",
        False,
    ),
    (r"\text{Thursday}", r"\text{Friday}", False),
    (r"\text{(C)}", "D", False),
    (r"-\infty", r"\infty", False),
    # known verifier errors (math-verify 0.9.0)
    known_verifier_error(
        r"5\text{ cm}", r"5\text{ m}", False, reason="units are dropped, not compared"
    ),
    known_verifier_error(
        r"4\text{ inches}", r"4\text{ feet}", False, reason="units are dropped, not compared"
    ),
    known_verifier_error(
        r"\{1, 2\}", "(1, 2)", False, reason="the open interval (1, 2) is accepted for {1, 2}"
    ),
    known_verifier_error(r"45^\circ", "45°", True, reason="the unicode degree sign is not parsed"),
    known_verifier_error(
        r"\frac{\sqrt{3}}{2}",
        r"\sin 60^\circ",
        True,
        reason="^\\circ is dropped, so this is sin(60 radians)",
    ),
    known_verifier_error(
        r"(-\infty, 3]",
        r"x \le 3",
        True,
        reason="an inequality is compared with an interval only when the answer is the set",
    ),
    known_verifier_error(
        r"\emptyset", r"\varnothing", True, reason="\\varnothing is not read as the empty set"
    ),
]


@pytest.mark.parametrize("gold, answer, same", EQUIVALENCE)
def test_answers_match(gold, answer, same):
    assert mp.answers_match(gold, answer) is same


def test_is_correct_reads_the_last_box_of_response_and_gold():
    gold = r"Half of it: $\boxed{\frac{1}{2}}$."
    assert mp.is_correct(r"I get \boxed{0.5}", gold)
    assert mp.is_correct(r"I get \boxed{0.5}", r"\frac12")  # a bare gold answer
    assert not mp.is_correct(r"I get \boxed{0.6}", gold)
    assert not mp.is_correct("I get 0.5", gold)  # strict: no box, no answer
    assert mp.is_correct("I get 0.5", gold, "flexible")


def test_a_slow_comparison_is_cut_at_the_time_limit(monkeypatch):
    def slow_verify(gold, answer):
        time.sleep(30)
        return True

    monkeypatch.setattr(mp, "_verify", slow_verify)
    start = time.monotonic()
    assert mp.answers_match("1", "2", timeout_s=0.3) is False
    assert mp.is_correct(r"\boxed{2}", "1", timeout_s=0.3) is False
    assert time.monotonic() - start < 3
    assert mp.answers_match("1", " 1 ", timeout_s=0.3) is True  # identical: no comparison


def test_a_missing_latex_parser_is_an_error_not_silent_zeros(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "antlr4" else real(name, *a)
    )
    with pytest.raises(ImportError, match="antlr4_13_2"):
        mp.answers_match("1", "2")


PATHOLOGICAL = (r"10^{10^{10}}", "10")  # SymPy would build a ten-billion-digit integer


def test_a_pathological_answer_is_cut_in_the_main_thread():
    start = time.monotonic()
    assert mp.answers_match(*PATHOLOGICAL, timeout_s=1.0) is False
    assert time.monotonic() - start < 5


def test_grading_works_outside_the_main_thread():
    results: dict = {}

    def grade():
        start = time.monotonic()
        results["half"] = mp.answers_match(r"\frac12", "0.5", timeout_s=5.0)
        results["slow"] = mp.answers_match(*PATHOLOGICAL, timeout_s=1.0)
        results["seconds"] = time.monotonic() - start

    thread = threading.Thread(target=grade)
    thread.start()
    thread.join(120)
    assert results["half"] is True and results["slow"] is False
    assert results["seconds"] < 60  # worker start-up + one cut comparison


# ----------------------------------------------------------------------------- loading


def test_fixture_loads_with_answers_given_or_derived():
    problems = mp.load_math("test", FIXTURE)
    assert len(problems) == 33 and [p.index for p in problems] == list(range(33))
    by_question = {p.question: p for p in problems}
    derived = by_question["Simplify $\\sqrt{72}$."]
    assert derived.gold == r"6\sqrt{2}" and derived.answer.startswith("Since")
    given = by_question["Compute $(1 + 2i)(3 - i)$."]
    assert given.gold == "5+5i"  # the record's answer field, not the boxed '5 + 5i'
    assert by_question["How many positive divisors does 64 have?"].gold == "7"  # \boxed 7
    assert mp.load_math("train", FIXTURE, limit=4) == problems[:4]
    assert len(dataset_hash(problems)) == 64


def test_every_fixture_solution_earns_the_reward():
    for p in mp.load_math("test", FIXTURE):
        assert mp.is_correct(p.answer, p.gold), p.question
        assert mp.is_correct(tasks.get_task("math").gold_solution(p), p.gold)


def test_directory_source_and_environment_variable(tmp_path, monkeypatch):
    (tmp_path / "test.jsonl").write_text(FIXTURE.read_text())
    assert len(mp.load_math("test", tmp_path)) == 33
    monkeypatch.setenv(mp.ENV_VAR, str(tmp_path))
    assert len(mp.load_math("test", None, limit=2)) == 2
    with pytest.raises(FileNotFoundError, match="train.jsonl"):
        mp.load_math("train", tmp_path)


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "line 3: Expecting property name"),
        ("[1, 2]", "line 3: expected a JSON object"),
        ('{"problem": "p"}', "line 3: missing or non-string field.*solution"),
        ('{"problem": 3, "solution": "s"}', "line 3: missing or non-string field.*problem"),
        ('{"problem": "p", "solution": "s", "answer": 5}', "line 3: field 'answer' must be a"),
        ('{"problem": "p", "solution": "no box"}', r"line 3: no answer"),
        ('{"problem": "p", "solution": "s", "answer": " "}', r"line 3: no answer"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"problem": "1+1?", "solution": r"$\boxed{2}$"})
    path.write_text(f"{good}\n\n{line}\n")  # the blank line is skipped but counted
    with pytest.raises(ValueError, match=f"bad.jsonl, {message}"):
        mp.read_jsonl(path)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown split"):
        mp.load_math("dev", FIXTURE)
    with pytest.raises(ValueError, match="limit"):
        mp.load_math("test", FIXTURE, limit=-1)
    with pytest.raises(ValueError, match="only a test split"):
        mp.load_math("train", "math500")


def test_hub_loading_code_with_a_stand_in_for_datasets(monkeypatch):
    """The hub path is code only here (no network): ``load_dataset`` is replaced by a stub."""
    import datasets

    calls = []

    def fake_load_dataset(hub_id, config, split):
        calls.append((hub_id, config, split))
        return [{"problem": f"{config}?", "solution": r"so $\boxed{1}$", "level": "Level 1"}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    problems = mp.load_math("train", "hub")
    assert [c[1] for c in calls] == list(mp.HUB_SUBJECTS) and len(problems) == 7
    assert {c[0] for c in calls} == {mp.HUB_ID} and problems[6].index == 6
    calls.clear()
    assert mp.load_math("test", "math500")[0].gold == "1"
    assert calls == [(mp.MATH500_ID, None, "test")]

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(MissingDataError, match="DQO_MATH_DIR.*--data-source"):
        mp.load_math("test", "hub")


# ----------------------------------------------------------------------------- prompting


def test_prompt_plain_and_chat(tiny_tok):
    plain = mp.format_prompt("What is 1+1?")
    assert plain.startswith(mp.SYSTEM_PROMPT) and plain.endswith("Problem: What is 1+1?\nSolution:")
    assert "\\boxed{}" in mp.SYSTEM_PROMPT
    chat = mp.format_prompt("What is 1+1?", tiny_tok)
    assert mp.SYSTEM_PROMPT in chat and chat.endswith("<|im_start|>assistant\n")


def test_gold_solution_adds_a_box_only_when_missing():
    p = mp.load_math("test", FIXTURE)[0]
    assert mp.format_gold_solution(p) == p.answer
    bare = dataclasses.replace(p, answer="Add them.")
    assert mp.format_gold_solution(bare).endswith(r"$\boxed{\frac{5}{6}}$.")


# ----------------------------------------------------------------------------- the harness


def test_math_task_is_registered():
    task = tasks.get_task("math")
    assert task.is_correct is mp.is_correct and task.extract_answer is mp.extract_answer
    assert task.prompt_template_version == mp.PROMPT_TEMPLATE_VERSION
    assert tasks.get_task("gsm8k").is_correct.__module__ == "dqo_tutorial.gsm8k"
    assert len(task.load("test", str(FIXTURE), 3)) == 3


def test_grade_uses_the_task_rules():
    g = ev.grade(r"so \boxed{\dfrac{1}{2}}", r"\frac{1}{2}", "math")
    assert g == {
        "answer_strict": r"\dfrac{1}{2}",
        "correct_strict": True,
        "answer_flexible": r"\dfrac{1}{2}",
        "correct_flexible": True,
        "invalid": False,
    }
    assert ev.grade("#### 7", "#### 7")["correct_strict"]  # GSM8K stays the default


def test_evaluate_grades_math_answers(tmp_path, monkeypatch):
    golds = {p.question: p.gold for p in mp.load_math("test", FIXTURE)}

    def fake_generate(model, tokenizer, prompts, *, num_samples, **kwargs):
        out = []
        for i, prompt in enumerate(prompts):
            question = prompt.split("Problem: ")[1].rsplit("\nSolution:", 1)[0]
            text = f"so $\\boxed{{{golds[question]}}}$" if i % 2 == 0 else r"\boxed{-1}"
            out.append(Generation(i, 0, [1], [2], True, text, None))
        return out

    monkeypatch.setattr(ev, "generate", fake_generate)
    cfg = ev.EvalConfig(model="fake", task="math", data_source=str(FIXTURE), limit=6, batch_size=3)
    res = ev.evaluate(cfg, tmp_path, model=object(), tokenizer=object(), progress=False)
    assert res["accuracy"]["greedy"]["strict"]["mean"] == pytest.approx(4 / 6)  # i = 0, 2 of each
    assert res["prompt_template_version"] == "math-v1"


def test_sampling_rewards_come_from_the_math_grader(tmp_path, monkeypatch, tiny_model, tiny_tok):
    seen = []

    def grader(text, gold, mode):
        seen.append((gold, mode))
        return len(seen) % 2 == 1

    math_task = tasks.TASKS["math"]
    monkeypatch.setitem(tasks.TASKS, "math", dataclasses.replace(math_task, is_correct=grader))
    cfg = SamplingConfig(
        model="tiny",
        task="math",
        data_source=str(FIXTURE),
        limit=2,
        num_samples=2,
        max_new_tokens=4,
        batch_size=4,
        shard_size=2,
    )
    data = build_dataset(cfg, tmp_path, model=tiny_model, tokenizer=tiny_tok, progress=False)
    assert data["reward"] == [1.0, 0.0, 1.0, 0.0]
    assert seen == [(r"\frac{5}{6}", "strict")] * 2 + [(r"\dfrac{2}{5}", "strict")] * 2


def test_sft_trains_on_math_solutions(tmp_path, tiny_model, tiny_tok):
    from dqo_tutorial.train import TrainConfig, train

    cfg = TrainConfig(
        method="sft",
        model="tiny",
        task="math",
        data_source=str(FIXTURE),
        limit=4,
        max_steps=2,
        batch_size=2,
        mixed_precision="no",
    )
    summary = train(cfg, tmp_path, policy=tiny_model, tokenizer=tiny_tok, progress=False)
    assert summary["steps"] == 2 and summary["last"]["nll"] > 0


def test_dataset_is_an_alias_of_task():
    for command in ("sample", "train", "eval"):
        args = cli.build_parser().parse_args([command, "--out", "x", "--dataset", "math"])
        assert args.task == "math"


def test_cli_eval_math_end_to_end(tmp_path, tiny_model_dir):
    out = tmp_path / "eval"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "dqo_tutorial.cli",
            "eval",
            "--task",
            "math",
            "--data-source",
            str(FIXTURE),
            "--model",
            str(tiny_model_dir),
            "--out",
            str(out),
            "--max-new-tokens",
            "8",
            "--batch-size",
            "33",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert "greedy" in res.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == "math" and results["data"]["num_problems"] == 33
    assert results["accuracy"]["greedy"]["strict"]["n"] == 33
    assert len((out / "outputs.jsonl").read_text().splitlines()) == 33
