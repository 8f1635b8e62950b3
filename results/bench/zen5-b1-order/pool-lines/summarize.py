"""Summary of run.sh's rounds.txt: per placement (far: round trip >= 3x the fastest) and side,
the median ms per forward of each engine, and new / base."""
import sys
from pathlib import Path
import numpy as np
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from timing import far_mask  # noqa: E402  (the study's folder)
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
trip = np.array([float(r[2]) for r in rows]); far = far_mask(trip)
side = np.array([r[0] for r in rows]); ms = np.array([[float(x) for x in r[3:]] for r in rows])
for label, sel in (("near", ~far), ("far", far)):
    cells = []
    for i, name in enumerate(("wb-int8", "wb-int8-sp90")):
        b, n = ms[sel & (side == "base"), i], ms[sel & (side == "new"), i]
        if len(b) and len(n):
            cells.append(f"{name} base {np.median(b):.3f} ms ({len(b)} rounds), new {np.median(n):.3f} ms "
                         f"({len(n)}): new is {np.median(b) / np.median(n):.3f}x as fast")
    print(f"{label}: " + "; ".join(cells))
