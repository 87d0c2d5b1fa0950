"""``scripts/sim``: seeds, one seed's trace, the mutants, the scale run."""

from __future__ import annotations

import argparse
import sys

from .cores import ModelCores, RealCores
from .run import run_seed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/sim", description=__doc__)
    parser.add_argument("--seeds", type=int, help="run N seeds; exit 1 at the first violation")
    parser.add_argument("--start", type=int, default=0, help="first seed of --seeds (default 0)")
    parser.add_argument("--seed", type=int, help="run one seed")
    parser.add_argument("--trace", action="store_true", help="with --seed: print its full event trace")
    parser.add_argument(
        "--wide", action="store_true", help="bigger worlds: up to 5 edges, 5 apps, 12 streams"
    )
    parser.add_argument("--mutants", action="store_true", help="plant known bugs; each must be caught")
    parser.add_argument("--budget", type=int, default=300, help="seeds per mutant (default 300)")
    parser.add_argument("--scale", action="store_true", help="the one-hour, 10,000-stream run (JSON line)")
    parser.add_argument("--streams", type=int, default=10_000, help="with --scale: sessions (default 10000)")
    parser.add_argument(
        "--cores", choices=("real", "model"), default="real", help="EdgeCore/AppCore, or sim/model.py's"
    )
    args = parser.parse_args(argv)
    out = sys.stdout
    cores = RealCores() if args.cores == "real" else ModelCores()
    if args.seed is not None:
        trace = (lambda line: out.write(line + "\n")) if args.trace else None
        outcome = run_seed(args.seed, cores, trace=trace, wide=args.wide)
        if outcome.violation is not None:
            print(f"seed {args.seed}: {outcome.violation} (at t={outcome.time:.6f})")
            return 1
        print(f"seed {args.seed}: {outcome.tags} tags, 0 violations")
        return 0
    if args.seeds is not None:
        for seed in range(args.start, args.start + args.seeds):
            outcome = run_seed(seed, cores, wide=args.wide)
            if outcome.violation is not None:
                print(f"seed {seed}: {outcome.violation} (at t={outcome.time:.6f})")
                print(f"rerun: scripts/sim --seed {seed} --trace")
                return 1
        print(f"{args.seeds} seeds, 0 violations")
        return 0
    if args.mutants:
        from .mutants import run_mutants

        return run_mutants(args.budget, out)
    if args.scale:
        from .scale import run_scale

        return run_scale(out, args.streams)
    parser.print_usage()
    return 2
