"""Credit-assignment metrics against naive loops and hand-built toy responses whose first
wrong line is known (tests/test_credit.py; module dqo_tutorial.credit)."""

from __future__ import annotations

import itertools
import random

import pytest
import torch

from dqo_tutorial import credit, toy


def padded(rows: list[list[float]], lines: list[list[int]], side: str):
    """(score, mask, line) tensors of ragged rows, padded on ``side`` with junk."""
    t = max(map(len, rows), default=0) + 2
    score = torch.full((len(rows), t), 123.0)  # junk off the mask
    mask = torch.zeros(len(rows), t, dtype=torch.long)
    line = torch.full((len(rows), t), 99, dtype=torch.long)
    for b, (r, k) in enumerate(zip(rows, lines)):
        cols = slice(t - len(r), t) if side == "left" else slice(0, len(r))
        score[b, cols], mask[b, cols], line[b, cols] = torch.tensor(r), 1, torch.tensor(k)
    return score, mask, line


def random_rows(seed: int, n: int = 40):
    rng = random.Random(seed)
    rows, lines, wrong = [], [], []
    for b in range(n):
        n_lines = rng.randint(1, 4)
        per = [rng.randint(1, 4) for _ in range(n_lines)]
        k = [i for i, c in enumerate(per) for _ in range(c)]
        r = [float(rng.choice([-1, 0, 0.5, 1, rng.random()])) for _ in k]  # ties included
        rows.append(r if b % 9 else [])  # some rows without response tokens
        lines.append(k if b % 9 else [])
        wrong.append(rng.randrange(n_lines))
    return rows, lines, torch.tensor(wrong)


def naive(rows, lines, wrong):
    """Every metric by a Python loop over one response at a time."""
    token, step, tchance, schance = [], [], [], []
    for r, k, w in zip(rows, lines, wrong.tolist()):
        if not r:
            token.append(False), step.append(False), tchance.append(0.0), schance.append(0.0)
            continue
        h = r.index(min(r))
        token.append(k[h] == w)
        sums = {j: sum(s for s, kk in zip(r, k) if kk == j) for j in sorted(set(k))}
        best = min(sums, key=lambda j: (sums[j], j))
        step.append(best == w)
        tchance.append(sum(kk == w for kk in k) / len(k))
        schance.append(1 / len(set(k)))
    return token, step, tchance, schance


@pytest.mark.parametrize(("side", "seed"), list(itertools.product(["left", "right"], [0, 1, 2])))
def test_blame_metrics_against_a_naive_loop(side, seed):
    rows, lines, wrong = random_rows(seed)
    score, mask, line = padded(rows, lines, side)
    token, step, tchance, schance = naive(rows, lines, wrong)
    assert credit.token_blame_hits(score, mask, line, wrong).tolist() == token
    assert credit.step_blame_hits(score, mask, line, wrong).tolist() == step
    torch.testing.assert_close(credit.token_blame_chance(mask, line, wrong),
                               torch.tensor(tchance, dtype=torch.float64))  # fmt: skip
    torch.testing.assert_close(credit.step_blame_chance(mask, line),
                               torch.tensor(schance, dtype=torch.float64))  # fmt: skip
    positions = [r.index(min(r)) if r else -1 for r in rows]
    assert credit.blamed_token(score, mask).tolist() == positions


def toy_wrong_response(step: int = 1):
    """A toy problem and its response slipped at ``step``: per-character line indices (the
    toy tokenizer is character-level) and the first wrong line from the task's checker."""
    question = toy.load_toy("test", 1)[0].question  # '8 +6 -3'
    response = toy.slipped_solution(question, step)  # '8+6=14\n14-3=12\n#### 12'
    lines, k = [], 0
    for ch in response:
        lines.append(k)
        k += ch == "\n"
    return question, response, lines, toy.first_error(question, response)


def test_hand_built_signals_on_a_slipped_toy_response():
    """'8+6=14\\n14-3=12\\n#### 12' slips in line 1. A signal that dips at the slipped digit is
    a hit at token and step level; one that dips only at the final token (what an outcome-only
    critic does) is a miss at both; partial credit reads the prefix above the slip."""
    question, response, lines, w = toy_wrong_response()
    assert w == 1 and toy.line_correctness(question, response) == [True, False, False]
    slip = response.index("12")
    at_slip = [-1.0 if h == slip + 1 else 0.2 for h in range(len(response))]
    at_end = [0.2] * (len(response) - 1) + [-1.0]
    score, mask, line = padded([at_slip, at_end], [lines, lines], "left")
    wrong = torch.tensor([w, w])
    assert credit.token_blame_hits(score, mask, line, wrong).tolist() == [True, False]
    assert credit.step_blame_hits(score, mask, line, wrong).tolist() == [True, False]
    assert credit.blamed_token(score, mask).tolist() == [slip + 1, len(response) - 1]
    tokens_in_line_1 = len("14-3=12\n")
    chance = credit.token_blame_chance(mask, line, wrong)
    assert chance.tolist() == [tokens_in_line_1 / len(response)] * 2
    pc = credit.partial_credit(score[:1], mask[:1], line[:1], wrong[:1])
    assert pc["prefix"] == pytest.approx(0.2) and pc["prefix_tokens"] == len("8+6=14\n")
    assert pc["wrong"] == pytest.approx((0.2 * (tokens_in_line_1 - 1) - 1) / tokens_in_line_1)
    assert pc["after_tokens"] == len("#### 12")


def test_partial_credit_of_an_empty_population_is_zero_not_nan():
    score, mask, line = padded([[]], [[]], "right")
    pc = credit.partial_credit(score, mask, line, torch.tensor([0]))
    assert pc == {"prefix": 0.0, "prefix_tokens": 0, "wrong": 0.0, "wrong_tokens": 0,
                  "after": 0.0, "after_tokens": 0}  # fmt: skip


def naive_auc(x, y):
    return sum((a > b) + 0.5 * (a == b) for a in x for b in y) / (len(x) * len(y))


@pytest.mark.parametrize("seed", range(4))
def test_auc_is_the_mann_whitney_probability(seed):
    rng = random.Random(seed)
    x = [rng.choice([0.0, 0.5, 1.0, rng.random()]) for _ in range(rng.randint(1, 30))]
    y = [rng.choice([0.0, 0.5, 1.0, rng.random()]) for _ in range(rng.randint(1, 30))]
    assert credit.auc(x, y) == pytest.approx(naive_auc(x, y), abs=1e-12)


def test_auc_by_hand():
    assert credit.auc([3, 4], [1, 2]) == 1.0
    assert credit.auc([1, 2], [3, 4]) == 0.0
    assert credit.auc([1, 1], [1]) == 0.5
    assert credit.auc([2, 1], [1, 0]) == pytest.approx((1 + 1 + 0.5 + 1) / 4)
    assert credit.auc([], [1.0]) == 0.5


def test_value_error_by_hand():
    values = torch.tensor([[0.5, 0.5, 9.0], [0.0, 1.0, 0.0]])
    targets = torch.tensor([[1.0, 0.0, 9.0], [1.0, 1.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert credit.value_error(values, targets, mask) == pytest.approx((0.5 + 0.5 + 1) / 5)
    assert credit.value_error(values, targets, torch.zeros_like(mask)) == 0.0


def test_leave_one_out_means_against_a_loop():
    rng = random.Random(0)
    groups = [rng.randrange(5) for _ in range(30)] + [99]  # prompt 99 has one response
    outcomes = [float(rng.random() < 0.4) for _ in groups]
    got = credit.leave_one_out_means(outcomes, groups).tolist()
    for i, g in enumerate(groups):
        mates = [o for j, (o, h) in enumerate(zip(outcomes, groups)) if h == g and j != i]
        others = outcomes[:i] + outcomes[i + 1 :]
        want = sum(mates) / len(mates) if mates else sum(others) / len(others)
        assert got[i] == pytest.approx(want, abs=1e-12)
