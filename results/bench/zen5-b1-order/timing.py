"""What every script of this study shares: timing a call for a while, and which rounds were far."""
import time

import numpy as np

from workbench.bench.placement import far_rounds, round_trip_ns


def median_ms(call, seconds: float = 0.4) -> float:
    """The median ms of back-to-back calls of `call` for `seconds`."""
    ts = []
    t1 = time.time()
    while time.time() - t1 < seconds:
        t = time.perf_counter()
        call()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts) * 1e3)


def far_mask(trips) -> np.ndarray:
    """Per round, whether the vCPUs were on two dies (`workbench.bench.placement.far_rounds`)."""
    return np.array(far_rounds(list(trips)), dtype=bool)


def alternating_rounds(rounds: int, engines: dict, settings: tuple, apply, line, before=None) -> list[dict]:
    """`rounds` rounds, each: `before()` (if given), the round trip, then every engine's forward
    timed (`median_ms`) under each of `settings` in turn, `apply(setting)` first; the order of the
    settings reverses every other round so neither always goes first. Row r holds "trip" and
    (engine, setting) -> ms; `line(r, row)` prints it as it comes."""
    rows = []
    for r in range(rounds):
        if before:
            before()
        row = {"trip": round_trip_ns()}
        for n, (e, feed) in engines.items():
            for s in (settings if r % 2 == 0 else settings[::-1]):
                apply(s)
                row[n, s] = median_ms(lambda: e.run(feed))
        rows.append(row)
        print(line(r, row), flush=True)
    return rows


def by_placement(rows: list[dict]):
    """(label, round mask) for the near and then the far rounds of `rows` (by each row's "trip"),
    skipping a placement no round had and saying so."""
    far = far_mask([x["trip"] for x in rows])
    for label, sel in (("near", ~far), ("far", far)):
        if sel.any():
            yield label, sel
        else:
            print(f"{label}: no rounds")
