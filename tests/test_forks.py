"""Fork chains (dqo_tutorial.forks): the task where token-level credit has work to do."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from dqo_tutorial import credit_study, forks, toy
from dqo_tutorial.gsm8k import is_correct
from dqo_tutorial.tasks import FORK_TASKS, get_task
from dqo_tutorial.viz import make_example


def kinds_by_hand(question: str) -> list[str]:
    """Each step's kind from the digits, without forks.step_kind or toy.has_carry."""
    start, ops = toy.parse_question(question)
    value, kinds = start, []
    for symbol, b in ops:
        if symbol == "+":
            kinds.append("carry" if value % 10 + b % 10 > 9 else "plain")
            value += b
        else:
            kinds.append("borrow" if value % 10 < b % 10 else "plain")
            value -= b
    return kinds


@pytest.mark.parametrize("n_ops, expected", [(2, 2), (3, 2), (4, 3), (7, 3), (8, 4), (11, 4),
                                             (12, 5)])  # fmt: skip
def test_forks_per_length_by_hand(n_ops, expected):
    assert forks.forks_of(n_ops) == expected


@pytest.mark.parametrize("n_ops", [2, 5, 12])
def test_every_question_has_its_forks_and_a_gold_solution_in_range(n_ops):
    problems = forks.load_forks("train", n_ops, 400)
    for p in problems:
        kinds = kinds_by_hand(p.question)
        assert len(kinds) == n_ops
        assert sum(k != "plain" for k in kinds) == forks.forks_of(n_ops)
        assert kinds.count("borrow") <= 1
        assert all(0 <= v <= toy.MAX_VALUE for v in toy.running_values(p.question))
        assert all(toy.line_correctness(p.question, p.answer)) and is_correct(p.answer, p.gold)
        assert 1 <= toy.running_values(p.question)[0] <= forks.START_RANGE[1]


@pytest.mark.parametrize("n_ops", [4, 8, 12])
def test_one_question_in_two_has_a_borrow_fork(n_ops):
    """Plans are not reweighted by how easy they are to walk (binomial: 2,000 draws, ±4.5 s.d.)."""
    problems = forks.load_forks("train", n_ops)
    share = np.mean(["borrow" in kinds_by_hand(p.question) for p in problems])
    assert abs(share - 0.5) < 4.5 * 0.5 / np.sqrt(len(problems))


@pytest.mark.parametrize("task", [FORK_TASKS[0], "forks-7ops", FORK_TASKS[-1]])
def test_fork_tasks_keep_the_split_rules(task):
    spec = get_task(task)
    train, dev, test = (spec.load(split, None, None) for split in ("train", "dev", "test"))
    assert (len(train), len(dev), len(test)) == (2000, 500, 500)
    qs = [{p.question for p in ps} for ps in (train, dev, test)]
    assert len(qs[0]) == 2000 and not qs[0] & qs[1] and not qs[2] & (qs[0] | qs[1])
    assert all(toy.split_of(q) == "test" for q in qs[2])
    assert spec.load("dev", None, 9) == dev[:9]  # prefix-stable
    tok = toy.toy_tokenizer()
    longest = max(len(tok(p.answer)["input_ids"]) for p in train + test)
    assert longest + 1 <= spec.max_new_tokens - 8
    assert spec.line_correctness is toy.line_correctness


def test_bad_lengths_and_splits_are_refused():
    with pytest.raises(ValueError, match="n_ops"):
        forks.load_forks("train", 13)
    with pytest.raises(ValueError, match="split"):
        forks.load_forks("validation", 4)


def test_demonstrations_drop_carries_and_borrows_at_their_rates():
    """Per step kind, the share of demonstrations whose first wrong line is that step, among
    those still right before it: the three rates (binomial, ±4.5 s.d.); a dropped carry or
    borrow is exactly 10 off."""
    problems = forks.load_forks("train", 8)
    rng = random.Random(0)
    tried, slipped = Counter(), Counter()
    for p in problems * 3:
        demo = forks.demonstration(p, rng)
        wrong = toy.first_error(p.question, demo)
        kinds = kinds_by_hand(p.question)
        for k, kind in enumerate(kinds[: len(kinds) if wrong is None else wrong + 1]):
            tried[kind] += 1
            slipped[kind] += k == wrong
        if wrong is not None and kinds[wrong] != "plain":
            written = int(demo.split("\n")[wrong].split("=")[1])
            assert abs(written - toy.running_values(p.question)[wrong + 1]) == 10
    rates = {"carry": forks.CARRY_DROP, "borrow": forks.BORROW_DROP, "plain": forks.PLAIN_SLIP}
    for kind, rate in rates.items():
        sd = np.sqrt(rate * (1 - rate) / tried[kind])
        assert abs(slipped[kind] / tried[kind] - rate) < 4.5 * sd, kind


def test_free_spaces_are_coin_flips_that_never_matter():
    problems = forks.load_forks("train", 6, 500)
    rng = random.Random(1)
    lines = spaced = 0
    for p in problems:
        demo = forks.demonstration(p, rng)
        steps = demo.split("\n")[:-1]
        lines += len(steps)
        spaced += sum(" =" in line for line in steps)
        flags = toy.line_correctness(p.question, demo)
        assert flags == toy.line_correctness(p.question, demo.replace(" =", "="))
    sd = np.sqrt(0.25 / lines)
    assert abs(spaced / lines - forks.FREE_SPACE) < 4.5 * sd


def test_the_corpus_is_deterministic_and_carries_no_eos():
    problems = forks.load_forks("train", 3, 20)
    a, b = forks.sft_corpus(problems, 5, copies=2), forks.sft_corpus(problems, 5, copies=2)
    assert a == b and len(a) == 40 and a[0][0] == toy.format_prompt(problems[0].question)
    assert a[:20] != a[20:]  # each pass draws fresh habits
    mixed = forks.mixed_train_problems((2, 12), 3)
    assert [len(toy.parse_question(p.question)[1]) for p in mixed] == [2, 12] * 3


# ----------------------------------------------------------------------------- structure


def test_error_structure_by_hand():
    logp = np.log([0.95, 0.5, 0.99, 0.3, 0.8, 0.2, 0.99])
    # the error at position 3 (p 0.3): one uncertain token before it (0.5), position 5 is less
    # likely (0.2) → rank 2
    got = credit_study.error_structure(logp, 3, wrong_line=1)
    assert got == {"uncertain_prefix": 1.0, "surprisal_rank": 2.0, "correct_prefix": 1.0}
    tied = credit_study.error_structure(np.log([0.5, 0.5]), 0, wrong_line=0)
    assert tied == {"uncertain_prefix": 0.0, "surprisal_rank": 2.0, "correct_prefix": 0.0}


@pytest.mark.parametrize("response, position", [
    ("8+6=14\n14-2=12\n#### 12", 10),  # "14-3=11": line 1's operand
    ("8+6=14\n14-3=12\n#### 12", 13),  # line 1's last digit
    ("8+6=14\n14-3=1\n#### 1", 13),  # line 1 stops short: its newline (gold: a digit)
    ("8+6=4\n4-3=1\n#### 1", 4),  # line 0: the dropped carry's first digit
    ("8+6 =14\n14-3 =12\n#### 12", 15),  # free spaces skipped: line 1's last digit
    ("8+6 =14\n14-3=110\n#### 110", 15),  # line 1 runs on past the gold line
])  # fmt: skip
def test_the_first_error_token_by_hand(response, position):
    tok = toy.toy_tokenizer()
    ex = make_example(tok, get_task("toy"), "8 +6 -3", "11", response)
    flags = toy.line_correctness("8 +6 -3", response)
    item = credit_study.HeldOutResponse(ex, credit_study.line_of_tokens(ex), flags.index(False))
    assert credit_study.first_error_token(item) == position
    gold = toy.gold_solution("8 +6 -3")
    kept = response[:position].replace(" ", "")  # the text before the error is the gold's
    assert gold.startswith(kept) and not gold.startswith(kept + response[position])


def test_the_structure_command_writes_its_statistics(tmp_path, capsys):
    """`credit --structure`: per task, the statistics of the wrong samples, consistent with
    themselves (the toy π_ref on 12 problems × 2 samples; no model of the fork chains is
    shipped, so the toy task stands in)."""
    import json

    from dqo_tutorial.cli import main

    assert main(["credit", "--structure", "--reference", "toy", "--task", "toy,toy-3ops",
                 "--limit", "12", "--num-samples", "2", "--out", str(tmp_path)]) == 0  # fmt: skip
    got = json.loads((tmp_path / "structure.json").read_text())
    assert got["meta"]["reference"] == "toy" and "structure.json" in capsys.readouterr().out
    for task in ("toy", "toy-3ops"):
        s = got[task]
        assert 0 <= s["sampled_accuracy"] <= 1 and s["responses"] <= 24
        if s["responses"]:
            assert 0 <= s["error_is_least_likely"] <= 1 and s["surprisal_rank"] >= 1
            assert s["uncertain_prefix"] <= s["uncertain_tokens"]
    # no --reference: one line, status 2, no traceback
    assert main(["credit", "--structure", "--task", "toy", "--out", str(tmp_path)]) == 2
    assert "--reference" in capsys.readouterr().err


def test_the_forks_page_quotes_its_structure_file():
    """docs/forks.md's structure table is docs/forks/structure.json and greedy-dev.json, at the
    printed precision."""
    import json
    from pathlib import Path

    docs = Path(__file__).resolve().parents[1] / "docs"
    page = (docs / "forks.md").read_text()
    data = json.loads((docs / "forks" / "structure.json").read_text())
    greedy = json.loads((docs / "forks" / "greedy-dev.json").read_text())["greedy"]
    for n in (2, 4, 6, 8, 12):
        s = data[f"forks-{n}ops"]
        row = (f"| forks, {n} operations | {s['responses']} | {s['uncertain_prefix']:.2f} | "
               f"{100 * s['error_is_least_likely']:.1f} % | {s['surprisal_rank']:.2f} | "
               f"{100 * s['correct_prefix']:.1f} % | {s['uncertain_tokens']:.1f} | "
               f"{100 * s['sampled_accuracy']:.1f} % | {100 * greedy[str(n)]:.1f} % |")  # fmt: skip
        assert row in page, row
    t = data["toy"]
    assert (f"| toy (shipped π_ref) | {t['responses']} | {t['uncertain_prefix']:.2f} | "
            f"{100 * t['error_is_least_likely']:.1f} % |") in page  # fmt: skip


def test_the_forks_page_quotes_its_study():
    """docs/forks.md's accuracy, contrast, training-signal and knob tables are
    docs/forks/study/results.json, for every fork axis."""
    import json
    from pathlib import Path

    from dqo_tutorial.experiments.sweeps import CONTRASTS, SWEEP_METHODS, contrasts, sweep_points

    docs = Path(__file__).resolve().parents[1] / "docs"
    page = (docs / "forks.md").read_text()
    payload = json.loads((docs / "forks" / "study" / "results.json").read_text())
    runs, decodings = payload["runs"], ("greedy", "sampling")
    for axis in ("forks", "forks data size", "forks comparison", "forks oracle precision"):
        points = sweep_points(runs, axis)
        assert points, axis
        for name in SWEEP_METHODS[axis]:
            cells = [f"{100 * e['mean']:.1f} ± {100 * e['std']:.1f}" if e else "–"
                     for x in points for d in decodings
                     for e in [points[x].get(name, {}).get(d)]]  # fmt: skip
            assert f"| {name} | " + " | ".join(cells) + " |" in page, (axis, name)
        by = {d: contrasts(runs, axis, d) for d in decodings}
        for a, b in CONTRASTS[axis]:
            head, cells = f"{a} − {b}", []
            for x in points:
                for d in decodings:
                    e = by[d].get(x, {}).get(head)
                    if e is None:
                        cells.append("–")
                        continue
                    low, high = e["ci95"]
                    cells.append(f"{100 * e['mean']:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}] "
                                 f"({e['seeds_above_0']}/{e['n_seeds']})")  # fmt: skip
            assert f"| {head} | " + " | ".join(cells) + " |" in page, (axis, head)
    lines = page.splitlines()
    for k in payload["knob_tuning"]:  # one row per knob set: its task, method, knobs, dev, δ
        dev = f"{100 * k['dev']:.1f}"
        dev = f"| **{dev}** |" if k["chosen"] else f"| {dev} |"
        delta = k["second_half"].get("delta_mean")  # a rounded zero is +0.000, never -0.000
        delta = "–" if delta is None else f"{delta:+.3f}".replace("-0.000", "+0.000")
        assert any(
            line.startswith(f"| {k['task']} | {k['method'].upper()} | ") and dev in line
            and line.endswith(f"| {delta} |")
            and all(f"{n} = {v}" in line for n, v in k["knobs"].items())
            and (bool(k["knobs"]) or "| defaults |" in line)
            for line in lines
        ), k  # fmt: skip


def test_the_forks_page_quotes_its_training_signals():
    """docs/forks.md's training-signal table is results.json's (experiments.sweeps)."""
    import json
    from pathlib import Path

    from dqo_tutorial.experiments.sweeps import signals_table

    docs = Path(__file__).resolve().parents[1] / "docs"
    runs = json.loads((docs / "forks" / "study" / "results.json").read_text())["runs"]
    table = signals_table(runs)
    assert table.count("\n") >= 2 * 6 + 1  # both lengths, six critics each
    assert table in (docs / "forks.md").read_text()


_REPLICATION = ("DQO, λ=0, oracle critic − DQO, flat critic",
                "DQO, oracle critic − DQO, flat critic")  # fmt: skip
_LEARNED = ("DQO, λ=0 − DQO, flat critic", "DQO, λ=0, oracle critic − DQO, λ=0",
            "DQO, λ=0.95 − DQO, flat critic")  # fmt: skip


@pytest.mark.parametrize(
    "heads, labels", [(_REPLICATION, ("5–9", "0–9")), (_LEARNED, ("0–9",))], ids=["replication",
                                                                                 "learned"]
)  # fmt: skip
def test_the_forks_page_quotes_the_12_operation_replication(heads, labels):
    """docs/forks.md's 12-operation rows fixed in advance (docs/forks/replication-12ops.md,
    docs/forks/learned-critic-12ops.md): each contrast on seeds 5–9
    (docs/forks/study/replication-12ops.json) and on seeds 0–9, recomputed here from the runs
    with experiments.sweeps.contrasts."""
    import json
    from pathlib import Path

    from dqo_tutorial.experiments.sweeps import contrasts

    docs = Path(__file__).resolve().parents[1] / "docs"
    study = docs / "forks" / "study"
    fresh = json.loads((study / "replication-12ops.json").read_text())["runs"]
    earlier = [r for r in json.loads((study / "results.json").read_text())["runs"]
               if r.get("ops") == 12]  # fmt: skip
    assert {r["seed"] for r in fresh} == {5, 6, 7, 8, 9}
    page = (docs / "forks.md").read_text()
    for head in heads:
        for label in labels:
            runs, cells = fresh if label == "5–9" else earlier + fresh, []
            for d in ("greedy", "sampling"):
                e = contrasts(runs, "forks", d)[12][head]
                assert e["n_seeds"] == (5 if label == "5–9" else 10)
                low, high = e["ci95"]
                cells.append(f"{100 * e['mean']:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}] "
                             f"({e['seeds_above_0']}/{e['n_seeds']})")  # fmt: skip
            assert f"| {head} | {label} | " + " | ".join(cells) + " |" in page, (head, label)


def test_the_forks_page_states_how_many_intervals_it_reads():
    """The page's count of distinct intervals (every "mean [low, high] (k/n)" table cell, one
    quoted twice counted once) and of those that exclude 0 is the count of its tables."""
    import re
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "forks.md").read_text()
    cell = r"([+-]\d+\.\d) \[([+-]\d+\.\d), ([+-]\d+\.\d)\] \(\d+/\d+\)"
    found = {m.group(0): (float(m.group(2)), float(m.group(3)))
             for line in page.splitlines() if line.startswith("|")
             for m in re.finditer(cell, line)}  # fmt: skip
    excluding = sum(low > 0 or high < 0 for low, high in found.values())
    stated = re.search(r"Intervals read on this page:\*\* (\d+) distinct.*?and\s+(\d+) do\.",
                       page, re.S)  # fmt: skip
    assert stated and (int(stated[1]), int(stated[2])) == (len(found), excluding)
    assert f"about {round(0.05 * len(found))} would exclude 0 by chance" in page


def test_the_forks_page_quotes_the_two_process_check():
    """docs/forks.md section 6's table is docs/forks/study/two-processes.md's (the output of
    docs/forks/two_processes.py), row for row."""
    from pathlib import Path

    docs = Path(__file__).resolve().parents[1] / "docs"
    table = [line for line in (docs / "forks" / "study" / "two-processes.md").read_text()
             .splitlines() if line.startswith("| A − B") or line.startswith("| two")
             or line.startswith("| one")]  # fmt: skip
    assert len(table) == 3
    page = (docs / "forks.md").read_text()
    assert all(line in page for line in table)
