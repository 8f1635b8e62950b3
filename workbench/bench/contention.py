"""`workbench bench --contend N`: time the engines while N busy processes share the cores.

A shared 2-core VM rarely gives a benchmark both of its vCPUs: a neighbour, the OS or another job
takes one of them for a while, and the engines' run-to-run spread comes mostly from how each one
copes. An engine whose threads meet at a barrier after every op waits for the thread that lost its
core; one that spins while it waits keeps the late thread off the core it could have moved to. A
busy process per contended core makes that case reproducible, so engines can be compared under it
in one run (`--contend 1 --threads 2`: one of the two cores is shared).
"""
from __future__ import annotations

import subprocess
import sys
from contextlib import contextmanager
from typing import Iterator

from workbench.runtime.threads import usable_cpus

BUSY_LOOP = "while True:\n    pass\n"


def check_contend(n: int) -> int:
    """`n` if it is a usable number of busy processes (0 .. the CPUs this process may use)."""
    cores = usable_cpus()
    if not 0 <= n <= cores:
        raise ValueError(f"--contend must be between 0 and the {cores} usable CPU(s) here, got {n}")
    return n


@contextmanager
def busy_processes(n: int) -> Iterator[list[subprocess.Popen]]:
    """`n` processes spinning a pure-Python loop (one core each, no memory traffic) for the
    duration of the block; killed on the way out, exception or not."""
    procs: list[subprocess.Popen] = []
    try:
        for _ in range(n):
            procs.append(subprocess.Popen([sys.executable, "-c", BUSY_LOOP], stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        yield procs
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
