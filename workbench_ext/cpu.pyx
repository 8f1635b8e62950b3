"""CPU feature detection and instruction-set (ISA) dispatch for the workbench kernels.

Detection uses CPUID and XCR0 (a feature counts only if the CPU has it *and* the OS saves its
register state).  On Linux, AMX additionally needs a per-process permission
(``arch_prctl(ARCH_REQ_XCOMP_PERM=0x1023, XFEATURE_XTILEDATA=18)``); it is requested once at
import and AMX is reported usable only if the kernel grants it.

ISA paths, best first: ``amx`` -> ``avx512_vnni`` -> ``avx2`` -> ``portable``.
The active path is, in order: the one forced with :func:`set_isa`, else the environment
variable ``WORKBENCH_ISA`` (read on every call, ``""``/``auto`` = best), else the best
available.  Forcing an unknown ISA or one this CPU lacks raises ``ValueError``.
"""
import os
from libc.stdlib cimport getenv

cdef extern from "wb_cpu.h" nogil:
    enum: WB_F_COUNT
    void wb_cpu_detect(int *f, int request_amx)
    double wb_measure_ghz(long iters)
    double wb_measure_issue_rate(int code, long iters)

cdef extern from "wb_placement.h" nogil:
    double wb_line_round_trip_ns(int cpu_a, int cpu_b, long iters)

cdef extern from "wb_common.h" nogil:
    int wb_max_threads()
    void wb_set_threads(int n)

ISAS = ("amx", "avx512_vnni", "avx2", "portable")
ISA_CODES = {"portable": 0, "avx2": 1, "avx512_vnni": 2, "amx": 3}

_FEATURE_NAMES = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "bmi2",
    "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni", "avx_vnni",
    "amx_tile", "amx_int8", "amx_bf16",
    "os_avx", "os_avx512", "os_amx", "amx_permission",
)

cdef int _flags[64]
wb_cpu_detect(_flags, 1)
_FEATURES = {name: bool(_flags[i]) for i, name in enumerate(_FEATURE_NAMES)}


def _compute_available():
    f = _FEATURES
    out = []
    avx512 = f["avx512f"] and f["avx512bw"] and f["avx512vl"] and f["avx512dq"] and f["avx512_vnni"]
    # The AMX path also uses AVX-512 VNNI (sparse layers, epilogues): every AMX CPU has it.
    if f["amx_tile"] and f["amx_int8"] and avx512 and f["avx2"] and f["fma"]:
        out.append("amx")
    if avx512 and f["avx2"] and f["fma"]:
        out.append("avx512_vnni")
    if f["avx2"] and f["fma"]:
        out.append("avx2")
    out.append("portable")
    return out


_AVAILABLE = _compute_available()
_forced = None


def features():
    """Usable CPU features, e.g. ``{"avx2": True, "fma": True, "avx512_vnni": False, "amx_int8": False, ...}``."""
    return dict(_FEATURES)


def available_isas():
    """Kernel paths this CPU can run, best first (always ends with ``"portable"``)."""
    return list(_AVAILABLE)


def _validate(name, source):
    if not isinstance(name, str):
        raise TypeError(f"{source}: ISA name must be a str, got {type(name).__name__}")
    key = name.strip().lower()
    if key not in ISA_CODES:
        raise ValueError(f"{source}: unknown ISA {name!r}; known: {list(ISAS)}")
    if key not in _AVAILABLE:
        raise ValueError(
            f"{source}: ISA {key!r} is not available on this CPU; available: {_AVAILABLE}")
    return key


_env_raw = None      # last $WORKBENCH_ISA value seen (bytes) and what it resolved to
_env_isa = None


def active_isa():
    """The kernel path in use: set_isa() override, else $WORKBENCH_ISA, else the best available.
    Called on every kernel call, so the environment is read with C getenv (os.environ writes go
    through putenv) and the last resolution is cached."""
    global _env_raw, _env_isa
    if _forced is not None:
        return _forced
    cdef const char *v = getenv(b"WORKBENCH_ISA")
    if v == NULL or v[0] == 0:
        return _AVAILABLE[0]
    raw = <bytes>v
    if raw == _env_raw:
        return _env_isa
    env = raw.decode("utf-8", "replace")
    if env.strip().lower() in ("", "auto", "best"):
        isa = _AVAILABLE[0]
    else:
        isa = _validate(env, "WORKBENCH_ISA")   # raises: not cached
    _env_raw, _env_isa = raw, isa
    return isa


def set_isa(name=None):
    """Force a kernel path from Python; ``None`` removes the override (back to
    $WORKBENCH_ISA if set, else the best available).  Layers repack lazily on their next call."""
    global _forced
    if name is None:
        _forced = None
    else:
        _forced = _validate(name, "set_isa")


def isa_code(name):
    """Integer code of an ISA name (used by the kernel modules)."""
    return ISA_CODES[_validate(name, "isa")]


def get_num_threads():
    """Threads the kernels use by default (omp_get_max_threads, honours OMP_NUM_THREADS)."""
    return wb_max_threads()


def set_num_threads(int n):
    """Set the default number of threads for all workbench_ext kernels (and OpenMP's: torch shares it)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    wb_set_threads(n)


def measure_clock_ghz(int repeats=5, long iters=5000000):
    """Measured core clock in GHz (best of `repeats` timings of a dependent 3-cycle multiply
    chain of ~8 * iters cycles, ~15 ms each at 3 GHz; see wb_cpu.h).  Reflects turbo; noisy on a loaded machine, which
    can only make it read *lower*, hence the max."""
    cdef double best = 0.0, g
    for _ in range(max(1, repeats)):
        with nogil:
            g = wb_measure_ghz(iters)
        best = g if g > best else best
    return best


def line_round_trip_ns(int cpu_a, int cpu_b, long iters=5000):
    """Mean round trip in ns of one cache line between logical CPUs `cpu_a` and `cpu_b` (two
    pinned threads taking turns on one atomic counter, `iters` times; the calling thread gets its
    affinity back). Inside a VM it says where the host has put the two vCPUs: ~60-100 ns on one
    die, ~330-420 ns on two (wb_placement.h). ValueError when either CPU cannot be pinned."""
    if cpu_a == cpu_b or cpu_a < 0 or cpu_b < 0:
        raise ValueError(f"need two different CPUs, got {cpu_a} and {cpu_b}")
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    cdef double ns
    with nogil:
        ns = wb_line_round_trip_ns(cpu_a, cpu_b, iters)
    if ns < 0:
        raise ValueError(f"cannot pin threads to CPUs {cpu_a} and {cpu_b} (allowed: {sorted(os.sched_getaffinity(0))})")
    return ns


_RATE_INSTR = {
    ("int8", "avx512_vnni"): (2, "vpdpbusd zmm", 64), ("int8", "avx2"): (1, "vpmaddwd ymm", 16),
    ("int8", "portable"): (0, "pmaddwd xmm", 8),
    ("fp32", "avx512_vnni"): (4, "vfmadd231ps zmm", 16), ("fp32", "avx2"): (3, "vfmadd231ps ymm", 8),
}


def measure_issue_rate(str isa, str kind="int8", int repeats=3, long iters=2000000):
    """(instructions per ns, instruction, multiply-adds per instruction) for the multiply
    instruction the `isa` kernels of `kind` ("int8" or "fp32") are built on: best of `repeats`
    timings of 12 * iters independent instructions (~7 ms each at 2 per ns; see wb_cpu.h).
    Divided by :func:`measure_clock_ghz` it is this core's issue rate per cycle.  AMX (a tile
    multiply every 16 cycles on every AMX core so far), fp32 on the portable path and ISAs this
    CPU lacks raise ValueError."""
    if (kind, isa) not in _RATE_INSTR:
        raise ValueError(f"no issue-rate measurement for {kind} on ISA {isa!r}; one of "
                         f"{sorted(_RATE_INSTR)}")
    if isa not in available_isas():
        raise ValueError(f"ISA {isa!r} is not available on this CPU ({', '.join(available_isas())})")
    code, name, macs = _RATE_INSTR[(kind, isa)]
    cdef double best = 0.0, g
    cdef int c = code
    for _ in range(max(1, repeats)):
        with nogil:
            g = wb_measure_issue_rate(c, iters)
        best = g if g > best else best
    return best, name, macs
