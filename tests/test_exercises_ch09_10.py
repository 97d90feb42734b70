"""Notebooks 09 (GSM8K) and 10 (the Q-value explorer): their checkers fail the plausible wrong
answers, their references agree with independent ones, the package's grader keeps the API
contract on the hard cases, and the notebooks quote no measured figure that no code produces."""

from __future__ import annotations

import itertools
import json
import math
import re
from collections import Counter
from decimal import Decimal
from pathlib import Path

import nbformat
import pytest
import torch

import dqo_tutorial as dqo
from dqo_tutorial import exercises, gsm8k, kernels
from dqo_tutorial.exercises import ch09, ch10

ROOT = Path(__file__).resolve().parents[1]
NB09 = ROOT / "notebooks" / "09_gsm8k.ipynb"
NB10 = ROOT / "notebooks" / "10_q_value_explorer.ipynb"
GPU_JSON = ROOT / "docs" / "gsm8k-gpu.json"
GPU_PAGE = ROOT / "docs" / "gsm8k-gpu.md"
SEEDS = (0, 1, 9091)


def _read(path: Path):
    return nbformat.read(path, as_version=4)


def _solution(path: Path, name: str):
    """The reference solution ``name`` of a notebook, executed as the notebook would."""
    for cell in _read(path).cells:
        if cell.cell_type == "code" and cell.source.startswith(f"def {name}("):
            ns = {"torch": torch, "math": math, "dqo": dqo}
            exec(compile(cell.source, f"<{name}>", "exec"), ns)
            return ns[name]
    raise AssertionError(f"no solution cell defines {name}")


def _fails(checker, fn) -> str:
    verdicts = [checker(fn, seed=s, quiet=True) for s in SEEDS]
    assert not all(v.passed for v in verdicts), "a wrong answer passed"
    return next(v.message for v in verdicts if not v.passed)


# --------------------------------------------------------------------------------------------
# the package's grader, on the cases the API contract names
# --------------------------------------------------------------------------------------------

EXTRACT_CASES = [
    ("#### -5", "strict", "-5"),
    ("#### 2.5", "strict", "2.5"),
    ("#### -3.50", "strict", "-3.5"),
    ("#### 5.00", "strict", "5"),
    ("#### $1,200.", "strict", "1200"),
    ("It costs $1,200.", "flexible", "1200"),
    ("It costs $1,200.", "strict", None),
    ("#### 5\nWait, one more.\n#### 6", "strict", "6"),
    ("#### 5\nWait, one more.\n#### 6", "flexible", "6"),
    ("#### 7\nQuestion: and then?\n####", "strict", "7"),
    ("No number at all.", "strict", None),
    ("No number at all.", "flexible", None),
    ("Robot B12 drinks H2O.", "flexible", None),
    ("So 18 apples, says robot B12.", "flexible", "18"),
    ("The answer is 18.", "strict", None),
    ("The answer is 18.", "flexible", "18"),
    ("#### -0", "strict", "0"),
    ("#### 0.50", "strict", "0.5"),
    ("Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 72", "strict", "72"),
]


@pytest.mark.parametrize("text,mode,expected", EXTRACT_CASES)
def test_extract_answer_keeps_the_contract(text, mode, expected):
    assert gsm8k.extract_answer(text, mode) == expected


@pytest.mark.parametrize(
    "response,gold,mode,expected",
    [
        ("#### -5", "-5", "strict", True),
        ("#### 2.50", "2.5", "strict", True),
        ("#### -3.50", "-3.5", "strict", True),
        ("#### 3.5", "-3.5", "strict", False),
        ("#### $1,200.", "1200", "strict", True),
        ("#### 1200", "1,200", "strict", True),
        ("#### 5\nno wait\n#### 6", "5", "strict", False),
        ("#### 5\nno wait\n#### 6", "6", "strict", True),
        ("#### 72", "She sold 48 + 24 = <<48+24=72>>72 clips.\n#### 72", "strict", True),
        ("#### 71", "She sold 48 + 24 = <<48+24=72>>72 clips.\n#### 72", "strict", False),
        ("The answer is 72.", "72", "strict", False),
        ("The answer is 72.", "72", "flexible", True),
        ("No number at all.", "72", "flexible", False),
    ],
)
def test_is_correct_keeps_the_contract(response, gold, mode, expected):
    assert gsm8k.is_correct(response, gold, mode) is expected


def test_a_gold_without_a_number_is_refused():
    with pytest.raises(ValueError):
        gsm8k.is_correct("#### 5", "no number")


# --------------------------------------------------------------------------------------------
# 9.1 flexible_answer
# --------------------------------------------------------------------------------------------


def test_flexible_answer_inputs_cover_the_demanded_cases():
    gen = torch.Generator().manual_seed(0)
    texts = [ch09._response(gen, i) for i in range(exercises.N_INPUTS)]
    answers = [gsm8k.extract_answer(t, "flexible") for t in texts]
    assert None in answers
    assert any(a and a.startswith("-") for a in answers)
    assert any(a and "." in a for a in answers)
    assert any(t.count("####") >= 2 for t in texts)
    assert any("B12" in t for t in texts) and any("$" in t for t in texts)
    assert any(re.search(r"\d,\d{3}", t) for t in texts)
    assert any(re.search(r"\.\d*0\b", t) for t in texts)  # trailing zeros to strip


def _flexible_variant(marker_index=-1, normalise=True, sign=True, lookbehind=True, fallback=True):
    number = (r"(-?)" if sign else r"()") + r"\$?(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"

    def fn(text):
        found = re.findall(r"####\s*" + number, text)
        if not found and fallback:
            found = re.findall((r"(?<![\w.])" if lookbehind else "") + number, text)
        if not found:
            return None
        s, digits = found[marker_index]
        if not normalise:
            return s + digits.replace(",", "")
        value = Decimal(digits.replace(",", "")).normalize()
        return "0" if value == 0 else s + f"{value:f}"

    return fn


def test_flexible_answer_reference_solution_passes_every_seed():
    fn = _solution(NB09, "flexible_answer")
    assert all(exercises.check_flexible_answer(fn, seed=s, quiet=True).passed for s in SEEDS)
    assert exercises.check_flexible_answer(_flexible_variant(), n=100, quiet=True).passed


@pytest.mark.parametrize(
    "wrong",
    [
        "first marker",
        "no normalisation",
        "sign dropped",
        "numbers inside words",
        "strict only",
        "float",
        "commas kept",
        "bare trailing marker not skipped",
        "returns a number",
    ],
)
def test_flexible_answer_fails_plausible_wrong_answers(wrong):
    fn = {
        "first marker": _flexible_variant(marker_index=0),
        "no normalisation": _flexible_variant(normalise=False),
        "sign dropped": _flexible_variant(sign=False),
        "numbers inside words": _flexible_variant(lookbehind=False),
        "strict only": _flexible_variant(fallback=False),
        "float": lambda t: None if (a := _flexible_variant()(t)) is None else str(float(a)),
        "commas kept": lambda t: (m := re.findall(r"-?[\d,]*\d(?:\.\d+)?", t)) and m[-1] or None,
        "bare trailing marker not skipped": lambda t: (
            _flexible_variant()(t[t.rfind("####") :]) if "####" in t else _flexible_variant()(t)
        ),
        "returns a number": lambda t: None if (a := _flexible_variant()(t)) is None else Decimal(a),
    }[wrong]
    _fails(exercises.check_flexible_answer, fn)


def test_flexible_answer_that_calls_the_package_fails():
    from dqo_tutorial.gsm8k import extract_answer as alias

    message = _fails(exercises.check_flexible_answer, lambda t: alias(t, "flexible"))
    assert "extract_answer" in message


# --------------------------------------------------------------------------------------------
# 9.2 maj_at_k
# --------------------------------------------------------------------------------------------


def test_maj_at_k_reference_on_hand_made_cases():
    golds = ["1,200", "Step.\n#### 5", "7", "2.5", "-3"]
    responses = [
        ["#### 1200", "#### $1,200.", "#### 1100"],  # two ways of one answer win
        ["#### 5", "#### 6", "no answer"],  # a 1–1 tie: 1/2
        ["The answer is 7", "no idea", "####"],  # nobody votes
        ["#### 2.50", "#### 3", "#### 4"],  # a three-way tie: 1/3
        ["#### 3", "#### -3\nno wait\n#### 3", "#### -3"],  # the last marker counts: 3 wins
    ]
    expected = torch.tensor([1.0, 0.5, 0.0, 1 / 3, 0.0], dtype=torch.float64)
    assert torch.allclose(ch09._maj_reference(responses, golds), expected)


def _maj_variant(how: str):
    def fn(responses, golds):
        out = []
        for row, gold in zip(responses, golds):
            mode = "flexible" if how == "flexible votes" else "strict"
            answers = [gsm8k.extract_answer(r, mode) for r in row]
            if how != "counts None":
                answers = [a for a in answers if a is not None]
            target = {
                "raw gold": gold,
                "strict gold": gsm8k.extract_answer(gold, "strict"),
            }.get(how, gsm8k.extract_answer(gold, "flexible"))
            if not answers:
                out.append(0.0)
                continue
            votes = Counter(answers)
            if how == "first of the ties":
                out.append(float(votes.most_common(1)[0][0] == target))
            elif how == "mean":
                out.append(sum(a == target for a in answers) / len(row))
            else:
                top = max(votes.values())
                winners = [a for a, c in votes.items() if c == top]
                out.append(1 / len(winners) if target in winners else 0.0)
        return torch.tensor(out, dtype=torch.float64)

    return fn


def test_maj_at_k_reference_solution_passes_every_seed():
    fn = _solution(NB09, "maj_at_k")
    assert all(exercises.check_maj_at_k(fn, seed=s, quiet=True).passed for s in SEEDS)
    assert exercises.check_maj_at_k(_maj_variant("right"), n=100, quiet=True).passed


@pytest.mark.parametrize(
    "how", ["first of the ties", "counts None", "raw gold", "strict gold", "mean", "flexible votes"]
)
def test_maj_at_k_fails_plausible_wrong_answers(how):
    _fails(exercises.check_maj_at_k, _maj_variant(how))


# --------------------------------------------------------------------------------------------
# 9.3 pass_at_k
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n,c,k", [(4, 0, 2), (4, 1, 2), (5, 3, 3), (6, 6, 1), (6, 2, 6), (3, 1, 1)]
)
def test_pass_at_k_reference_is_the_chance_over_every_subset(n, c, k):
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    brute = sum(any(samples[i] for i in s) for s in subsets) / len(subsets)
    got = ch09._pass_reference(torch.tensor([samples]), k)
    assert abs(float(got[0]) - brute) < 1e-12


def test_pass_at_k_reference_solution_passes_every_seed():
    fn = _solution(NB09, "pass_at_k")
    assert all(exercises.check_pass_at_k(fn, seed=s, quiet=True).passed for s in SEEDS)


@pytest.mark.parametrize("how", ["biased plug-in", "pass@1 for every k", "off by one", "c/k"])
def test_pass_at_k_fails_plausible_wrong_answers(how):
    def fn(correct, k):
        n = correct.shape[1]
        c = correct.sum(1).double()
        if how == "biased plug-in":
            return 1 - (1 - c / n) ** k
        if how == "pass@1 for every k":
            return c / n
        if how == "c/k":
            return (c / k).clamp(max=1.0)
        i = torch.arange(1, n + 1, dtype=torch.float64)  # the product from n − c, not n − c + 1
        return 1 - torch.where(i >= n - c[:, None], 1 - k / i, 1.0).prod(1)

    _fails(exercises.check_pass_at_k, fn)


# --------------------------------------------------------------------------------------------
# 10.1 blamed_token
# --------------------------------------------------------------------------------------------


def test_blamed_token_reference_on_hand_made_cases():
    adv = torch.tensor([[9.0, 0.5, -1.0, -1.0], [9.0, -7.0, 2.0, 9.0], [1.0, 2.0, 3.0, 4.0]])
    mask = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 0], [0, 0, 0, 0]]).bool()
    # row 0 left padded, a tie → the first; row 1: the masked −7 is junk; row 2: empty
    assert ch10._blamed_reference(adv, mask).tolist() == [1.0, 0.0, -1.0]


def test_blamed_token_reference_solution_passes_every_seed():
    fn = _solution(NB10, "blamed_token")
    assert all(exercises.check_blamed_token(fn, seed=s, quiet=True).passed for s in SEEDS)


@pytest.mark.parametrize(
    "how", ["column index", "zero fill", "empty row gives 0", "last of ties", "argmax"]
)
def test_blamed_token_fails_plausible_wrong_answers(how):
    def fn(advantage, mask):
        mask = mask.bool()
        fill = 0.0 if how == "zero fill" else math.inf
        if how == "argmax":
            scores = torch.where(mask, -advantage, torch.tensor(fill, dtype=advantage.dtype))
        else:
            scores = torch.where(mask, advantage, torch.tensor(fill, dtype=advantage.dtype))
        if how == "last of ties":
            column = scores.shape[1] - 1 - scores.flip(1).argmin(1)
        else:
            column = scores.argmin(1)
        first = 0 if how == "column index" else mask.long().argmax(1)
        empty = 0 if how == "empty row gives 0" else -1
        return torch.where(mask.any(1), column - first, torch.tensor(empty))

    _fails(exercises.check_blamed_token, fn)


# --------------------------------------------------------------------------------------------
# 10.2 advantage_extremes
# --------------------------------------------------------------------------------------------


def _naive_advantage(pol, ref, values, rewards, mask, beta, lam, bootstrap):
    """A per-row loop straight from the Key equations: independent of the λ-return kernel."""
    out = torch.zeros_like(values)
    for b in range(values.shape[0]):
        cols = [t for t in range(values.shape[1]) if mask[b, t]]
        end = 0.0 if bootstrap is None else float(bootstrap[b])
        for j, t in enumerate(cols):
            rest = cols[j + 1 :]
            if lam == 0:
                target = float(values[b, rest[0]]) if rest else end
            else:
                shaped = [float(rewards[b, u] - beta * (pol[b, u] - ref[b, u])) for u in rest]
                target = sum(shaped) + end
            out[b, t] = float(rewards[b, t]) + target - float(values[b, t])
    return out


def test_advantage_extremes_reference_equals_a_naive_loop():
    gen = torch.Generator().manual_seed(3)
    for i in range(30):
        args, _ = ch10._extremes_inputs(gen, i)
        ours = ch10._extremes_reference(*args)
        assert torch.allclose(ours, _naive_advantage(*args), atol=1e-9), i


def test_advantage_extremes_reference_solution_passes_every_seed():
    fn = _solution(NB10, "advantage_extremes")
    assert all(exercises.check_advantage_extremes(fn, seed=s, quiet=True).passed for s in SEEDS)
    assert exercises.check_advantage_extremes(_naive_advantage, quiet=True).passed


@pytest.mark.parametrize(
    "how", ["own KL counted", "no bootstrap", "last column is the last action", "r instead of r̃"]
)
def test_advantage_extremes_fails_plausible_wrong_answers(how):
    def fn(pol, ref, values, rewards, mask, beta, lam, bootstrap=None):
        mask = mask.bool()
        zero = torch.zeros((), dtype=values.dtype)
        rho = torch.where(mask, pol - ref, zero)
        v, r = torch.where(mask, values, zero), torch.where(mask, rewards, zero)
        b = torch.zeros(len(v), dtype=v.dtype)
        if bootstrap is not None and how != "no bootstrap":
            b = bootstrap.to(v.dtype)
        if how == "last column is the last action":
            last = torch.zeros_like(mask)
            last[:, -1] = True
        else:
            last = mask & ~torch.cat([mask[:, 1:], torch.zeros_like(mask[:, :1])], 1)
        if lam == 0:
            v_next = torch.cat([v[:, 1:], torch.zeros_like(v[:, :1])], 1)
            target = torch.where(last, b[:, None], v_next)
        else:
            shaped = r if how == "r instead of r̃" else r - beta * rho
            after = shaped.flip(1).cumsum(1).flip(1)
            if how != "own KL counted":
                after = after - shaped
            else:
                after = after - r
            target = after + b[:, None]
        return torch.where(mask, r + target - v, zero)

    _fails(exercises.check_advantage_extremes, fn)


@pytest.mark.parametrize("which", ["kernel", "naive"])
def test_advantage_extremes_that_calls_a_lambda_return_fails(which):
    lambda_return = {"kernel": kernels.lambda_return, "naive": dqo.naive.lambda_return}[which]

    def cheat(pol, ref, values, rewards, mask, beta, lam, bootstrap=None):
        zero = torch.zeros((), dtype=values.dtype)
        rho = torch.where(mask, pol - ref, zero)
        v = torch.where(mask, values, zero)
        g = lambda_return(torch.where(mask, rewards, zero) - beta * rho, v, mask, lam, bootstrap)
        return torch.where(mask, beta * rho - (v - g), zero)

    assert "lambda_return" in _fails(exercises.check_advantage_extremes, cheat)


# --------------------------------------------------------------------------------------------
# the notebooks' text: no drift, rendered maths, the course's boxes
# --------------------------------------------------------------------------------------------


def _markdown(path: Path) -> list[str]:
    return [c.source for c in _read(path).cells if c.cell_type == "markdown"]


def _leaves(tree, path=()):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(tree, list):
        for k, v in enumerate(tree):
            yield from _leaves(v, (*path, k))
    else:
        yield path, tree


def _renderings(value) -> list[str]:
    """How docs/gsm8k-gpu.md may print a figure of the JSON."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return [str(value)]
    if isinstance(value, int):
        return [f"{value:,}", str(value)]
    out = [str(value), f"{value:,}"]
    if value < 1:  # a rate: the page prints percentages
        out += [f"{100 * value:.{d}f} %" for d in (2, 1, 0)]
    return out


def test_the_gpu_results_file_holds_the_pages_figures():
    page = GPU_PAGE.read_text()
    results = json.loads(GPU_JSON.read_text())
    missing = [
        (path, value)
        for path, value in _leaves(results)
        if path[0] not in ("about", "device") and not any(r in page for r in _renderings(value))
    ]
    assert not missing, missing


def test_notebook_09_reads_the_measured_figures_instead_of_typing_them():
    code = "\n".join(c.source for c in _read(NB09).cells if c.cell_type == "code")
    assert "gsm8k-gpu.json" in code
    text = "\n".join(_markdown(NB09))
    figures = [
        r
        for path, value in _leaves(json.loads(GPU_JSON.read_text()))
        if isinstance(value, float)
        or (
            isinstance(value, int)
            and value >= 1000
            and path[-1] not in ("train_prompts", "sft_problems")
        )
        for r in _renderings(value)
        if len(r) >= 3
    ]
    quoted = [f for f in figures if f in text]
    assert not quoted, quoted


@pytest.mark.parametrize("path", [NB09, NB10], ids=["09", "10"])
def test_no_measured_number_is_typed_into_the_text(path):
    """Percentages, durations, rates and '≈ x' in prose come from a run: a cell prints them."""
    for source in _markdown(path):
        prose = re.sub(r"```.*?```", "", source, flags=re.S)  # code blocks (a command line)
        prose = re.sub(r"`[^`]*`", "", prose)  # code spans (e.g. an answer format like `25%`)
        bad = re.findall(
            r"\d[\d,.]*\s?%|\d+(?:\.\d+)?\s?(?:s|ms|min|minutes|GB|MiB)\b|≈\s?[-−]?(?:0[.,]\d|[1-9])|s/step|tokens/s",
            prose,
        )
        assert not bad, (bad, source[:120])


@pytest.mark.parametrize("path", [NB09, NB10], ids=["09", "10"])
def test_table_maths_has_no_bare_bar(path):
    for source in _markdown(path):
        for line in source.splitlines():
            if line.startswith("|"):
                for maths in re.findall(r"\$([^$]*)\$", line):
                    assert "|" not in maths, line


@pytest.mark.parametrize("path", [NB09, NB10], ids=["09", "10"])
def test_boxes_references_and_answers(path):
    cells = _read(path).cells
    markdown = [c.source for c in cells if c.cell_type == "markdown"]
    assert any(s.startswith("> **Key equations**") for s in markdown[:5])
    refs = next(i for i, c in enumerate(cells) if c.source.startswith("## References"))
    exercises_at = next(i for i, c in enumerate(cells) if c.source.startswith("## Exercises"))
    assert refs < exercises_at
    assert "arXiv:2410.09302" in cells[refs].source
    for i, cell in enumerate(cells):
        if cell.cell_type == "markdown" and "(no checker)" in cell.source:
            assert cells[i + 1].cell_type == "markdown"
            assert cells[i + 1].source.startswith("**Answer.**")
        if cell.cell_type == "code" and cell.source.startswith("verdict = exercises.check_"):
            lines = cell.source.splitlines()
            assert lines[1:3] == [
                "### BEGIN HIDDEN TESTS",
                "assert verdict.passed, verdict.message",
            ]
            assert re.fullmatch(
                r"assert exercises\.check_\w+\(\w+, seed=[1-9]\d*, quiet=True\)\.passed", lines[3]
            )
            assert lines[4] == "### END HIDDEN TESTS"
