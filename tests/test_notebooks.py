"""The course notebooks: committed clean, built to the course skeleton, student copies blanked.

Executing the notebooks is nbmake's job (``DQO_SMOKE=1 pytest --nbmake notebooks/``; the
``notebooks/conftest.py`` turns smoke mode on by default). These tests only read them.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from dqo_tutorial import course

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
CONCEPT_NOTEBOOKS = [p for p in NOTEBOOKS if not p.name.startswith("00_")]
IDS = [p.stem for p in NOTEBOOKS]


def _read(path: Path):
    return nbformat.read(path, as_version=4)


def _code(nb) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code"]


def test_the_first_part_of_the_course_is_there():
    names = [p.name[:2] for p in NOTEBOOKS]
    assert names[:6] == ["00", "01", "02", "03", "04", "05"], names


def test_the_whole_course_is_there():
    """Notebooks 00–10 of the course plan (course-design.md), one per number."""
    names = [p.name[:2] for p in NOTEBOOKS]
    assert names == [f"{i:02d}" for i in range(11)], names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_is_committed_clean(path):
    """No outputs, no execution counts, minimal metadata: diffs stay readable."""
    nb = _read(path)
    nbformat.validate(nb)
    dirty = [
        i
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and (c.outputs or c.execution_count is not None)
    ]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs; clear them before committing"
    extra = set(nb.metadata) - {"kernelspec", "language_info"}
    assert not extra, f"{path.name}: notebook metadata {sorted(extra)} should not be committed"
    for i, cell in enumerate(nb.cells):
        assert not cell.get("attachments"), f"{path.name}: cell {i} has attachments"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_first_cell_checks_the_versions(path):
    first = _read(path).cells[0]
    assert first.cell_type == "code"
    assert "import dqo_tutorial as dqo" in first.source
    assert "course.require(" in first.source


@pytest.mark.parametrize("path", CONCEPT_NOTEBOOKS, ids=[p.stem for p in CONCEPT_NOTEBOOKS])
def test_concept_notebook_follows_the_skeleton(path):
    nb = _read(path)
    text = "\n".join(c.source for c in nb.cells)
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "You should know" in markdown
    assert "course.check_close(" in text
    assert "## Summary" in markdown and "## Exercises" in markdown
    assert "What to see" in markdown  # every plot is read for the reader
    for src in _code(nb):
        if "plt.subplots" in src:
            assert "set_xlabel" in src and "set_ylabel" in src, "plots need labelled axes"
    solutions = [s for s in _code(nb) if course.BEGIN_SOLUTION in s]
    assert len(solutions) >= 2, f"{path.name}: needs at least two exercises"
    for s in solutions:
        assert s.count(course.BEGIN_SOLUTION) == s.count(course.END_SOLUTION) == 1


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebooks_do_not_copy_kernels(path):
    """Notebooks derive by hand and check against the package; they never import private code."""
    for src in _code(_read(path)):
        assert "dqo_tutorial.kernels._" not in src and "kernels._" not in src


def test_make_student_copies_blanks_solutions_and_keeps_the_rest(tmp_path):
    written = course.make_student_copies(NOTEBOOK_DIR, tmp_path)
    assert [p.name for p in written] == [p.name for p in sorted(NOTEBOOK_DIR.glob("*.ipynb"))]
    for src_path, dst_path in zip(sorted(NOTEBOOK_DIR.glob("*.ipynb")), written):
        src, dst = _read(src_path), _read(dst_path)
        assert len(src.cells) == len(dst.cells)
        for a, b in zip(src.cells, dst.cells):
            assert a.metadata == b.metadata  # the nbgrader metadata travels, as in a release
            if course.is_answer_cell(a):
                assert b.source == course.ANSWER_STUB
                continue
            if a.cell_type == "code" and course.BEGIN_HIDDEN_TESTS in a.source:
                visible = a.source.split(course.BEGIN_HIDDEN_TESTS)[0].rstrip("\n")
                assert b.source == visible and "assert" not in b.source
                continue
            if a.cell_type != "code" or course.BEGIN_SOLUTION not in a.source:
                assert a.source == b.source
                continue
            assert course.BEGIN_SOLUTION not in b.source and course.END_SOLUTION not in b.source
            assert "raise NotImplementedError" in b.source
            head = a.source.split(course.BEGIN_SOLUTION)[0].rstrip(" ")
            tail = a.source.split(course.END_SOLUTION)[1]
            assert b.source.startswith(head) and b.source.endswith(tail)
            compile(b.source, dst_path.name, "exec")  # still valid Python


def test_strip_solutions_keeps_indentation_and_rejects_bad_markers():
    src = "def f(x):\n    y = 1\n    ### BEGIN SOLUTION\n    return x + y\n    ### END SOLUTION\n"
    out = course.strip_solutions(src)
    assert out == "def f(x):\n    y = 1\n    # YOUR CODE HERE\n    raise NotImplementedError\n"
    with pytest.raises(ValueError):
        course.strip_solutions("### BEGIN SOLUTION\nx = 1\n")
    with pytest.raises(ValueError):
        course.strip_solutions("x = 1\n### END SOLUTION\n")


def test_strip_hidden_tests_removes_the_region_only():
    src = "v = check(f)\n### BEGIN HIDDEN TESTS\nassert v.passed\n### END HIDDEN TESTS"
    assert course.strip_hidden_tests(src) == "v = check(f)"
    with pytest.raises(ValueError):
        course.strip_hidden_tests("### BEGIN HIDDEN TESTS\nassert x\n")


MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_nbgrader_metadata_follows_the_exercise_convention(path):
    """The shipped metadata is what the convention implies (so `nbgrader generate_assignment`
    needs no hand edits): `python -m dqo_tutorial.course notebooks/*.ipynb` rewrites it."""
    nb = _read(path)
    assert not course.apply_nbgrader_metadata(nb, course.notebook_key(path)), (
        f"{path.name}: nbgrader metadata out of date; run "
        "`python -m dqo_tutorial.course notebooks/*.ipynb`"
    )
    ids = [c.metadata["nbgrader"]["grade_id"] for c in nb.cells if "nbgrader" in c.metadata]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_nbgrader_markers_only_where_nbgrader_expects_them(path):
    """nbgrader refuses a notebook where a marker word appears in any other cell (it looks for
    the words anywhere in a line, prose included); hidden tests sit in grade cells only."""
    for i, cell in enumerate(_read(path).cells):
        meta = cell.metadata.get("nbgrader", {})
        for marker in MARKERS:
            if marker in cell.source:
                allowed = meta.get("solution") if "SOLUTION" in marker else meta.get("grade")
                assert allowed and cell.cell_type == "code", f"{path.name} cell {i}: {marker}"


@pytest.mark.parametrize("path", CONCEPT_NOTEBOOKS, ids=[p.stem for p in CONCEPT_NOTEBOOKS])
def test_every_exercise_is_graded_or_answered(path):
    """An autograded exercise has hidden tests; a question without a checker has its answer."""
    cells = _read(path).cells
    for i, cell in enumerate(cells):
        if cell.cell_type == "code" and "verdict = exercises.check_" in cell.source:
            assert course.BEGIN_HIDDEN_TESTS in cell.source, f"{path.name} cell {i}"
            assert "assert verdict.passed" in cell.source, f"{path.name} cell {i}"
        if cell.cell_type == "markdown" and "(no checker)" in cell.source:
            nxt = cells[i + 1] if i + 1 < len(cells) else None
            assert nxt is not None and course.is_answer_cell(nxt), f"{path.name} cell {i}"


def test_nbgrader_course_command_lays_out_the_course(tmp_path, capsys):
    from dqo_tutorial.cli import main

    name = "02_soft_optimal_q.ipynb"
    assert main(["nbgrader-course", str(NOTEBOOK_DIR), str(tmp_path), "--only", name]) == 0
    assert "1 assignments (nb02)" in capsys.readouterr().out
    assert (tmp_path / "source" / "nb02" / name).read_bytes() == (NOTEBOOK_DIR / name).read_bytes()
    config = (tmp_path / "nbgrader_config.py").read_text()
    assert "c.Execute.timeout = 600" in config and 'setdefault("DQO_SMOKE", "1")' in config
    with pytest.raises(FileNotFoundError, match="no notebook 99_x.ipynb"):
        course.make_nbgrader_course(NOTEBOOK_DIR, tmp_path, ["99_x.ipynb"])


def test_make_student_copies_refuses_to_overwrite_the_source():
    with pytest.raises(ValueError):
        course.make_student_copies(NOTEBOOK_DIR, NOTEBOOK_DIR)


def test_student_copies_command(tmp_path, capsys):
    from dqo_tutorial.cli import main

    assert main(["student-copies", str(NOTEBOOK_DIR), str(tmp_path / "student")]) == 0
    assert "student copies" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "student").glob("*.ipynb"))


@pytest.mark.slow
def test_a_student_copy_runs_top_to_bottom_in_smoke_mode(tmp_path, monkeypatch):
    """Blanked exercises must not stop a notebook: each checker reports "not implemented yet"."""
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv(course.SMOKE_ENV, "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    src = tmp_path / "src"
    src.mkdir()
    name = "02_soft_optimal_q.ipynb"  # the fastest notebook with exercises (a few seconds)
    (src / name).write_bytes((NOTEBOOK_DIR / name).read_bytes())
    (path,) = course.make_student_copies(src, tmp_path / "student")
    nb = _read(path)
    nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    printed = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
    )
    assert printed.count("not implemented yet") == 2, printed[-2000:]


_QUIET_VARS = ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS",
               "TRANSFORMERS_VERBOSITY", "DATASETS_VERBOSITY")  # fmt: skip


@pytest.mark.slow
def test_an_executed_notebook_shows_no_library_bar_and_leaves_no_temp_folder(tmp_path, monkeypatch):
    """The rendered course showed frozen "Loading weights 0%" and "Saving the dataset (0/1
    shards)" widgets (notebook 10: five), and notebook 10 left a dqo-10-* folder each run."""
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv(course.SMOKE_ENV, "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))  # the kernel's tempfile folder
    for name in _QUIET_VARS:  # the notebook must quiet the libraries itself
        monkeypatch.delenv(name, raising=False)
    nb = _read(NOTEBOOK_DIR / "10_q_value_explorer.ipynb")
    nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    widgets = [o["data"]["text/plain"] for o in outputs
               if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]  # fmt: skip
    assert [w for w in widgets if not w.startswith("VBox(")] == []  # the explorer only
    shown = json.dumps(outputs)
    for words in ("Loading weights", "Saving the dataset", "Map:", "%|"):
        assert words not in shown, words
    assert not list((tmp_path / "tmp").glob("dqo-10-*"))
