"""The real command line, run as users run it (subprocess) on a tiny model saved to disk."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dqo_tutorial import cli
from dqo_tutorial.errors import ConfigError
from dqo_tutorial.evaluate import EvalConfig
from dqo_tutorial.sampling import SamplingConfig

FIXTURE = str(Path(__file__).parent / "fixtures" / "gsm8k")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dqo_tutorial.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_sample_then_eval_end_to_end(tmp_path, tiny_model_dir):
    data = tmp_path / "data"
    common = [
        "--model",
        str(tiny_model_dir),
        "--data-source",
        FIXTURE,
        "--limit",
        "2",
        "--max-new-tokens",
        "6",
        "--batch-size",
        "4",
    ]
    res = run_cli("sample", "--out", str(data), "--num-samples", "2", "--split", "train", *common)
    assert res.returncode == 0, res.stderr
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["counts"] == {"prompts": 2, "samples": 4, "shards": 1}
    assert json.loads(res.stdout)["summary"]["num_samples"] == 4

    res = run_cli("eval", "--out", str(tmp_path / "eval"), "--num-samples", "1", *common)
    assert res.returncode == 0, res.stderr
    assert "greedy" in res.stdout and "sampling" in res.stdout
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["data"]["num_problems"] == 2


def test_config_file_and_flags(tmp_path):
    conf = tmp_path / "eval.yaml"
    conf.write_text("limit: 7\ntemperature: 0.5\n")
    args = cli.build_parser().parse_args(
        [
            "eval",
            "--out",
            "x",
            "--config",
            str(conf),
            "--temperature",
            "0.9",
            "--no-greedy",
            "--num-samples",
            "3",
            "--data-source",
            "none",
        ]
    )
    cfg = cli.config_from_args(EvalConfig, args)
    assert (cfg.limit, cfg.temperature, cfg.greedy, cfg.num_samples) == (7, 0.9, False, 3)
    assert cfg.data_source is None


def test_bad_config_names_the_field(tmp_path):
    conf = tmp_path / "bad.yaml"
    conf.write_text("num_sampels: 8\n")
    args = cli.build_parser().parse_args(["sample", "--out", "x", "--config", str(conf)])
    with pytest.raises(ConfigError, match="num_sampels"):
        cli.config_from_args(SamplingConfig, args)
    args = cli.build_parser().parse_args(["sample", "--out", "x", "--top-p", "1.5"])
    with pytest.raises(ConfigError, match="SamplingConfig.top_p"):
        cli.config_from_args(SamplingConfig, args)


def test_bad_flag_value_is_rejected_by_argparse():
    res = run_cli("eval", "--out", "x", "--limit", "ten")
    assert res.returncode == 2 and "--limit" in res.stderr


def test_every_config_field_explains_itself_in_help():
    """One source: the dataclass field carries its help and default; --help prints both."""
    import dataclasses

    from dqo_tutorial.configs import TrainConfig

    for cls, command in ((SamplingConfig, "sample"), (TrainConfig, "train"), (EvalConfig, "eval")):
        parser = cli.build_parser()
        sub = parser._subparsers._group_actions[0].choices[command]
        text = "".join(sub.format_help().split())  # (argparse wraps lines, also at hyphens)
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"
            assert "".join(f.metadata["help"].split()) in text, f.name
