r"""Helpers of the notebook course (``notebooks/``): set-up check, comparisons, smoke mode, copies.

Every notebook starts with::

    from dqo_tutorial import course
    course.require("0.1.0")        # prints the versions in use, fails if the package is too old

and compares each quantity it derives by hand with the package kernel::

    course.check_close("λ-return", ours, dqo.kernels.lambda_return(...))

==============================  ==============================================================
name                            what it does
==============================  ==============================================================
``require(minimum)``            print python / torch / transformers / dqo_tutorial versions;
                                ``RuntimeError`` if ``dqo_tutorial.__version__ < minimum``;
                                the libraries' progress bars and warnings off
``check_close(name, a, b)``     ✓ with the largest difference, or ``AssertionError`` naming the
                                worst entry (shapes must agree)
``is_smoke()``                  True when the environment variable ``DQO_SMOKE`` is set to a
                                true value (``1``, ``true``, ``yes``)
``sized(full, smoke)``          ``smoke`` in smoke mode, else ``full``: smoke mode shrinks sizes
                                (samples, steps, lengths), never code paths
``make_student_copies(s, d)``   copy every notebook of ``s`` into ``d`` as a student gets it:
                                solution regions → ``raise NotImplementedError``, hidden tests
                                removed, written answers → "YOUR ANSWER HERE", outputs cleared;
                                a copy a student edited is never overwritten (``force=True``)
``nbgrader_metadata(nb, key)``  the nbgrader cell metadata the exercise convention implies
``make_nbgrader_course(s, r)``  an nbgrader course directory: ``r/source/<nbNN>/<notebook>``
                                and ``r/nbgrader_config.py``, ready for
                                ``nbgrader generate_assignment`` and ``nbgrader autograde``
==============================  ==============================================================

**The exercise convention** (nbgrader's markers; tests/test_nbgrader.py grades it for real):

- an *autograded exercise* is a solution cell — one ``def`` whose body sits between
  ``### BEGIN SOLUTION`` and ``### END SOLUTION`` — followed by its grade cell::

      verdict = exercises.check_name(name)        # prints ✓ / ✗ / not implemented yet
      ### BEGIN HIDDEN TESTS
      assert verdict.passed, verdict.message
      assert exercises.check_name(name, seed=7, quiet=True).passed
      ### END HIDDEN TESTS

  The visible line never raises, so a student copy runs top to bottom; the hidden lines are
  removed from student copies and restored by ``nbgrader autograde``, where a failing assert
  gives the cell 0 points.
- an *exercise without a checker* is a markdown prompt followed by a markdown answer cell
  whose first line starts with ``**Answer.**``: the model answer, graded by hand.

The notebooks ship the nbgrader metadata (``metadata.nbgrader``) that this convention implies
(:func:`nbgrader_metadata`; a test keeps them in step), so ``nbgrader generate_assignment``
needs no hand edits. Any other cell must not contain nbgrader's marker words (nbgrader looks
for them anywhere in a line).
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError, MissingDataError
from .quiet import quiet_libraries

__all__ = [
    "SMOKE_ENV",
    "BEGIN_SOLUTION",
    "END_SOLUTION",
    "require",
    "versions",
    "check_close",
    "is_smoke",
    "sized",
    "strip_solutions",
    "strip_hidden_tests",
    "is_answer_cell",
    "student_copy",
    "make_student_copies",
    "nbgrader_metadata",
    "apply_nbgrader_metadata",
    "mark_notebooks",
    "notebook_key",
    "make_nbgrader_course",
]

SMOKE_ENV = "DQO_SMOKE"
BEGIN_SOLUTION = "### BEGIN SOLUTION"
END_SOLUTION = "### END SOLUTION"
BEGIN_HIDDEN_TESTS = "### BEGIN HIDDEN TESTS"
END_HIDDEN_TESTS = "### END HIDDEN TESTS"
ANSWER_HEADING = "**Answer.**"
ANSWER_STUB = "YOUR ANSWER HERE"  # nbgrader's text stub
POINTS = {"check": 1, "answer": 1}  # points of a grade cell and of a written answer

T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# set-up check
# --------------------------------------------------------------------------------------------


def _older(have: str, minimum: str) -> bool:
    """True when ``have`` is older than ``minimum`` (PEP 440 order: 0.2.0rc1 < 0.2.0)."""
    from packaging.version import Version

    return Version(have) < Version(minimum)


def versions() -> dict[str, str]:
    """Versions in use: python, torch, transformers, dqo_tutorial (and the smoke mode)."""
    import torch
    import transformers

    import dqo_tutorial

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "dqo_tutorial": dqo_tutorial.__version__,
        "smoke mode": "on" if is_smoke() else "off",
    }


def require(minimum: str) -> None:
    """Print the versions in use and fail clearly when ``dqo_tutorial`` is older than ``minimum``.

    Returns None (so a notebook cell shows only the printed table; :func:`versions` gives the
    dict). Raises ``RuntimeError`` naming both versions and the fix. Every notebook calls it
    first, so it also turns the libraries' progress bars and warnings off (frozen "Loading
    weights 0%" widgets on a rendered page) unless the environment sets ``DQO_VERBOSE=1``.
    """
    if os.environ.get("DQO_VERBOSE", "").lower() not in ("1", "true", "yes"):
        quiet_libraries()
    found = versions()
    width = max(len(k) for k in found)
    for name, version in found.items():
        print(f"{name:<{width}}  {version}")
    have = found["dqo_tutorial"]
    if _older(have, minimum):
        raise RuntimeError(
            f"this notebook needs dqo_tutorial >= {minimum}, but version {have} is installed.\n"
            "Update it from the repository root: `make setup` (or `pip install -e .`), then "
            "restart the kernel."
        )


# --------------------------------------------------------------------------------------------
# comparisons
# --------------------------------------------------------------------------------------------


def check_close(
    name: str, ours: Any, reference: Any, *, atol: float = 1e-6, rtol: float = 1e-5
) -> None:
    """Compare a hand-derived quantity with the package's; print ✓ or raise ``AssertionError``.

    ``ours`` and ``reference`` are tensors, arrays, lists or numbers of the same shape; they are
    compared by the exercise checkers' own rule (:func:`dqo_tutorial.exercises.mismatch`):
    float64, ``|ours − reference| ≤ atol + rtol·|reference|``, equal infinities and NaN against
    NaN agree. Returns None, so that a notebook cell shows only the printed line.
    """
    import torch

    from .exercises import mismatch

    wrong = mismatch(ours, reference, atol, rtol, who="ours")
    if wrong is not None:
        raise AssertionError(f"✗ {name}: differs {wrong}")
    a = torch.as_tensor(ours).detach().to("cpu", torch.float64)
    b = torch.as_tensor(reference).detach().to("cpu", torch.float64)
    finite = torch.isfinite(a) & torch.isfinite(b)
    worst = float((a - b)[finite].abs().max()) if bool(finite.any()) else 0.0
    print(f"✓ {name}: matches, max |diff| = {worst:.2e} over {a.numel()} entries")


# --------------------------------------------------------------------------------------------
# smoke mode
# --------------------------------------------------------------------------------------------


def is_smoke() -> bool:
    """True when ``DQO_SMOKE`` is set to ``1``/``true``/``yes`` (read at every call)."""
    return os.environ.get(SMOKE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def sized(full: T, smoke: T) -> T:
    """``smoke`` when smoke mode is on, else ``full``. Only sizes change, never code paths."""
    return smoke if is_smoke() else full


# --------------------------------------------------------------------------------------------
# student copies
# --------------------------------------------------------------------------------------------


def _strip_region(source: str, begin: str, end: str, stub: list[str]) -> str:
    """Replace each ``begin`` … ``end`` region (markers included) by ``stub`` lines at the begin
    marker's indentation; raise ``ValueError`` on an unmatched or nested marker."""
    out: list[str] = []
    inside = False
    for line in source.split("\n"):
        stripped = line.strip()
        if stripped == begin:
            if inside:
                raise ValueError(f"nested {begin!r}")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            out.extend(f"{indent}{s}" for s in stub)
        elif stripped == end:
            if not inside:
                raise ValueError(f"{end!r} without {begin!r}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{begin!r} without {end!r}")
    return "\n".join(out)


def strip_solutions(source: str) -> str:
    """Replace each ``### BEGIN SOLUTION`` … ``### END SOLUTION`` region (markers included) by
    ``raise NotImplementedError`` at the BEGIN marker's indentation; code before and after stays.

    Raises ``ValueError`` on an unmatched or nested marker.
    """
    stub = ["# YOUR CODE HERE", "raise NotImplementedError"]
    return _strip_region(source, BEGIN_SOLUTION, END_SOLUTION, stub)


def strip_hidden_tests(source: str) -> str:
    """Remove each ``### BEGIN HIDDEN TESTS`` … ``### END HIDDEN TESTS`` region, markers included
    (what nbgrader's release version does; ``nbgrader autograde`` puts them back)."""
    return _strip_region(source, BEGIN_HIDDEN_TESTS, END_HIDDEN_TESTS, []).rstrip("\n")


def is_answer_cell(cell: Any) -> bool:
    """A written answer: a markdown cell whose first line starts with ``**Answer.**``."""
    return cell.cell_type == "markdown" and cell.source.lstrip().startswith(ANSWER_HEADING)


def student_copy(nb: Any) -> Any:
    """The student's version of notebook ``nb`` (a copy; ``nb`` is not modified): solution regions
    blanked, hidden tests removed, written answers replaced by "YOUR ANSWER HERE", outputs and
    execution counts cleared. The nbgrader metadata stays, as in nbgrader's release version."""
    import copy

    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if is_answer_cell(cell):
            cell.source = ANSWER_STUB
        elif cell.cell_type == "code":
            cell.source = strip_hidden_tests(strip_solutions(cell.source))
            cell.outputs = []
            cell.execution_count = None
    return nb


def make_student_copies(
    src_dir: str | os.PathLike[str], dst_dir: str | os.PathLike[str], *, force: bool = False
) -> list[Path]:
    """Write a student copy (:func:`student_copy`) of every ``*.ipynb`` in ``src_dir`` into
    ``dst_dir`` (same names). The source notebooks are not modified. Returns the list of written
    paths, sorted.

    A copy already in ``dst_dir`` that differs from both the fresh blank copy and the blank copy
    written there before (``.student-copies.json`` keeps its hash) holds a student's work: it is
    never overwritten — the call refuses, naming them — unless ``force``."""
    import nbformat

    src, dst = Path(src_dir), Path(dst_dir)
    if src.resolve() == dst.resolve():
        raise ConfigError("dst_dir must differ from src_dir (the solutions would be lost)")
    notebooks = sorted(src.glob("*.ipynb"))
    if not notebooks:
        raise MissingDataError(f"no notebooks (*.ipynb) in {src}")
    fresh = {}
    for path in notebooks:
        text = nbformat.writes(student_copy(nbformat.read(path, as_version=4)))
        fresh[path.name] = text if text.endswith("\n") else text + "\n"
    record = dst / ".student-copies.json"
    written_before = json.loads(record.read_text()) if record.is_file() else {}
    edited = [
        name
        for name, text in fresh.items()
        if (dst / name).is_file()
        and _sha((dst / name).read_text()) not in (_sha(text), written_before.get(name))
    ]
    if edited and not force:
        raise ConfigError(
            f"{dst} holds edited notebooks (a student's work?): {', '.join(edited)}; copy them "
            "away, write the copies into another folder, or rerun with --force to overwrite them"
        )
    dst.mkdir(parents=True, exist_ok=True)
    for name, text in fresh.items():
        (dst / name).write_text(text)
    record.write_text(json.dumps({**written_before, **{n: _sha(t) for n, t in fresh.items()}}))
    return [dst / name for name in fresh]


def _sha(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# nbgrader
# --------------------------------------------------------------------------------------------


def _cell_meta(grade_id: str, *, solution: bool, grade: bool, points: int = 0) -> dict:
    meta = {"grade": grade, "grade_id": grade_id, "locked": not solution}
    if grade:
        meta["points"] = points
    meta.update({"schema_version": 3, "solution": solution, "task": False})
    return meta


def _exercise_number(markdown: str) -> str:
    import re

    found = re.search(r"\*\*Exercise\s+([0-9]+\.[0-9]+)", markdown)
    if found is None:
        raise ValueError(
            f"an answer cell must follow its '**Exercise N.M' prompt: {markdown[:80]!r}"
        )
    return found.group(1)


def nbgrader_metadata(nb: Any, key: str) -> list[dict | None]:
    """The ``metadata.nbgrader`` of each cell of ``nb`` under the exercise convention (module
    docstring), None for a cell that carries none. ``key`` prefixes every ``grade_id`` (e.g.
    ``nb04``). A solution cell is ``{key}-{function}``, its grade cell ``{key}-{function}-check``
    (locked, ``POINTS["check"]`` points), a written answer ``{key}-answer-{N.M}``. Raises
    ``ValueError`` where the convention is broken (a solution cell not followed by its grade
    cell, a solution cell without one ``def``)."""
    import ast

    metas: list[dict | None] = [None] * len(nb.cells)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and BEGIN_SOLUTION in cell.source:
            defs = [n.name for n in ast.parse(cell.source).body if isinstance(n, ast.FunctionDef)]
            if len(defs) != 1:
                raise ValueError(f"cell {i}: a solution cell defines exactly one function")
            nxt = nb.cells[i + 1] if i + 1 < len(nb.cells) else None
            if nxt is None or nxt.cell_type != "code" or "exercises.check_" not in nxt.source:
                raise ValueError(f"cell {i}: a solution cell is followed by its grade cell")
            metas[i] = _cell_meta(f"{key}-{defs[0]}", solution=True, grade=False)
            check_id = f"{key}-{defs[0]}-check"
            metas[i + 1] = _cell_meta(check_id, solution=False, grade=True, points=POINTS["check"])
        elif is_answer_cell(cell):
            number = _exercise_number(nb.cells[i - 1].source if i else "")
            answer_id = f"{key}-answer-{number.replace('.', '-')}"
            metas[i] = _cell_meta(answer_id, solution=True, grade=True, points=POINTS["answer"])
    return metas


def apply_nbgrader_metadata(nb: Any, key: str) -> bool:
    """Set every cell's ``metadata.nbgrader`` to :func:`nbgrader_metadata` (removing it where
    there is none); True when something changed."""
    changed = False
    for cell, meta in zip(nb.cells, nbgrader_metadata(nb, key)):
        if cell.metadata.get("nbgrader") != meta:
            changed = True
            if meta is None:
                cell.metadata.pop("nbgrader", None)
            else:
                cell.metadata["nbgrader"] = meta
    return changed


def notebook_key(path: str | os.PathLike[str]) -> str:
    """``nb04`` for ``04_soft_bellman_and_dqo.ipynb``: the assignment name and grade-id prefix."""
    return f"nb{Path(path).name[:2]}"


NBGRADER_CONFIG = """\
# nbgrader configuration of the dqo-tutorial course (written by dqo_tutorial.course).
import os

c = get_config()  # noqa: F821 (nbgrader provides it)
c.CourseDirectory.course_id = "dqo-tutorial"
# The autograder runs each notebook in smoke mode (sizes shrink, code paths stay): grading is
# about the exercises, and the training notebooks (08, 09) then run in about a minute. The
# kernel inherits this environment. Set DQO_SMOKE=0 before `nbgrader autograde` to grade at
# full size, and raise the per-cell timeout below to 1800 s for it.
os.environ.setdefault("DQO_SMOKE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
c.Execute.timeout = {timeout}  # seconds per cell (nbgrader's default, 30 s, is too short)
"""


def make_nbgrader_course(
    src_dir: str | os.PathLike[str],
    root: str | os.PathLike[str],
    notebooks: list[str] | None = None,
    *,
    timeout: int = 600,
) -> list[Path]:
    """Lay out an nbgrader course directory: ``root/nbgrader_config.py`` and, for each numbered
    notebook of ``src_dir`` (or only the ``notebooks`` named), ``root/source/nbNN/<name>`` — one
    assignment per notebook. Then, from ``root``: ``nbgrader generate_assignment nbNN``,
    collect submissions into ``submitted/<student>/nbNN/``, ``nbgrader autograde nbNN``.
    Returns the notebooks written."""
    src, root = Path(src_dir), Path(root)
    names = notebooks or sorted(p.name for p in src.glob("[0-9][0-9]_*.ipynb"))
    missing = [n for n in names if not (src / n).is_file()]
    if missing:
        raise MissingDataError(f"no notebook {missing[0]} in {src} (names as in notebooks/)")
    root.mkdir(parents=True, exist_ok=True)
    (root / "nbgrader_config.py").write_text(NBGRADER_CONFIG.format(timeout=int(timeout)))
    written = []
    for name in names:
        folder = root / "source" / notebook_key(name)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes((src / name).read_bytes())
        written.append(folder / name)
    return written


def mark_notebooks(paths: list[str | os.PathLike[str]]) -> list[Path]:
    """Write the convention's nbgrader metadata into each notebook of ``paths``; return those
    that changed. From the repository root: ``python -m dqo_tutorial.course notebooks/*.ipynb``."""
    import nbformat

    changed = []
    for path in map(Path, paths):
        nb = nbformat.read(path, as_version=4)
        if apply_nbgrader_metadata(nb, notebook_key(path)):
            nbformat.write(nb, path)
            changed.append(path)
    return changed


if __name__ == "__main__":
    import sys

    for p in mark_notebooks(sys.argv[1:]):
        print(f"nbgrader metadata updated: {p}")
