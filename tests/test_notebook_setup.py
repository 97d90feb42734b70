"""Starting the course: the notebooks' guarded import and ``make lab`` as root (issue 15, item 8).

A kernel without ``dqo_tutorial`` (one outside the project's ``.venv``) gets one clear hint that
names ``make lab`` instead of a bare ``ModuleNotFoundError``; ``make lab`` passes ``--allow-root``
when run as root (containers, hosted notebooks), since JupyterLab refuses root without it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
IDS = [p.stem for p in NOTEBOOKS]

# Prepended to a notebook's first cell: dqo_tutorial becomes unimportable, as in a foreign kernel.
BLOCK_PACKAGE = """\
import sys

class _NoDqo:
    def find_spec(self, name, path=None, target=None):
        if name == "dqo_tutorial" or name.startswith("dqo_tutorial."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NoDqo())
"""


def _cells(path: Path, kind: str) -> list[str]:
    nb = json.loads(path.read_text(encoding="utf-8"))
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == kind]


def _first_code(path: Path) -> str:
    return _cells(path, "code")[0]


def test_the_course_notebooks_are_there():
    assert len(NOTEBOOKS) >= 11, [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_a_kernel_without_the_package_gets_a_hint(path, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-I", "-c", BLOCK_PACKAGE + _first_code(path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert lines, "no error at all"
    last = lines[-1]
    assert last.startswith("ModuleNotFoundError:"), proc.stderr
    assert "make lab" in last and "pip install -e ." in last, proc.stderr
    # one exception only: not chained to the original import error
    assert proc.stderr.count("Traceback (most recent call last)") == 1, proc.stderr
    assert "During handling" not in proc.stderr and "direct cause" not in proc.stderr


def test_all_notebooks_carry_the_same_guarded_import():
    firsts = {p.name: _first_code(p) for p in NOTEBOOKS}
    assert len(set(firsts.values())) == 1, "the notebooks' first code cells differ"
    src = next(iter(firsts.values()))
    assert "try:\n    import dqo_tutorial as dqo\n" in src
    assert "except ModuleNotFoundError" in src and "from None" in src
    assert "from dqo_tutorial import course, exercises" in src
    assert "course.require(" in src


def test_the_guarded_import_still_works_with_the_package(tmp_path):
    src = _first_code(NOTEBOOKS[0])
    proc = subprocess.run(
        [sys.executable, "-c", src],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "DQO_SMOKE": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "dqo_tutorial" in proc.stdout


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_the_notebook_says_how_to_start(path):
    assert "make lab" in _cells(path, "markdown")[0]


def _make_n_lab(env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        ["make", "-n", "lab"], cwd=ROOT, capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 0, proc.stderr
    lab = [ln for ln in proc.stdout.splitlines() if "jupyter lab" in ln]
    assert lab, proc.stdout
    return lab[-1]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_lab_allows_root_only_as_root():
    line = _make_n_lab()
    assert ("--allow-root" in line) == (os.geteuid() == 0), line


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("uid", ["0", "1000"])
def test_make_lab_follows_id(uid, tmp_path):
    """Both branches whoever runs the tests: a fake ``id`` on PATH reports the user."""
    fake = tmp_path / "id"
    fake.write_text(f"#!/bin/sh\necho {uid}\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}"}
    line = _make_n_lab(env)
    assert ("--allow-root" in line) == (uid == "0"), line
