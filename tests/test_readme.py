"""The README is a newcomer's page: short, no development history, its command list equal to
`dqo-tutorial --help`, its results table equal to the committed run, its CPU try-out the one
the configs ship, its links alive; the other docs speak of dates and commits, not sessions."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from dqo_tutorial.cli import build_parser
from dqo_tutorial.pipeline import load_config

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
HISTORY = re.compile(r"\bsession [0-9]+|this session|\bissue [0-9]+", re.IGNORECASE)


def _readme() -> str:
    return README.read_text()


def _section(title: str) -> str:
    text = _readme()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def _subcommands() -> set[str]:
    """The subcommands `dqo-tutorial --help` lists, read from the parser itself."""
    parser = build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(actions) == 1
    return set(actions[0].choices)


def test_the_command_list_is_the_one_of_dqo_tutorial_help():
    listed = re.findall(r"^- `dqo-tutorial ([a-z][a-z0-9-]*)`", _section("The command line"), re.M)
    assert len(listed) == len(set(listed)), listed
    assert set(listed) == _subcommands()


def test_the_readme_is_short_and_its_prose_lines_are_readable():
    lines = _readme().splitlines()
    assert len(lines) <= 160, len(lines)
    long = [n for n, line in enumerate(lines, 1) if len(line) > 200]
    assert not long, long


@pytest.mark.parametrize(
    "path", [README, *sorted((ROOT / "docs").glob("*.md"))], ids=lambda p: p.name
)
def test_no_page_speaks_of_sessions_or_issues(path):
    found = HISTORY.findall(path.read_text())
    assert not found, found


def test_the_two_commands_come_with_their_measured_times():
    section = _section("The two commands")
    for command in ("make run", "make test"):
        under = section[section.index(command) :].split("```")[1].strip().split("\n\n")[0]
        assert re.search(r"\d+ min", under), (command, under)  # the paragraph under its block


def test_the_results_table_is_the_committed_run():
    """Every accuracy of `make run`'s table in the README, rounded as shown, equals the one of
    docs/toy-run/results.json."""
    models = json.loads((ROOT / "docs" / "toy-run" / "results.json").read_text())["models"]
    names = {
        "π_ref": "reference",
        "SFT": "sft",
        "RFT": "rft",
        "DPO": "dpo",
        "DRO": "dro",
        "DQO": "dqo",
    }
    rows = re.findall(
        r"^\| (\S+)[^|]* \| ([\d.]+) % ± ([\d.]+) \| ([\d.]+) % ± ([\d.]+) \| (\S+) \|",
        _section("What `make run` prints"),
        re.M,
    )
    assert {names[r[0]] for r in rows} == set(models)
    for label, g, g_se, s, s_se, steps in rows:
        res = models[names[label]]
        shown = [float(x) for x in (g, g_se, s, s_se)]
        acc = res["accuracy"]
        exact = [acc["greedy"]["mean"], acc["greedy"]["stderr"]]
        exact += [acc["sampling"]["mean"], acc["sampling"]["stderr"]]
        for a, b in zip(shown, exact):
            assert abs(a - 100 * b) <= 0.05 + 1e-9, (label, shown, exact)
        assert steps == ("–" if res["train_steps"] is None else str(res["train_steps"]))


def test_the_gsm8k_cpu_try_out_is_the_one_the_configs_ship():
    """README and both GSM8K configs name the same try-out file, and its sizes are the README's."""
    text = " ".join(_readme().split())
    found = re.search(r"`(configs/[\w-]+\.yaml)`: (\d+) prompts × (\d+) samples, (\d+) new tokens,"
                      r" (\d+) steps per method, (\d+) test problems", text)  # fmt: skip
    assert found, "the README describes no CPU try-out"
    path, prompts, samples, tokens, steps, tests = found.groups()
    assert path in (ROOT / "configs" / "gsm8k-smollm2.yaml").read_text()
    assert path in (ROOT / path).read_text()  # its own header says how to run it
    cfg = load_config(ROOT / path)
    assert (cfg.sample["limit"], cfg.sample["num_samples"]) == (int(prompts), int(samples))
    assert cfg.sample["max_new_tokens"] == cfg.eval["max_new_tokens"] == int(tokens)
    assert cfg.eval["limit"] == int(tests)
    assert {cfg.train_config(m, "d").max_steps for m in cfg.methods} == {int(steps)}
    sft = cfg.train_config("sft", "d")  # SFT has one gold solution per prompt: one step fits
    assert sft.batch_size * sft.grad_accum <= cfg.sample["limit"]
    assert "--limit 8" not in (ROOT / "configs" / "gsm8k-smollm2.yaml").read_text()


def test_every_linked_page_exists():
    links = re.findall(r"\]\((docs/[^)#]+)\)", _readme())
    wanted = {
        "docs/architecture.md", "docs/dqo-method.md", "docs/toy-claims.md", "docs/gsm8k-gpu.md",
        "docs/implementation-notes.md", "docs/measurements.md",
    }  # fmt: skip
    assert wanted <= set(links)
    for link in links:
        assert (ROOT / link).exists(), link


def test_the_measurements_page_dates_every_figure_and_names_its_commit():
    text = (ROOT / "docs" / "measurements.md").read_text()
    rows = [r for r in text.splitlines() if re.match(r"^\| \d{4}-\d\d-\d\d \|", r)]
    assert rows and all(re.search(r"\b[0-9a-f]{7}\b", r) for r in rows)
    assert "2-core CPU box" in text
