"""The package's layering is a contract (pyproject's [tool.importlinter]), checked on every run;
and every function fits on a screen."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")

needs_linter = pytest.mark.skipif(not LINT.exists(), reason="import-linter is not installed")
MAX_FUNCTION_LINES = 120
"""The longest function the package may have (issue 16: no unit you cannot read on one screen)."""


def _lint(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT), "--config", str(config), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@needs_linter
def test_the_package_keeps_its_import_contracts():
    res = _lint(ROOT / "pyproject.toml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert re.search(r"Contracts: 4 kept, 0 broken", res.stdout), res.stdout


@needs_linter
def test_the_contract_can_fail(tmp_path):
    """Turn the layers upside down: the same checker must then report the contract broken."""
    text = (ROOT / "pyproject.toml").read_text()
    layers = re.search(r"layers = \[\n(.*?)\n\]", text, re.S)
    flipped = "\n".join(reversed(layers.group(1).splitlines()))
    broken = text.replace(layers.group(1), flipped)
    config = tmp_path / "pyproject.toml"
    config.write_text(broken)
    res = _lint(config)
    assert res.returncode != 0 and "BROKEN" in res.stdout, res.stdout


def test_every_module_of_the_package_has_a_layer():
    """A module missing from the layers contract would escape it: each one is named."""
    text = (ROOT / "pyproject.toml").read_text()
    layers = re.search(r"layers = \[\n(.*?)\n\]", text, re.S).group(1)
    named = set(re.findall(r"dqo_tutorial\.(\w+)", layers))
    package = ROOT / "dqo_tutorial"
    modules = {p.stem for p in package.glob("*.py")} - {"__init__"}
    modules |= {p.parent.name for p in package.glob("*/__init__.py")}  # subpackages
    assert modules == named, (sorted(modules - named), sorted(named - modules))


def test_every_module_of_the_experiments_has_a_layer():
    """The same for the experiments subpackage's own layers (its ``containers`` contract)."""
    text = (ROOT / "pyproject.toml").read_text()
    inner = re.search(
        r'containers = \["dqo_tutorial\.experiments"\]\nlayers = \[\n(.*?)\n\]', text, re.S
    )
    named = set(re.findall(r"\w+", inner.group(1)))
    package = ROOT / "dqo_tutorial" / "experiments"
    assert {p.stem for p in package.glob("*.py")} - {"__init__"} == named


def _function_lengths(source: str) -> dict[str, int]:
    lengths = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lengths[f"{node.name}:{node.lineno}"] = node.end_lineno - node.lineno + 1
    return lengths


def test_no_function_is_longer_than_a_screen():
    long = {
        f"{path.name}:{name}": n
        for path in sorted((ROOT / "dqo_tutorial").rglob("*.py"))
        for name, n in _function_lengths(path.read_text()).items()
        if n > MAX_FUNCTION_LINES
    }
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_the_length_rule_sees_a_long_function():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES + 1))
    (n,) = _function_lengths(f"def f():\n{body}\n").values()
    assert n > MAX_FUNCTION_LINES
