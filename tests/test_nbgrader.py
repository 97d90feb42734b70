"""The course graded as an instructor grades it: real nbgrader (0.9.6), no hand edits.

For two notebooks: ``course.make_nbgrader_course`` lays out the course, ``nbgrader
generate_assignment`` makes the release (solutions and hidden tests gone), four students hand in
— the reference solution, the blank release, a wrong answer, a cheat that calls the package's
own function and rewrites the grade cell —, ``nbgrader autograde`` grades them, and the
gradebook's code scores are checked: full marks, 0, less than full, and no point for the cheated
exercise. Each submission is executed by nbgrader in smoke mode (the course's config sets it).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from dqo_tutorial import course

pytest.importorskip("nbgrader")

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
pytestmark = pytest.mark.slow

# per notebook: {grade_id of a solution cell: source} for the wrong and the cheating student;
# the cheat also rewrites a (locked) grade cell, which autograde must restore
SUBMISSIONS = {
    "02_soft_optimal_q.ipynb": {
        "wrong": {
            "nb02-policy_value": (  # forgets the KL term: the expected return, not V^π
                "def policy_value(mdp, pi, beta):\n"
                "    v = torch.zeros(mdp.n_states, dtype=torch.float64)\n"
                "    for s in reversed(range(mdp.n_states)):\n"
                "        nxt = mdp.next_state[s]\n"
                "        q = mdp.reward[s] + torch.where(nxt >= 0, v[nxt.clamp(min=0)], 0.0)\n"
                "        v[s] = (pi[s] * q).sum()\n"
                "    return v\n"
            ),
        },
        "cheat": {
            "nb02-solve_values": (
                "def solve_values(mdp, beta):\n    return tabular.solve(mdp, beta).v\n"
            ),
            "nb02-solve_values-check": "verdict = None  # the student 'passes' the check\n",
        },
        "cheated": "nb02-solve_values-check",
    },
    "01_generation_as_mdp.ipynb": {
        "wrong": {
            "nb01-outcome_rewards": (  # R in the row's last column: wrong for right padding
                "def outcome_rewards(mask, outcome):\n"
                "    out = torch.zeros(mask.shape, dtype=outcome.dtype)\n"
                "    out[:, -1] = outcome\n"
                "    return out\n"
            ),
        },
        "cheat": {
            "nb01-sequence_logprob": (
                "from dqo_tutorial.kernels import masked_sum as my_sum\n\n\n"
                "def sequence_logprob(token_logps, mask):\n"
                "    return my_sum(token_logps, mask, dim=1)\n"
            ),
            "nb01-sequence_logprob-check": "verdict = None\n",
        },
        "cheated": "nb01-sequence_logprob-check",
    },
}


def _nbgrader(root: Path, *args: str) -> subprocess.CompletedProcess:
    # nbgrader runs its database migrations through the `alembic` script of its environment
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "PATH": path, "DQO_SMOKE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "nbgrader", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _grade_id(cell) -> str | None:
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def _hand_in(root: Path, key: str, name: str, student: str, replace: dict[str, str]) -> None:
    nb = nbformat.read(root / "release" / key / name, as_version=4)
    for cell in nb.cells:
        if _grade_id(cell) in replace:
            cell.source = replace[_grade_id(cell)]
    out = root / "submitted" / student / key / name
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out)


def _reference_answers(source: Path) -> dict[str, str]:
    """The solution cells of the instructor's notebook with the markers taken out."""
    nb = nbformat.read(source, as_version=4)
    markers = (course.BEGIN_SOLUTION, course.END_SOLUTION)
    return {
        _grade_id(c): "\n".join(
            line for line in c.source.split("\n") if line.strip() not in markers
        )
        for c in nb.cells
        if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution")
    }


def _scores(root: Path, key: str, name: str, students: list[str]) -> dict[str, tuple]:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        out = {}
        for student in students:
            sub = gb.find_submission_notebook(Path(name).stem, key, student)
            per_cell = {g.name: g.score for g in sub.grades if g.auto_score is not None}
            out[student] = (sub.code_score, sub.max_code_score, per_cell)
        return out


@pytest.mark.parametrize("name", sorted(SUBMISSIONS))
def test_nbgrader_grades_reference_blank_wrong_and_cheat(name, tmp_path):
    root = tmp_path / "course"
    course.make_nbgrader_course(NOTEBOOK_DIR, root, [name])
    key = course.notebook_key(name)
    _nbgrader(root, "generate_assignment", key)

    release = (root / "release" / key / name).read_text()
    for marker in (course.BEGIN_SOLUTION, course.BEGIN_HIDDEN_TESTS, "assert verdict.passed"):
        assert marker not in release

    plan = SUBMISSIONS[name]
    _hand_in(root, key, name, "reference", _reference_answers(NOTEBOOK_DIR / name))
    _hand_in(root, key, name, "blank", {})
    _hand_in(root, key, name, "wrong", {**_reference_answers(NOTEBOOK_DIR / name), **plan["wrong"]})
    _hand_in(root, key, name, "cheat", {**_reference_answers(NOTEBOOK_DIR / name), **plan["cheat"]})
    _nbgrader(root, "autograde", key)

    scores = _scores(root, key, name, ["reference", "blank", "wrong", "cheat"])
    print(name, {s: v[:2] for s, v in scores.items()})  # shown with -s: the closing note's figures
    full = scores["reference"][1]
    assert full >= 2
    assert scores["reference"][0] == full
    assert scores["blank"][0] == 0
    assert 0 < scores["wrong"][0] < full
    assert scores["cheat"][0] < full and scores["cheat"][2][plan["cheated"]] == 0
