"""Command line of dqo_tutorial: one subcommand per task.

    python -m dqo_tutorial.cli tabular-demo --out outputs/tabular-demo [--beta --lam --steps --seed]

Add a subcommand by writing ``_add_<name>(subparsers)`` (it registers its arguments and sets
``func``, a callable taking the parsed namespace and returning an exit code) and calling it in
:func:`build_parser`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def _tabular_demo(args: argparse.Namespace) -> int:
    from dqo_tutorial.tabular import demo

    demo(args.out, beta=args.beta, lam=args.lam, steps=args.steps, seed=args.seed)
    return 0


def _add_tabular_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tabular-demo",
        help="train tabular DQO on a random tree MDP and compare with the exact soft-optimal π*",
        description="Tabular DQO on a random tree MDP vs its exact solution: prints the error "
        "curve and writes tabular-dqo.png to --out.",
    )
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument("--beta", type=float, default=0.5, help="KL strength β (default 0.5)")
    p.add_argument("--lam", type=float, default=1.0, help="λ of the λ-return (default 1.0)")
    p.add_argument("--steps", type=int, default=1000, help="Adam steps (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the MDP and the data (default 0)")
    p.set_defaults(func=_tabular_demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dqo-tutorial", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_tabular_demo(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
