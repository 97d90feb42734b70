r"""Sampled mutation testing: do the tests catch the bugs they claim to?

``make mutants`` (or ``python benchmarks/mutants.py``) takes, for each target in :data:`TARGETS`,
a fixed-seed sample of the small faults below (*mutants*) in its source, applies each one to a
temporary copy of the package that shadows the real one on ``sys.path``, runs the target's
covering tests (``-x -q``, a timeout per mutant), and reports per target how many mutants the
tests **killed** (a test failed, errored or timed out) and which **survived** (all green), each
survivor with its line and diff. docs/mutation-testing.md says how to read and act on it.

Operators (AST-based, one change per mutant): comparison flips (``<`` ↔ ``<=``, ``>`` ↔ ``>=``,
``==`` ↔ ``!=``, ``is`` ↔ ``is not``, ``in`` ↔ ``not in``), ``and`` ↔ ``or``, arithmetic swaps
(``+`` ↔ ``-``, ``*`` ↔ ``/``, ``//`` → ``/``, ``%`` → ``//``, ``**`` → ``*``), ``not x`` → ``x``,
integer and float constants + 1, ``True`` ↔ ``False`` (keywords such as ``right=True``
included), the index ``-1`` → ``1``, and method/function swaps (min/max, minimum/maximum,
argmin/argmax, any/all, sum/mean). Error messages (``raise``), f-strings, annotations and
docstrings are left alone.

The runner imports torch, transformers and pytest once and forks one child per mutant, so a
mutant costs its tests, not the interpreter's start-up (Linux/macOS: needs ``os.fork``).
"""

from __future__ import annotations

import argparse
import ast
import difflib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "dqo_tutorial"


@dataclass(frozen=True)
class Target:
    """Sources to mutate — ``{path: function names, or None for the whole module}`` — and the
    pytest arguments (files, node ids, ``-k`` expressions) of the tests that cover them."""

    sources: dict[str, tuple[str, ...] | None]
    tests: tuple[str, ...]


# The statistics helpers are named one by one: add or rename a function here when it changes.
STATISTICS = {
    "dqo_tutorial/evaluate.py": ("clustered_rate", "paired_difference"),
    "dqo_tutorial/experiments/stats.py": ("paired_interval", "paired_variance"),
}

TARGETS: dict[str, Target] = {
    "kernels": Target(
        {"dqo_tutorial/kernels.py": None},
        ("tests/test_kernels.py", "tests/test_kernel_properties.py"),
    ),
    "rewards": Target(
        {"dqo_tutorial/rewards.py": None},
        (
            "tests/test_rewards.py",
            "tests/test_sampling.py::test_process_rewards_hand_computed",
            "tests/test_sampling.py::test_process_rewards_telescope",
        ),
    ),
    "decoding": Target({"dqo_tutorial/decoding.py": None}, ("tests/test_decoding.py",)),
    "collate": Target({"dqo_tutorial/collate.py": None}, ("tests/test_collate.py",)),
    "methods": Target(
        {"dqo_tutorial/methods.py": ("_nll_loss", "_ratio_stats", "_dpo", "_dro", "_dqo")},
        ("tests/test_method_losses.py",),
    ),
    "statistics": Target(
        STATISTICS,
        (
            "tests/test_evaluate.py",
            "tests/test_claims.py",
            "tests/test_exercises_ch07_08.py",
            "-k",
            "clustered or paired",
        ),
    ),  # fmt: skip
}

# Survivors judged equivalent (they change no result), by target and the mutated source text
# ``"old  ->  new"`` as the report prints it, with the reason. They still count as survivors
# in the raw score.
_CHUNK = "step = max(1, _CHUNK_ELEMENTS // max(1, n_cols))  ->  "
EQUIVALENT: dict[tuple[str, str], str] = {
    ("kernels", _CHUNK + "step = max(1, _CHUNK_ELEMENTS // min(1, n_cols))"):
        "a chunk size: the rows are the same, only fewer chunks",
    ("kernels", _CHUNK + "step = max(1, _CHUNK_ELEMENTS // max(2, n_cols))"):
        "a chunk size (n_cols ≥ 2 in practice)",
    ("kernels", "out[rows] = z.gather(-1, tokens[rows, None]).squeeze(-1) - lse[rows]  ->  "
                "out[rows] = z.gather(-1, tokens[rows, None]).squeeze(1) - lse[rows]"):
        "the gathered tensor is (rows, 1): dim 1 is dim -1",
    ("decoding", "return logits.argmax(dim=-1), None  ->  return logits.argmax(dim=1), None"):
        "the logits are (B, V): dim 1 is dim -1",
    ("decoding", "if end > self.capacity:  ->  if (end >= self.capacity):"):
        "the buffer has one position more than the loop writes (the last token is never fed "
        "back), so end == capacity never happens",
    ("decoding", "out = model(input_ids=taken[:, None], attention_mask=mask[:, : width + t + 1],"
                 "  ->  out = model(input_ids=taken[:, None], "
                 "attention_mask=mask[:, : width + t + 2],"):
        "the extra mask column lies past the cached keys; transformers reads the 2-D mask only "
        "at key indices (masking_utils.padding_mask_function)",
    ("decoding", "batch_size: int = 256  ->  batch_size: int = 257"):
        "a default batch size: the same seed draws the same responses at any batch size "
        "(tested), so only speed changes",
}  # fmt: skip

SWAPS = {"min": "max", "max": "min", "minimum": "maximum", "maximum": "minimum",
         "argmin": "argmax", "argmax": "argmin", "amin": "amax", "amax": "amin",
         "any": "all", "all": "any", "sum": "mean", "mean": "sum"}  # fmt: skip
BUILTIN_SWAPS = ("min", "max", "any", "all")  # sum/mean only as methods: no builtin mean
COMPARE = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
           ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn,
           ast.NotIn: ast.In}  # fmt: skip
BINOP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
         ast.FloorDiv: ast.Div, ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult}  # fmt: skip


# --------------------------------------------------------------------------------------------
# mutants
# --------------------------------------------------------------------------------------------


@dataclass
class Mutant:
    target: str
    path: str
    function: str
    line: int
    operator: str
    old: str
    new: str
    source: str = field(repr=False)  # the whole mutated module

    def label(self) -> str:
        return f"{' '.join(self.old.split())}  ->  {' '.join(self.new.split())}"


def _variants(node: ast.AST):
    """(operator name, mutated copy of ``node``) for every mutation of this node itself."""
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            if type(op) in COMPARE:
                yield "compare", _copy(node, ops=[*node.ops[:i], COMPARE[type(op)](),
                                                  *node.ops[i + 1 :]])  # fmt: skip
    elif isinstance(node, ast.BoolOp):
        yield "and/or", _copy(node, op=ast.Or() if isinstance(node.op, ast.And) else ast.And())
    elif isinstance(node, ast.BinOp) and type(node.op) in BINOP:
        yield "arithmetic", _copy(node, op=BINOP[type(node.op)]())
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        yield "not", node.operand
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and _is_one(node.operand):
        yield "index -1", ast.Constant(1)
    elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
        yield "true/false", ast.Constant(not node.value)
    elif isinstance(node, ast.Constant) and type(node.value) in (int, float):
        yield "constant+1", ast.Constant(node.value + 1)
    elif isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Name) and func.id in BUILTIN_SWAPS:
            yield "swap", _copy(node, func=ast.Name(SWAPS[func.id], ast.Load()))
        elif isinstance(func, ast.Attribute) and func.attr in SWAPS:
            yield "swap", _copy(node, func=_copy(func, attr=SWAPS[func.attr]))


def _is_one(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) is int and node.value == 1


def _copy(node: ast.AST, **changes) -> ast.AST:
    new = type(node)(**{f: getattr(node, f) for f in node._fields})
    for name, value in changes.items():
        setattr(new, name, value)
    return ast.copy_location(new, node)


def _skipped(node: ast.AST) -> list[ast.AST]:
    """Sub-trees never mutated: messages, f-strings, annotations, docstrings, decorators."""
    out: list[ast.AST] = []
    for n in ast.walk(node):
        if isinstance(n, (ast.Raise, ast.JoinedStr, ast.Assert)):
            out.append(n)
        elif isinstance(n, ast.arg) and n.annotation is not None:
            out.append(n.annotation)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out.extend(n.decorator_list + ([n.returns] if n.returns else []))
        elif isinstance(n, ast.AnnAssign):
            out.append(n.annotation)
    return out


def _scopes(tree: ast.Module, functions: tuple[str, ...] | None) -> list[tuple[str, ast.AST]]:
    """(name, node) of what is mutated: the named functions (at any depth), or every top-level
    statement but imports, ``__all__`` and string statements."""
    if functions is not None:
        defs = (ast.FunctionDef, ast.AsyncFunctionDef)
        found = [(n.name, n) for n in ast.walk(tree) if isinstance(n, defs) and n.name in functions]
        missing = set(functions) - {name for name, _ in found}
        if missing:
            raise SystemExit(f"mutants: no function {sorted(missing)} any more: update TARGETS")
        return found
    out = []
    for stmt in tree.body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)) or (
            isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
        ):
            continue
        if isinstance(stmt, ast.Assign) and any(getattr(t, "id", "") == "__all__"
                                                for t in stmt.targets):  # fmt: skip
            continue
        out.append((getattr(stmt, "name", f"line {stmt.lineno}"), stmt))
    return out


def _splice(src: str, node: ast.AST, replacement: ast.AST) -> tuple[str, str, str]:
    """(mutated module source, old lines, new lines): ``node``'s exact span replaced by the
    unparsed ``replacement`` (parenthesised where precedence could matter)."""
    lines = src.splitlines(keepends=True)
    first, last = node.lineno - 1, node.end_lineno - 1
    start = len(lines[first].encode()[: node.col_offset].decode())
    end = len(lines[last].encode()[: node.end_col_offset].decode())
    text = ast.unparse(replacement)
    if isinstance(replacement, (ast.BinOp, ast.BoolOp, ast.Compare, ast.UnaryOp)):
        text = f"({text})"
    new_block = lines[first][:start] + text + lines[last][end:]
    old_block = "".join(lines[first : last + 1])
    return "".join(lines[:first]) + new_block + "".join(lines[last + 1 :]), old_block, new_block


def mutants_of(name: str, target: Target) -> list[Mutant]:
    """Every mutant of a target, in source order."""
    out = []
    for path, functions in target.sources.items():
        src = (ROOT / path).read_text(encoding="utf-8")
        tree = ast.parse(src)
        for scope_name, scope in _scopes(tree, functions):
            skip = {id(n) for s in _skipped(scope) for n in ast.walk(s)}
            skip |= {id(n) for n in ast.walk(scope) if _is_docstring(n)}
            for node in ast.walk(scope):
                if id(node) in skip or not hasattr(node, "lineno"):
                    continue
                for operator, replacement in _variants(node):
                    mutated, old, new = _splice(src, node, replacement)
                    try:
                        compile(mutated, path, "exec")
                    except SyntaxError:
                        continue
                    out.append(Mutant(name, path, scope_name, node.lineno, operator, old, new,
                                      mutated))  # fmt: skip
    return sorted(out, key=lambda m: (m.path, m.line, m.operator, m.new))


def _is_docstring(node: ast.AST) -> bool:
    return isinstance(node, ast.Expr) and isinstance(getattr(node, "value", None), ast.Constant)


# --------------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------------


def _preload() -> None:
    """Import the heavy third-party modules once in the parent; children inherit them. The
    package itself is dropped again so that each child imports the mutated copy."""
    from importlib.metadata import entry_points

    import pytest  # noqa: F401
    import torch  # noqa: F401

    import dqo_tutorial.decoding  # noqa: F401
    import dqo_tutorial.experiments.plan  # noqa: F401
    import dqo_tutorial.methods  # noqa: F401
    import dqo_tutorial.models  # noqa: F401
    import dqo_tutorial.sampling  # noqa: F401

    for plugin in entry_points(group="pytest11"):  # pytest's plugins (nbmake, hypothesis …)
        plugin.load()
    for mod in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[mod]


def _child(slot: Path, mutant: Mutant | None, tests: tuple[str, ...], log: Path) -> None:
    """In the forked child: write the mutant into this slot's package copy, run the tests, exit
    with pytest's status."""
    os.setpgid(0, 0)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    if mutant is not None:
        (slot / mutant.path).write_text(mutant.source, encoding="utf-8")
    sys.path.insert(0, str(slot))
    import importlib

    importlib.invalidate_caches()
    import pytest

    import dqo_tutorial

    if not dqo_tutorial.__file__.startswith(str(slot)):  # an install that shadows the copy
        print(f"mutants: imported {dqo_tutorial.__file__}, not the copy in {slot}")
        os._exit(3)

    args = [*tests, "-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "--no-header"]
    os._exit(int(pytest.main(args)))


@dataclass
class Slot:
    """One temporary package copy and the child running in it."""

    path: Path
    pid: int = 0
    started: float = 0.0
    job: tuple[str, Mutant | None, Path] | None = None


def _fresh_slot(base: Path, i: int) -> Path:
    slot = base / f"slot{i}"
    if slot.exists():
        shutil.rmtree(slot)
    shutil.copytree(ROOT / PACKAGE, slot / PACKAGE,
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    return slot


def run_all(jobs_by_target, jobs: int, timeout: dict[str, float], logs: Path):
    """Run (target, mutant or None for the clean run) jobs on ``jobs`` slots; yields
    (target, mutant, status, seconds, log) as they finish; status: killed, survived, timeout."""
    base = Path(tempfile.mkdtemp(prefix="dqo-mutants-"))
    queue = list(jobs_by_target)
    slots = [Slot(_fresh_slot(base, i)) for i in range(jobs)]
    try:
        while queue or any(s.pid for s in slots):
            for s in slots:
                if not s.pid and queue:
                    target, mutant = queue.pop(0)
                    log = logs / f"{target}-{len([*logs.glob(target + '-*')]):04d}.log"
                    s.job, s.started = (target, mutant, log), time.time()
                    s.pid = os.fork()
                    if s.pid == 0:
                        _child(s.path, mutant, TARGETS[target].tests, log)
            time.sleep(0.2)
            for s in slots:
                if not s.pid:
                    continue
                pid, status = os.waitpid(s.pid, os.WNOHANG)
                elapsed = time.time() - s.started
                if pid == 0 and elapsed < timeout[s.job[0]]:
                    continue
                if pid == 0:
                    os.killpg(s.pid, signal.SIGKILL)
                    os.waitpid(s.pid, 0)
                    verdict = "timeout"
                else:
                    verdict = "survived" if os.waitstatus_to_exitcode(status) == 0 else "killed"
                target, mutant, log = s.job
                s.pid = 0
                if mutant is not None:  # back to the unmutated module for the next job
                    shutil.copyfile(ROOT / mutant.path, s.path / mutant.path)
                yield target, mutant, verdict, elapsed, log
    finally:
        for s in slots:
            if s.pid:
                os.killpg(s.pid, signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------------


def _diff(m: Mutant) -> str:
    return "".join(
        difflib.unified_diff(m.old.splitlines(True), m.new.splitlines(True),
                             f"{m.path}:{m.line}", f"{m.path}:{m.line} ({m.operator})", n=0)
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("targets", nargs="*", default=list(TARGETS), help=f"of {list(TARGETS)}")
    p.add_argument("--per-target", type=int, default=20, help="mutants sampled per target")
    p.add_argument("--seed", type=int, default=0, help="the sample's seed")
    p.add_argument("--jobs", type=int, default=2, help="mutants run at once")
    p.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds per mutant (at least 3 × the target's clean run)",
    )
    p.add_argument(
        "--rerun",
        action="store_true",
        help="run only the survivors of the last run (its --logs/last.json)",
    )
    p.add_argument("--list", action="store_true", help="print the sampled mutants, run nothing")
    p.add_argument("--logs", default="outputs/mutants", help="folder for each run's pytest log")
    args = p.parse_args(argv)
    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        print(f"mutants: unknown target {sorted(unknown)}; choose from {list(TARGETS)}")
        return 2
    sampled = {}
    for name in args.targets:
        every = mutants_of(name, TARGETS[name])
        rng = random.Random(f"{args.seed}:{name}")
        sampled[name] = sorted(rng.sample(every, min(args.per_target, len(every))),
                               key=lambda m: (m.path, m.line))  # fmt: skip
        print(f"{name}: {len(every)} mutants, {len(sampled[name])} sampled", flush=True)
    if args.rerun:
        last = json.loads((ROOT / args.logs / "last.json").read_text())
        keep = {(s["target"], s["path"], s["function"], s["label"]) for s in last["survivors"]}
        sampled = {n: [m for m in ms if (n, m.path, m.function, m.label()) in keep]
                   for n, ms in sampled.items()}  # fmt: skip
        sampled = {n: ms for n, ms in sampled.items() if ms}
        print(f"rerun: {sum(map(len, sampled.values()))} survivors of the last run", flush=True)
    if args.list:
        for name, ms in sampled.items():
            for m in ms:
                print(f"[{name}] {m.path}:{m.line} {m.function} {m.operator}: {m.label()}")
        return 0
    return _run(sampled, args)


def _run(sampled: dict[str, list[Mutant]], args) -> int:
    logs = ROOT / args.logs
    logs.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.dont_write_bytecode = True  # a mutant of the same size and mtime must not hit a .pyc
    os.chdir(ROOT)
    _preload()
    start = time.time()
    results: dict[str, list] = {name: [] for name in sampled}
    clean = [(name, None) for name in sampled]
    timeout = dict.fromkeys(sampled, args.timeout * 10)
    for name, _, verdict, secs, log in run_all(clean, args.jobs, timeout, logs):
        print(f"{name}: clean run {verdict} in {secs:.0f} s", flush=True)
        if verdict != "survived":
            print(f"mutants: the covering tests of {name} fail unmutated: see {log}")
            return 1
        timeout[name] = max(args.timeout, 3 * secs)
    jobs = [(name, m) for name, ms in sampled.items() for m in ms]
    for name, m, verdict, secs, _ in run_all(jobs, args.jobs, timeout, logs):
        results[name].append((m, verdict))
        print(f"  [{name}] {verdict:8s} {secs:5.0f} s  {m.path}:{m.line} {m.label()}", flush=True)
    _report(results, time.time() - start)
    survivors = [{"target": n, "path": m.path, "line": m.line, "function": m.function,
                  "label": m.label()} for n, rows in results.items() for m, v in rows
                 if v == "survived"]  # fmt: skip
    summary = {n: {"sampled": len(r), "killed": sum(v != "survived" for _, v in r)}
               for n, r in results.items()}  # fmt: skip
    if not args.rerun:
        (logs / "last.json").write_text(json.dumps({"summary": summary, "survivors": survivors},
                                                   indent=1))  # fmt: skip
    return 0


def _report(results: dict[str, list], wall: float) -> None:
    print(f"\n{'target':12s} {'sampled':>7s} {'killed':>7s} {'survived':>8s} {'equivalent':>10s}")
    totals = [0, 0, 0, 0]
    for name, rows in results.items():
        killed = sum(v != "survived" for _, v in rows)
        survivors = [m for m, v in rows if v == "survived"]
        equivalent = sum((name, m.label()) in EQUIVALENT for m in survivors)
        row = [len(rows), killed, len(survivors), equivalent]
        totals = [a + b for a, b in zip(totals, row)]
        print(f"{name:12s} {row[0]:7d} {row[1]:7d} {row[2]:8d} {row[3]:10d}")
    n, k, s, e = totals
    print(f"{'total':12s} {n:7d} {k:7d} {s:8d} {e:10d}")
    print(f"raw score {k / max(n, 1):.1%}; without the equivalent ones {k / max(n - e, 1):.1%}; "
          f"{wall / 60:.1f} min")  # fmt: skip
    for name, rows in results.items():
        for m, v in rows:
            if v == "survived":
                why = EQUIVALENT.get((name, m.label()))
                print(
                    f"\nSURVIVED [{name}] {m.function}" + (f" (equivalent: {why})" if why else "")
                )
                print(_diff(m), end="")


if __name__ == "__main__":
    sys.exit(main())
