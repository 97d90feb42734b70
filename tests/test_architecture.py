"""The package's layering is a contract (pyproject's [tool.importlinter]), checked on every run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter is not installed")


def _lint(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT), "--config", str(config), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_package_keeps_its_import_contracts():
    res = _lint(ROOT / "pyproject.toml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert re.search(r"Contracts: 3 kept, 0 broken", res.stdout), res.stdout


def test_the_contract_can_fail(tmp_path):
    """Turn the layers upside down: the same checker must then report the contract broken."""
    text = (ROOT / "pyproject.toml").read_text()
    layers = re.search(r'layers = \[\n(.*?)\n\]', text, re.S)
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
    modules = {p.stem for p in (ROOT / "dqo_tutorial").glob("*.py")} - {"__init__"}
    assert modules == named, (sorted(modules - named), sorted(named - modules))
