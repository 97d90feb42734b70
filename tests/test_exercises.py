"""Exercise checkers: pass on the notebooks' reference solutions, say "not implemented" on the
student copies, report wrong answers and crashes as verdicts (never raise)."""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import nbformat
import pytest
import torch

import dqo_tutorial as dqo
from dqo_tutorial import course, exercises

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"


def _concept_notebooks(directory: Path) -> list[Path]:
    """Every numbered notebook but the overview 00 (01 … 10 and on)."""
    return sorted(p for p in directory.glob("[0-9][0-9]_*.ipynb") if not p.name.startswith("00_"))


CONCEPT_NOTEBOOKS = _concept_notebooks(NOTEBOOK_DIR)


def _exercise_pairs(nb) -> list[tuple[str, str]]:
    """(solution cell, the checker cell after it) for every exercise of a notebook."""
    cells = [c for c in nb.cells if c.cell_type == "code"]
    pairs = []
    for i, cell in enumerate(cells):
        if course.BEGIN_SOLUTION in cell.source or "raise NotImplementedError" in cell.source:
            check = cells[i + 1].source
            assert "exercises.check_" in check, "a solution cell must be followed by its checker"
            pairs.append((cell.source, check))
    return pairs


def _run_exercise(solution: str, check: str) -> exercises.Verdict:
    """Execute a solution cell then its checker cell, as the notebook would; return the verdict."""
    ns = {"torch": torch, "math": math, "dqo": dqo, "course": course, "exercises": exercises}
    exec(compile(solution, "<solution>", "exec"), ns)
    exec(compile(check, "<check>", "exec"), ns)
    return ns["verdict"]


def _all_pairs(directory: Path):
    for path in _concept_notebooks(directory):
        for k, pair in enumerate(_exercise_pairs(nbformat.read(path, as_version=4))):
            yield f"{path.stem}-{k + 1}", pair


REFERENCE = list(_all_pairs(NOTEBOOK_DIR))


def test_every_concept_notebook_has_checked_exercises():
    per_notebook = {
        p.stem: len(_exercise_pairs(nbformat.read(p, as_version=4))) for p in CONCEPT_NOTEBOOKS
    }
    assert per_notebook and all(n >= 2 for n in per_notebook.values()), per_notebook


@pytest.mark.parametrize("name,pair", REFERENCE, ids=[n for n, _ in REFERENCE])
def test_checker_passes_on_the_reference_solution(name, pair, capsys):
    verdict = _run_exercise(*pair)
    assert verdict.status == "pass", verdict.message
    assert capsys.readouterr().out.startswith("✓")


def test_student_copies_give_the_not_implemented_verdict(tmp_path, capsys):
    course.make_student_copies(NOTEBOOK_DIR, tmp_path)
    student = list(_all_pairs(tmp_path))
    assert len(student) == len(REFERENCE)
    for name, pair in student:
        assert course.BEGIN_SOLUTION not in pair[0]
        verdict = _run_exercise(*pair)
        assert verdict.status == "not_implemented", (name, verdict.message)
        assert "not implemented yet" in capsys.readouterr().out


CHECKERS = [getattr(exercises, n) for n in exercises.__all__ if n.startswith("check_")]
CHECKERS.remove(exercises.check_function)


def test_every_checker_is_used_by_a_notebook():
    used = {
        name for _, (_, check) in REFERENCE for name in re.findall(r"exercises\.(check_\w+)", check)
    }
    assert {c.__name__ for c in CHECKERS} <= used, sorted({c.__name__ for c in CHECKERS} - used)


@pytest.mark.parametrize("checker", CHECKERS, ids=lambda c: c.__name__)
def test_checkers_never_crash(checker, capsys):
    def not_yet(*args, **kwargs):
        raise NotImplementedError

    def broken(*args, **kwargs):
        raise KeyError("oops")

    def wrong(*args, **kwargs):
        return torch.tensor(12345.0)

    assert checker(not_yet).status == "not_implemented"
    v = checker(broken)
    assert v.status == "error" and "KeyError" in v.message
    v = checker(wrong)
    assert v.status == "fail" and v.message.startswith("✗")
    out = capsys.readouterr().out
    assert "not implemented yet" in out and "raised KeyError" in out


def test_a_wrong_answer_is_located():
    def nan_unsafe(token_logps, mask):
        return (token_logps * mask).sum(1)  # NaN * 0 = NaN off the mask

    v = exercises.check_sequence_logprob(nan_unsafe)
    assert v.status == "fail"
    assert "at index" in v.message and "max |diff|" in v.message and "nan" in v.message


def test_compare_agrees_on_equal_infinities_only():
    inf = math.inf
    ref = torch.tensor([inf, -inf, 1.0, math.nan])
    assert exercises.mismatch(torch.tensor([inf, -inf, 1.0, math.nan]), ref, 1e-6, 1e-6) is None
    for wrong in ([-inf, -inf, 1.0, math.nan], [inf, -inf, inf, math.nan], [inf, -inf, 1.0, 0.0]):
        assert "1 of 4 entries wrong" in exercises.mismatch(torch.tensor(wrong), ref, 1e-6, 1e-6)


def test_check_close():
    course.check_close("same", torch.ones(3), [1.0, 1.0, 1.0])
    with pytest.raises(AssertionError, match="at index \\(1,\\)"):
        course.check_close("differ", torch.ones(3), [1.0, 2.0, 1.0])
    with pytest.raises(AssertionError, match="shape"):
        course.check_close("shape", torch.ones(3), torch.ones(2))
    course.check_close("nan matches nan", [math.nan, 1.0], [math.nan, 1.0])
    course.check_close("equal infinities", [math.inf, -math.inf], [math.inf, -math.inf])


@pytest.mark.parametrize(
    "ours, ref, close",
    [
        ([math.inf, -math.inf], [math.inf, -math.inf], True),
        ([math.inf], [-math.inf], False),
        ([math.nan], [math.nan], True),
        ([math.nan], [0.0], False),
        ([1.0, 2.0], [1.0, 2.0 + 1e-9], True),
        ([1.0, 2.0], [1.0, 2.1], False),
        ([0.0], [math.inf], False),
    ],
)
def test_check_close_and_the_checkers_share_one_verdict(ours, ref, close):
    assert (exercises.mismatch(ours, ref) is None) == close
    try:
        course.check_close("x", ours, ref)
        passed = True
    except AssertionError:
        passed = False
    assert passed == close


def test_require(capsys):
    assert course.require("0.1.0") is None
    assert set(course.versions()) >= {"python", "torch", "transformers", "dqo_tutorial"}
    out = capsys.readouterr().out
    assert "dqo_tutorial" in out and "torch" in out and "transformers" in out
    with pytest.raises(RuntimeError, match="needs dqo_tutorial >= 99.0"):
        course.require("99.0")


def test_smoke_switch_changes_sizes_only(monkeypatch):
    monkeypatch.delenv(course.SMOKE_ENV, raising=False)
    assert not course.is_smoke() and course.sized(100, 3) == 100
    monkeypatch.setenv(course.SMOKE_ENV, "1")
    assert course.is_smoke() and course.sized(100, 3) == 3
    monkeypatch.setenv(course.SMOKE_ENV, "0")
    assert not course.is_smoke()


def test_solution_cells_define_exactly_one_function():
    for name, (solution, _) in REFERENCE:
        tree = ast.parse(solution)
        defs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
        assert len(defs) == 1, name


# --------------------------------------------------------------------------------------------
# checkers that cannot be fooled (issue 19)
# --------------------------------------------------------------------------------------------


def test_a_value_loss_without_the_clamp_fails():
    """The text demands 0 on an all-masked batch: dividing by mask.sum() gives 0/0 = NaN."""

    def unclamped(values, log_ratio, rewards, target, mask, beta):
        d = values + beta * log_ratio - rewards - target
        return torch.where(mask, 0.5 * d**2, 0.0).sum() / mask.sum()

    v = exercises.check_value_loss(unclamped)
    assert v.status == "fail" and "nan" in v.message, v.message


def test_a_residual_that_ignores_empty_rows_and_left_padding_fails():
    def right_padding_only(policy_logps, ref_logps, values, rewards, mask, beta, bootstrap=None):
        # the next state's value read one column to the right, the bootstrap at the row's end
        zero = torch.zeros((), dtype=values.dtype)
        v_next = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], 1)
        v_next = torch.where(torch.cat([mask[:, 1:], mask[:, :1] & False], 1), v_next, zero)
        b = zero if bootstrap is None else bootstrap[:, None]
        v_next = torch.where(mask & ~torch.cat([mask[:, 1:], mask[:, :1] & False], 1), b, v_next)
        d = values + beta * (policy_logps - ref_logps) - rewards - v_next
        return torch.where(mask, d, zero) if mask.any() else d  # forgets the all-masked batch

    assert exercises.check_one_step_residual(right_padding_only).status == "fail"


@pytest.mark.parametrize("how", ["module attribute", "imported name", "wrapped in a lambda"])
def test_calling_the_package_reference_fails(how):
    from dqo_tutorial.kernels import soft_bellman_residual as alias

    call = {
        "module attribute": lambda *a: dqo.kernels.soft_bellman_residual(*a),
        "imported name": lambda *a: alias(*a),
        "wrapped in a lambda": (lambda f: lambda *a: f(*a))(dqo.naive.soft_bellman_residual),
    }[how]

    def cheat(policy_logps, ref_logps, values, rewards, mask, beta, bootstrap=None):
        return call(policy_logps, ref_logps, values, rewards, mask, beta, bootstrap)

    v = exercises.check_one_step_residual(cheat)
    assert v.status == "fail" and "soft_bellman_residual" in v.message, v.message
    assert not v.passed


def test_the_watch_leaves_the_profiler_as_it_found_it():
    import sys

    seen = []
    previous = sys.getprofile()

    def profiler(frame, event, arg):
        seen.append(event)

    sys.setprofile(profiler)
    try:
        right = exercises.check_sequence_logprob(lambda x, m: torch.where(m, x, 0.0).sum(1))
        assert right.passed
        cheat = exercises.check_sequence_logprob(lambda x, m: dqo.kernels.masked_sum(x, m, 1))
        assert cheat.status == "fail"
        assert sys.getprofile() is profiler
    finally:
        sys.setprofile(previous)


def test_another_seed_gives_other_inputs():
    """A hidden test reruns the checker with another seed: a table of seed-0 answers fails."""
    from dqo_tutorial.exercises import _core

    seen: dict[int, list] = {}
    for seed in (0, 1):

        def record(token_logps, mask, seed=seed):
            seen.setdefault(seed, []).append(mask.clone())
            return torch.where(mask, token_logps, 0.0).sum(1)

        assert exercises.check_sequence_logprob(record, seed=seed, quiet=True).passed
    assert any(a.shape != b.shape or not torch.equal(a, b) for a, b in zip(seen[0], seen[1]))
    gen = torch.Generator().manual_seed(0)
    masks = [_core.edge_case_mask(gen, i, 3, 6) for i in range(10)]
    assert not masks[4].any() and not masks[7][0].any() and masks[7][1:].any(axis=1).all()
    assert masks[1][:, -1].all()  # input 1: left padding, every response ends the row
