"""Per engine, the range of the per-process medians in b1.txt / b8.txt (run.sh's output), over
all processes and over those that ran near (both round trips under 150 ns) or far (both over
300 ns) the whole time. Usage: python summarize.py b1.txt b8.txt"""
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from workbench.bench.spread import spread_pct  # noqa: E402

LINE = re.compile(r"(\S+) median ([0-9.]+) ms \(rounds ([0-9.]+)-([0-9.]+)\) trip (\d+)/(\d+) ns")


def _range(v):
    return f"{min(v):.2f}-{max(v):.2f} ms ({spread_pct(v) or 0:.0f} %, {len(v)})" if v else "none"


for path in sys.argv[1:]:
    per = {}
    for line in open(path):
        m = LINE.search(line)
        if m:
            e, med, lo, hi, t0, t1 = m.groups()
            t0, t1 = int(t0), int(t1)
            where = "near" if max(t0, t1) < 150 else "far" if min(t0, t1) > 300 else "moved"
            per.setdefault(e, {"all": [], "near": [], "far": [], "moved": []})
            per[e]["all"].append(float(med)); per[e][where].append(float(med))
    print(f"\n{path}: per-process medians, min-max (range, processes)\n")
    print("| engine | all processes | near | far | placement moved |\n|---|---|---|---|---|")
    for e, d in per.items():
        print(f"| {e} | {_range(d['all'])} | {_range(d['near'])} | {_range(d['far'])} | {_range(d['moved'])} |")
