"""What every script of this study shares: timing a call for a while, and which rounds were far."""
import time

import numpy as np

from workbench.bench.placement import far_rounds


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
