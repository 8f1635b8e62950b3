"""The note a row of an engine with variants carries (ORT int8: plain / optimized graph x
per-tensor / per-channel), written by the bench's worker and read back by the item-7 summaries.

A row with variants reports the variant with the best median of that run (`worker._Prepared.row`),
so across runs the row is the best of several configurations each time. Taking the best of k
noisy medians narrows their run-to-run range: in `results/bench/zen5-repeat7/` the ORT row moved
1 % between runs at batch 8 while each of its configurations moved 2-3 %. Comparing another
engine's range with a single configuration's (`variant_medians`) compares like with like.
"""
from __future__ import annotations

import re

_NOTE = re.compile(r"best of \d+ variants at batch \d+: [^,]+, median ms ((?:\S+=[0-9.]+ ?)+)")


def variant_note(batch: int, best: str, medians_ms: dict[str, float]) -> str:
    """'best of N variants at batch B: BEST, median ms v1=.. v2=..' (medians in ms)."""
    return (f"best of {len(medians_ms)} variants at batch {batch}: {best}, median ms "
            + " ".join(f"{v}={m:.2f}" for v, m in medians_ms.items()))


def variant_medians(notes: str) -> dict[str, float]:
    """Each variant's median ms from a row's notes (`variant_note`); empty for a row without."""
    m = _NOTE.search(notes or "")
    if not m:
        return {}
    return {k: float(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
