"""Credit assignment across a study's seeds (dqo_tutorial.experiments.credit): the run folders it
reads, the paired contrasts, by hand."""

from __future__ import annotations

import json

import pytest

from dqo_tutorial.errors import DataError
from dqo_tutorial.experiments.credit import _accuracy_contrasts, contrast, study_runs


def _run(tmp, seed, folder, test=True):
    d = tmp / "runs" / f"seed-{seed}" / folder
    (d / "train" / "policy").mkdir(parents=True)
    if test:
        (d / "eval-test").mkdir()
    return d


def test_study_runs_tell_dqo_from_dqo_flat_critic_and_skip_tuning_runs(tmp_path):
    """'dqo-*' would also match 'dqo-flat-critic-*': the slug must be followed by the key; a
    tuning run (no eval-test) is not a test run; the reference is not a trained run."""
    runs = [{"variant": "DQO", "seed": 0, "method": "dqo"},
            {"variant": "DQO, flat critic", "seed": 0, "method": "dqo"},
            {"variant": "π_ref", "seed": 0, "method": "reference"}]  # fmt: skip
    (tmp_path / "results.json").write_text(json.dumps({"runs": runs}))
    dqo = _run(tmp_path, 0, "dqo-0123abcd")
    _run(tmp_path, 0, "dqo-99999999", test=False)  # a tuning trial at another budget
    flat = _run(tmp_path, 0, "dqo-flat-critic-fedcba98")
    assert study_runs(tmp_path) == {0: {"DQO": dqo / "train", "DQO, flat critic": flat / "train"}}
    _run(tmp_path, 0, "dqo-11111111")  # two test runs of one variant: refused
    with pytest.raises(DataError, match="2 trained test runs of 'DQO'"):
        study_runs(tmp_path)


def test_contrast_by_hand():
    """Two seeds × three items: per-seed mean differences 1/3 and −1/3 + ... by hand; the sign
    count follows the per-seed means."""
    a = [[1, 1, 0], [1, 0, 0]]
    b = [[0, 1, 0], [1, 1, 0]]
    c = contrast(a, b)
    assert c["per_seed"] == pytest.approx([1 / 3, -1 / 3])
    assert c["mean"] == pytest.approx(0.0)
    assert c["seeds_above_0"] == 1 and c["seeds_below_0"] == 1
    lo, hi = c["ci95"]
    assert lo < 0 < hi


def test_accuracy_contrasts_pair_the_seeds_both_variants_have():
    hits = lambda g, s: {"greedy": g, "sampling": s, "samples": 2}  # noqa: E731
    runs = [
        {"variant": "DQO, oracle critic", "seed": 0, "test": {"hits": hits("11", "21")}},
        {"variant": "DQO, flat critic", "seed": 0, "test": {"hits": hits("10", "11")}},
        {"variant": "DQO, oracle critic", "seed": 1, "test": {"hits": hits("01", "00")}},
        {"variant": "DQO", "seed": 0, "test": {"hits": hits("00", "00")}},
    ]
    got = _accuracy_contrasts({"runs": runs})
    one = got["DQO, oracle critic − DQO, flat critic"]
    assert one["seeds"] == [0]
    assert one["greedy"]["mean"] == pytest.approx(0.5)  # (1 + 1)/2 − (1 + 0)/2
    assert one["sampling"]["mean"] == pytest.approx(0.25)  # (1 + 0.5)/2 − (0.5 + 0.5)/2
    assert got["DQO − DQO, flat critic"]["greedy"]["mean"] == pytest.approx(-0.5)
