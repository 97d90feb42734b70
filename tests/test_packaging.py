"""Packaging: environment.yml mirrors pyproject.toml, requirements/lock-cpu.txt pins both inside
their ranges, the Makefile installs through it; .ci/run runs the README's test command."""

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


LOCK = ROOT / "requirements" / "lock-cpu.txt"


def _lock_pins() -> dict[str, str]:
    """``name: version`` of every ``name==version`` line of the lock (names normalised)."""
    from packaging.utils import canonicalize_name

    pins = {}
    for line in LOCK.read_text().splitlines():
        found = re.match(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==(\S+)", line)
        if found:
            pins[canonicalize_name(found.group(1))] = found.group(2)
    return pins


def test_the_lock_pins_every_dependency_inside_pyprojects_range():
    """`make run` / `make test` install through requirements/lock-cpu.txt (`make lock`): each
    dependency of pyproject (and its dev extra) is pinned there, at a version its range
    accepts, and environment.yml names no package the lock lacks."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = _lock_pins()
    for spec in project["dependencies"] + project["optional-dependencies"]["dev"]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in pins, f"{spec}: not pinned in {LOCK.name}"
        assert req.specifier.contains(Version(pins[name]), prereleases=True), (spec, pins[name])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    for item in env["dependencies"]:
        for spec in item["pip"] if isinstance(item, dict) else [item]:
            name = _split(spec)[0]
            if not spec.startswith("-e") and name not in ("python", "pip"):
                assert canonicalize_name(name) in pins, f"environment.yml: {spec} not in the lock"


def test_the_makefile_installs_through_the_lock_with_its_torch():
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("$(VENV)/.installed:")[1].split("\n\n")[0]
    assert "requirements/lock-cpu.txt" in recipe.splitlines()[0]  # a new lock reinstalls
    assert re.search(r"pip install .*-c \S*constraints", recipe), recipe
    assert re.search(r"^lock:", makefile, re.M) and "uv pip compile" in makefile
    # the CPU torch the Makefile installs first is the lock's (the local build label aside)
    cpu_torch = re.search(r"^TORCH_SPEC \?= .*,torch==([^)]+)\)$", makefile, re.M).group(1)
    assert _lock_pins()["torch"].split("+")[0] == cpu_torch
