"""Evaluation: grading, the accuracy table by hand, resume after an interruption."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from dqo_tutorial import evaluate as ev
from dqo_tutorial import tasks
from dqo_tutorial.sampling import Generation

FIXTURE = str(Path(__file__).parent / "fixtures" / "gsm8k")


def test_grade_both_modes_and_invalid():
    assert ev.grade("so 3+4=7\n#### 7", "#### 7") == {
        "answer_strict": "7",
        "correct_strict": True,
        "answer_flexible": "7",
        "correct_flexible": True,
        "invalid": False,
    }
    g = ev.grade("the answer is 1,000.", "1000")
    assert g["invalid"] and not g["correct_strict"] and g["correct_flexible"]
    assert ev.grade("#### 8", "7")["correct_strict"] is False


def test_accuracy_table_hand_computed():
    recs = [
        {"decoding": "greedy", "correct_strict": c, "correct_flexible": f, "invalid": i}
        for c, f, i in [
            (True, True, False),
            (False, True, True),
            (False, False, False),
            (True, True, False),
        ]
    ]
    table = ev.accuracy_table(recs)["greedy"]
    assert table["strict"]["mean"] == 0.5 and table["flexible"]["mean"] == 0.75
    assert table["invalid"]["mean"] == 0.25 and table["strict"]["n"] == 4
    assert math.isclose(table["strict"]["stderr"], math.sqrt(0.25 / 4))


class FakeGenerate:
    """Answers problem i with the gold answer when i is even, with a wrong number otherwise."""

    def __init__(self):
        self.calls = 0

    def __call__(self, model, tokenizer, prompts, *, num_samples, temperature, **kw):
        self.calls += 1
        out = []
        for i, prompt in enumerate(prompts):
            for j in range(num_samples):
                gold = prompt.split("GOLD=")[1]
                text = f"step\n#### {gold}" if (i + j) % 2 == 0 else "step\n#### -1"
                out.append(Generation(i, j, [1], [2, 3], True, text, None))
        return out


@pytest.fixture
def fake(monkeypatch):
    fake = FakeGenerate()
    monkeypatch.setattr(ev, "generate", fake)
    problems = {}

    def fake_prompt(question, tokenizer):
        return f"Q: {question} GOLD={problems[question]}"

    from dqo_tutorial.gsm8k import load_gsm8k

    for p in load_gsm8k("test", FIXTURE):
        problems[p.question] = p.gold
    gsm = tasks.TASKS["gsm8k"]
    monkeypatch.setitem(tasks.TASKS, "gsm8k", dataclasses.replace(gsm, format_prompt=fake_prompt))
    return fake


def test_evaluate_writes_results_and_resumes(tmp_path, fake):
    cfg = ev.EvalConfig(model="fake", data_source=FIXTURE, limit=5, num_samples=2, batch_size=2)
    res = ev.evaluate(cfg, tmp_path, model=object(), tokenizer=object(), progress=False)
    greedy = res["accuracy"]["greedy"]
    assert greedy["strict"]["mean"] == pytest.approx(3 / 5)  # problems 0, 2, 4 (i resets per chunk)
    assert res["accuracy"]["sampling"]["strict"]["n"] == 10
    assert res["data"]["num_problems"] == 5 and len(res["data"]["dataset_hash"]) == 64
    lines = (tmp_path / "outputs.jsonl").read_text().splitlines()
    assert len(lines) == 5 * 3
    assert json.loads((tmp_path / "results.json").read_text())["accuracy"] == res["accuracy"]

    # interruption in the middle of the last chunk's write: a cut-off line
    (tmp_path / "outputs.jsonl").write_text("\n".join(lines[:8]) + "\n" + lines[8][:10])
    fake.calls = 0
    again = ev.evaluate(cfg, tmp_path, model=object(), tokenizer=object(), progress=False)
    assert again["accuracy"] == res["accuracy"]
    assert (tmp_path / "outputs.jsonl").read_text().splitlines() == lines
    assert fake.calls == 2 * 2  # chunks 2 and 3 redone, greedy + sampling each

    with pytest.raises(ValueError, match="num_samples: stored 2, requested 3"):
        ev.evaluate(
            ev.EvalConfig(model="fake", data_source=FIXTURE, limit=5, num_samples=3, batch_size=2),
            tmp_path,
            model=object(),
            tokenizer=object(),
        )


def test_eval_config_validation():
    with pytest.raises(ValueError, match="nothing to evaluate"):
        ev.EvalConfig(greedy=False, num_samples=0)
    with pytest.raises(ValueError, match="batch_size"):
        ev.EvalConfig(batch_size=0)


def test_evaluate_runs_end_to_end_on_a_tiny_model(tmp_path, tiny_model, tiny_tok):
    cfg = ev.EvalConfig(
        model="tiny", data_source=FIXTURE, limit=3, num_samples=1, max_new_tokens=8, batch_size=2
    )
    res = ev.evaluate(cfg, tmp_path, model=tiny_model, tokenizer=tiny_tok, progress=False)
    assert res["accuracy"]["greedy"]["strict"]["n"] == 3
    assert res["accuracy"]["sampling"]["strict"]["n"] == 3


def test_paired_difference_with_several_samples_per_problem():
    """Problem means m^A = (3/4, 0, 1), m^B = (1, 3/4, 1/2) from 4, 2, 1 and 1, 4, 2 samples:
    d = (−1/4, −3/4, 1/2), d̄ = −1/6, plug-in s.e. √(Σ(d − d̄)²/N / N). Kills
    ``sum(a) / len(a)`` → ``sum(a) * len(a)`` (every other test has one sample per problem)."""
    a = [[1, 0, 1, 1], [0, 0], [1]]
    b = [[1], [1, 1, 0, 1], [0, 1]]
    d = [-0.25, -0.75, 0.5]
    mean = sum(d) / 3
    se = math.sqrt(sum((x - mean) ** 2 for x in d) / 3 / 3)
    got = ev.paired_difference(a, b)
    assert got["n"] == 3
    assert got["mean"] == pytest.approx(-1 / 6, abs=1e-12)
    assert got["stderr"] == pytest.approx(se, abs=1e-12)
    assert ev.paired_difference(b, a)["mean"] == pytest.approx(1 / 6, abs=1e-12)


def test_clustered_rate_of_no_problem_is_nan_over_zero():
    """No problem: n = 0 and NaN mean and s.e. (kills an ``"n": 0`` → ``"n": 1`` mutant)."""
    got = ev.clustered_rate([])
    assert got["n"] == 0 and math.isnan(got["mean"]) and math.isnan(got["stderr"])
    assert ev.paired_difference([], [])["n"] == 0
