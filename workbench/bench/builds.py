"""Two builds of the extension taking turns as separate processes: the old one from another
checkout (a `git worktree` of the older commit, its extension built in place), first on
PYTHONPATH in its turns, and this one. The same-period comparison for a kernel change, when the
two builds cannot share a process (results/bench/*/..._ab.py scripts use it)."""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence


def median_in_build(code: str, args: Sequence[object], checkout: str | None) -> float:
    """Run `python -c code *args` from / with `checkout` first on PYTHONPATH (None: whatever
    this process imports) and return the number its last line of output prints."""
    env = dict(os.environ)
    if checkout:
        env["PYTHONPATH"] = os.path.abspath(checkout)
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env, check=True,
                         capture_output=True, text=True, cwd="/")
    return float(out.stdout.strip().splitlines()[-1])


def builds_in_turns(code: str, cases: Sequence[Sequence[object]], base: str, rounds: int,
                    label: Callable[[Sequence[object]], str] = str) -> dict[str, list[float]]:
    """For each case (the child's arguments), `rounds` turns of the base build then this one,
    printing both medians and base / new (> 1: this build is faster) per round and the median
    ratio with its range; returns the ratios per case label."""
    out = {}
    for case in cases:
        name, ratios = label(case), []
        for r in range(rounds):
            old, new = median_in_build(code, case, base), median_in_build(code, case, None)
            ratios.append(old / new)
            print(f"{name} round {r + 1}: base {old:8.1f} us, new {new:8.1f} us, base / new {old / new:.3f}",
                  flush=True)
        print(f"{name}: median base / new {statistics.median(ratios):.3f} "
              f"(min {min(ratios):.3f}, max {max(ratios):.3f})", flush=True)
        out[name] = ratios
    return out


def ab_script(doc: str, code: str, cases: Sequence[Sequence[object]],
              label: Callable[[Sequence[object]], str] = str, rounds: int = 4) -> None:
    """The command line of an A/B script: `--base <checkout>` (required) and `--rounds`, then
    `builds_in_turns`; `doc` is the script's docstring (its first paragraph is the help)."""
    import argparse

    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="checkout of the old build, its extension built in place")
    ap.add_argument("--rounds", type=int, default=rounds)
    args = ap.parse_args()
    if not os.path.isdir(os.path.join(args.base, "workbench_ext")):
        # else the child would import this build and compare it with itself
        ap.error(f"--base {args.base}: no workbench_ext folder there (give a checkout with its extension built in place)")
    builds_in_turns(code, cases, args.base, args.rounds, label)
