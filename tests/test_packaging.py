"""Packaging: environment.yml mirrors pyproject.toml; .ci/run runs the README's test command."""

from __future__ import annotations

import re

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_TO_PYPI = {"pytorch": "torch"}


def _split(spec: str) -> tuple[str, str]:
    name, bound = re.match(r"^([A-Za-z0-9_.\-]+)\s*(.*)$", spec.strip()).groups()
    return CONDA_TO_PYPI.get(name.lower(), name.lower()), bound.replace(" ", "")


def test_environment_yml_names_the_same_dependencies_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pyproject = dict(_split(s) for s in project["dependencies"])
    pyproject |= dict(_split(s) for s in project["optional-dependencies"]["dev"])

    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda: dict[str, str] = {}
    for item in env["dependencies"]:
        specs = item["pip"] if isinstance(item, dict) else [item]
        for spec in specs:
            if spec.startswith("-e") or spec.split(">")[0] in ("python", "pip"):
                continue
            name, bound = _split(spec)
            conda[name] = bound
    assert conda == pyproject


def test_no_exact_pins_in_the_package():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for spec in project["dependencies"] + project["optional-dependencies"]["dev"]:
        assert "==" not in spec and ">=" in spec, spec


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci_cmds = [
        ln.strip()
        for ln in (ROOT / ".ci" / "run").read_text().splitlines()
        if ln.strip() and not ln.startswith("#") and not ln.startswith(("set ", "cd "))
    ]
    assert ci_cmds == ["make test"]
    assert "make test" in readme and "make run" in readme


def test_every_extra_we_ask_for_is_spelled_as_its_package_declares_it():
    """`math-verify[antlr4_13_2]` made pip warn: 0.9 declares `antlr4-13-2`."""
    from importlib.metadata import PackageNotFoundError, metadata

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for spec in project["dependencies"] + project["optional-dependencies"]["dev"]:
        found = re.match(r"^([A-Za-z0-9_.\-]+)\[([^\]]+)\]", spec)
        if not found:
            continue
        try:
            declared = set(metadata(found.group(1)).get_all("Provides-Extra") or [])
        except PackageNotFoundError:
            continue  # not installed here: nothing to compare with
        for extra in found.group(2).split(","):
            assert extra.strip() in declared, (spec, sorted(declared))
