"""Does training on two processes change a fork-chain result? (docs/forks.md section 6)

For each seed 0–4, the study's `DQO, flat critic` run at 2 operations is trained again from its
own ``train_config.json`` on one and on two processes (``torch.distributed.run``;
``batch_size`` is per process, so 32 each for the same global batch of 64 and the same 48
steps), evaluated with the study's evaluation (300 test problems, greedy and 2 samples, seed 0),
and paired with the study's run and with each other on the same test problems
(``experiments.stats.paired_difference``). Needs the study's runs (outputs/forks-claims):

    python docs/forks/two_processes.py > docs/forks/study/two-processes.md
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from page_tables import DECODINGS, _cell  # the page's cell format (docs/forks, this folder)

from dqo_tutorial.experiments.jobs import _accuracy, _hits
from dqo_tutorial.experiments.stats import paired_difference

STUDY, OUT = Path("outputs/forks-claims"), Path("outputs/forks-two-processes")
VARIANT, FOLDER = "DQO, flat critic, forks 2 ops", "dqo-flat-critic-forks-2-ops-"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(*args: str, processes: int = 1) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                     "--master_port", str(_port())]  # fmt: skip
    subprocess.run([*launcher, "-m", "dqo_tutorial.cli", *args], check=True, env=env,
                   capture_output=True)  # fmt: skip


def rerun(seed: int, processes: int) -> dict:
    """The seed's flat-critic run trained again on ``processes`` processes through the CLI: its
    test record (accuracies and hits)."""
    (one,) = [d for d in (STUDY / "runs" / f"seed-{seed}").glob(FOLDER + "*")
              if "-data-" not in d.name]  # not the data-size sweep's  # fmt: skip
    out = OUT / f"seed-{seed}-{processes}p"
    out.mkdir(parents=True, exist_ok=True)
    train = json.loads((one / "train" / "train_config.json").read_text())["config"]
    train["batch_size"] //= processes  # per process: the same global batch (and steps)
    (out / "train.json").write_text(json.dumps(train))
    if not (out / "train" / "train_summary.json").exists():
        _cli("train", "--config", str(out / "train.json"), "--out", str(out / "train"),
             processes=processes)  # fmt: skip
    ev = json.loads((one / "eval-test" / "eval_config.json").read_text())["config"]
    ev |= {"model": str(out / "train" / "policy")}
    (out / "eval.json").write_text(json.dumps(ev))
    _cli("eval", "--config", str(out / "eval.json"), "--out", str(out / "eval-test"))
    res = json.loads((out / "eval-test" / "results.json").read_text())
    return _accuracy(res) | {"hits": _hits(out / "eval-test", ev["limit"], ev["num_samples"])}


def _row(label: str, pairs: list) -> str:
    cells = [_cell(paired_difference(pairs, d)) for d in DECODINGS]
    return f"| {label} | " + " | ".join(cells) + " |"


def main() -> None:
    runs = json.loads((STUDY / "results.json").read_text())["runs"]
    study = {r["seed"]: r["test"] for r in runs if r["variant"] == VARIANT}
    seeds = sorted(study)
    one = {s: rerun(s, 1) for s in seeds}
    two = {s: rerun(s, 2) for s in seeds}
    print("| A − B (points), DQO, flat critic, 2 ops, seeds 0–4 | greedy | sampling |\n"
          "|---|---|---|")  # fmt: skip
    print(_row("two processes − one (both through `dqo-tutorial train`)",
               [(two[s], one[s]) for s in seeds]))  # fmt: skip
    print(_row("one process through `dqo-tutorial train` − the study's run",
               [(one[s], study[s]) for s in seeds]))  # fmt: skip
    print("\n| seed | the study's run | one process | two processes |\n|---|---|---|---|")
    for s in seeds:
        print(f"| {s} | " + " | ".join(f"{100 * t['greedy']:.1f} / {100 * t['sampling']:.1f} %"
                                       for t in (study[s], one[s], two[s])) + " |")  # fmt: skip


if __name__ == "__main__":
    main()
