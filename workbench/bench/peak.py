"""Peak throughput estimate for the GEMM microbenchmark (`workbench.bench.gemm`).

Peak: ``ops/cycle/core x clock x threads`` with the ops/cycle of the instruction each path is
built on, per core and cycle: ``2 x multiply-adds per instruction x instructions issued per
cycle``, the issue rate *measured* on this core (``workbench_ext.cpu.measure_issue_rate``:
12 independent instructions in a loop, over the measured clock, rounded to a power of two),
because CPUs with the same flags differ: Zen 4 issues one zmm vpdpbusd (or FMA) per cycle,
Ice Lake / Sapphire Rapids server cores two; Zen 2 one vpmaddwd ymm, Intel cores two.

* ``amx``          TDPBUSD: 16x16x64 MACs / 16 cycles = 1024 MAC = 2048 int ops/cycle (table)
* ``avx512_vnni``  vpdpbusd zmm, 64 MAC: 256 ops/cycle at 2 per cycle, 128 at 1
* ``avx2``         vpmaddwd ymm, 16 MAC: 64 ops/cycle at 2 per cycle, 32 at 1. The pair-product
                   kernel does two multiply-adds per s16 product, so it can pass 100 %.
* ``portable``     pmaddwd xmm, 8 MAC
* fp32 (torch-fp32 row): vfmadd231ps ymm (8 lanes) or zmm (16), 2 flops each.

Without the compiled extension (or on AMX) the table's theoretical value for 2 per cycle is used,
and the note says so.

The clock is max(measured, nominal): measured with a dependent integer-multiply chain
(``workbench_ext.cpu.measure_clock_ghz``, sees turbo but reads low on a loaded machine; a
reading above MAX_PLAUSIBLE_GHZ is discarded -- the old add chain read 8.5 GHz on Zen 5),
nominal from /proc/cpuinfo "cpu MHz".  The clock under heavy SIMD load may still differ, so
"% of peak" is an estimate, not a measurement.
"""
from __future__ import annotations

import functools
import math
import re
import subprocess
from pathlib import Path

# No x86 core boosts past ~6 GHz: a higher "measured" clock is a measuring artefact, not used.
MAX_PLAUSIBLE_GHZ = 6.5
# Theoretical ops per cycle per core at full issue (2 SIMD multiplies per cycle): the fallback
# when the issue rate cannot be measured (`per_cycle_peak`).
INT8_OPS_PER_CYCLE = {"amx": 2048, "avx512_vnni": 256, "avx2": 64, "portable": 32}
FP32_FLOPS_PER_CYCLE = {"amx": 64, "avx512_vnni": 64, "avx2": 32, "portable": 16}


def nominal_clock_ghz() -> tuple[float, str]:
    """Nominal clock in GHz from /proc/cpuinfo or lscpu, and where it came from."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        mhz = [float(v) for v in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", text, re.M)]
        if mhz:
            return max(mhz) / 1000.0, "/proc/cpuinfo cpu MHz"
    except OSError:
        pass
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        m = re.search(r"CPU max MHz:\s*([\d.]+)", out)
        if m:
            return float(m.group(1)) / 1000.0, "lscpu CPU max MHz"
    except (OSError, subprocess.SubprocessError):
        pass
    return 0.0, "unknown"


def cpu_clock_ghz() -> tuple[float, str]:
    """Clock used for the peak: max(measured, nominal).  Measured = best of 5 timings of a
    dependent integer-add chain (workbench_ext.cpu.measure_clock_ghz, sees turbo); a loaded
    machine can only make that read low, hence the max with the nominal clock."""
    nominal, src = nominal_clock_ghz()
    try:
        from workbench_ext import cpu
        measured = float(cpu.measure_clock_ghz())
    except Exception:  # pragma: no cover - extension missing
        measured = 0.0
    if measured > MAX_PLAUSIBLE_GHZ:  # a chain the CPU shortcut (the old add chain read 8.5 GHz on Zen 5)
        measured = 0.0
    ghz = max(nominal, measured)
    if ghz <= 0:
        return 2.0, "unknown clock, assumed 2.0 GHz"
    return ghz, f"max(measured {measured:.2f}, nominal {nominal:.2f} from {src})"


@functools.lru_cache(maxsize=None)
def per_cycle_peak(isa: str, kind: str = "int8") -> tuple[float, str]:
    """Peak int8 ops ("int8") or fp32 flops ("fp32") per cycle of one core on `isa`'s kernels,
    and how it was found: 2 x multiply-adds per instruction x the issue rate measured here
    (module docstring), else the theoretical table. Measured once per process."""
    table = INT8_OPS_PER_CYCLE if kind == "int8" else FP32_FLOPS_PER_CYCLE
    simd = "avx512_vnni" if (isa == "amx" and kind == "fp32") else isa  # AMX has no fp32 tiles
    if simd != "amx":
        try:
            from workbench_ext import cpu
            rate, instr, macs = cpu.measure_issue_rate(simd, kind)
            ghz = float(cpu.measure_clock_ghz())
        except Exception:  # extension missing, or an ISA without a measurement
            rate, ghz = 0.0, 0.0
        if rate > 0 and 0 < ghz <= MAX_PLAUSIBLE_GHZ:
            # the true rate is a small power of two; rounding takes out timing noise
            issue = min(max(2.0 ** round(math.log2(rate / ghz)), 0.5), 4.0)
            return 2.0 * macs * issue, f"{issue:g} x {instr} per cycle, measured"
    return float(table[isa]), "theoretical, full issue" if isa != "amx" else "TDPBUSD every 16 cycles"
