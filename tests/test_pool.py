"""The kernels' thread pool (workbench_ext/wb_pool.h): every index of a parallel loop runs once,
the caller finishes a job alone when no worker takes part (the case of a worker another
process keeps off its core), results do not depend on which thread ran a chunk, and the pool
survives fork and concurrent callers."""
import multiprocessing
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

pool = pytest.importorskip("workbench_ext.pool", reason="workbench_ext not built (python setup.py build_ext --inplace)")
from workbench_ext import int8  # noqa: E402


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("n,grain", [(1, 1), (2, 1), (10, 3), (1000, 7), (5, 10), (257, 1)])
def test_every_index_runs_once(threads, n, grain):
    out = pool._test_sum(threads, n, grain)
    np.testing.assert_array_equal(out, np.arange(n))


def test_workers_take_chunks():
    before = pool.stats()["chunks_by_workers"]
    for _ in range(50):          # a worker asleep when a job starts may miss it: try again
        pool._test_sum(2, 200, 1)
        if pool.stats()["chunks_by_workers"] > before:
            break
    assert pool.stats()["chunks_by_workers"] > before
    assert pool.stats()["workers"] >= 1


def _owner_prefixes_then_takers(who: np.ndarray, threads: int) -> bool:
    """Each thread's range of the chunks (wb_pool_impl.h: thread k owns [k*n/t, (k+1)*n/t)) was
    run by its owner from the front and by other threads from the back: owner's chunks first."""
    n = len(who)
    for k in range(threads):
        part = who[k * n // threads:(k + 1) * n // threads]
        mine = part == k
        if mine.any() and not mine[: int(mine.sum())].all():
            return False
    return True


def test_each_thread_runs_its_own_range_first():
    """Owned ranges: a worker starts at the front of its own range (chunk 8 of 16 on two threads),
    however late it comes; with one shared range it took the next free chunk (0, or 1 where the
    caller claimed 0 first: the caller's chunk 0 waits until a worker has started). In every job,
    a range's chunks its owner ran come before those other threads took (from the back), so the
    rows one op gave a thread are the rows the next op gives it."""
    pool._test_sum(2, 10, 1)     # a worker created by a job may start after it: start one first
    assert pool._test_worker_first(2, 16) == 8
    pool._set_owned_ranges(False)
    try:
        assert pool._test_worker_first(2, 16) in (0, 1)
    finally:
        pool._set_owned_ranges(True)
    for _ in range(20):
        who = pool._test_who(2, 16, 1)
        assert (who >= 0).all() and _owner_prefixes_then_takers(who, 2), who


def test_caller_finishes_without_workers():
    """Workers held off the job: the caller must take every chunk itself and return (a fork-join
    runtime would wait for them). Run in a child so that a wait that never ends fails the test
    by its timeout instead of hanging the suite."""
    code = (
        "import numpy as np\n"
        "from workbench_ext import pool\n"
        "pool._test_sum(2, 10, 1)\n"                       # start the workers
        "pool._hold_workers(True)\n"
        "s0 = pool.stats()\n"
        "for _ in range(20):\n"
        "    out = pool._test_sum(2, 300, 1)\n"
        "    assert (out == np.arange(300)).all()\n"
        "s1 = pool.stats()\n"
        "assert s1['chunks_by_workers'] == s0['chunks_by_workers'], (s0, s1)\n"
        "assert s1['chunks_by_caller'] - s0['chunks_by_caller'] == 20 * 300, (s0, s1)\n"
        "print('OK')\n"
    )
    _run_child(code)


@pytest.mark.parametrize("spin_us,threads,owned,per_chunk", [(0, 2, True, False), (200, 2, True, False), (200, 3, True, False),
                                                          (200, 2, False, False), (200, 2, True, True)])
def test_back_to_back_jobs_run_every_index_once(spin_us, threads, owned, per_chunk):
    """A million jobs back to back, alternating 1-3 and 64 chunks that take no time: a worker
    finishing one job's last chunk meets the caller publishing the next. Publishing a job in one
    store once let such a worker claim a chunk of the new job under the old generation (a
    chunk ran twice, and the caller could return while it still ran: wrong kernel outputs and a
    segfault in `workbench bench`); the stress found 2-15 bad jobs in 200,000 before the fix.
    The caller returns when the chunks counted as done reach the job's count; each thread counts
    its chunks once it has run them all (`per_chunk`: each chunk as it ends, the A/B switch), and a
    thread counting its chunks before running them made this test fail. In a child: a race that
    crashes or hangs fails this test instead of the suite."""
    code = (
        "from workbench_ext import pool\n"
        f"pool.set_spin_us({spin_us})\n"
        f"pool._set_owned_ranges({owned})\n"
        f"pool._set_done_per_chunk({per_chunk})\n"
        f"bad = pool._test_stress({threads}, 1_000_000)\n"
        "assert bad == 0, f'{bad} of 1,000,000 jobs ran an index other than exactly once'\n"
        "print('OK')\n"
    )
    _run_child(code)


def _run_child(code: str) -> None:
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == "OK", run.stderr[-2000:]


@pytest.mark.parametrize("cls", ["DenseInt8Linear", "BlockSparseInt8Linear"])
def test_kernel_result_does_not_depend_on_who_runs_chunks(cls):
    """The same output whether the workers share the chunks (in owned ranges or from one shared
    range) or the caller runs them all (in a child, like the test above: a caller that waits for
    held workers would never return)."""
    code = (
        "import numpy as np\n"
        "from workbench_ext import int8, pool\n"
        "rng = np.random.default_rng(0)\n"
        "N, K, M = 96, 200, 70\n"
        "w = rng.integers(-128, 128, size=(N, K)).astype(np.int8)\n"
        "w[:, rng.random(K) < 0.6] = 0\n"
        f"layer = int8.{cls}(w, (rng.random(N).astype(np.float32) + 0.5) * np.float32(0.01),\n"
        "                   rng.standard_normal(N).astype(np.float32))\n"
        "x = rng.standard_normal((M, K)).astype(np.float32)\n"
        "shared = layer(x, num_threads=2)\n"
        "pool._set_owned_ranges(False)\n"
        "assert np.array_equal(shared, layer(x, num_threads=2))\n"
        "pool._set_owned_ranges(True)\n"
        "pool._hold_workers(True)\n"
        "alone = layer(x, num_threads=2)\n"
        "pool._hold_workers(False)\n"
        "assert np.array_equal(shared, alone) and np.array_equal(shared, layer(x, num_threads=1))\n"
        "print('OK')\n"
    )
    _run_child(code)


def _child_sum(queue):
    from workbench_ext import pool as child_pool
    out = child_pool._test_sum(2, 500, 1)
    queue.put((bool((out == np.arange(500)).all()), child_pool.stats()["workers"]))


@pytest.mark.skipif(sys.platform == "win32", reason="fork")
def test_forked_child_gets_its_own_workers():
    pool._test_sum(2, 100, 1)        # the parent has workers; a forked child has none of them
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_sum, args=(queue,))
    child.start()
    ok, workers = queue.get(timeout=60)
    child.join(timeout=60)
    assert ok and workers >= 1 and child.exitcode == 0


def test_concurrent_callers_get_correct_results():
    """A second Python thread calling while a job runs gets its loop run on its own thread."""
    rng = np.random.default_rng(1)
    w = rng.integers(-128, 128, size=(256, 384)).astype(np.int8)
    layer = int8.DenseInt8Linear(w, np.full(256, 0.01, np.float32), np.zeros(256, np.float32))
    xs = [rng.standard_normal((64, 384)).astype(np.float32) for _ in range(4)]
    want = [layer(x, num_threads=1) for x in xs]
    got = [None] * len(xs)

    def work(i):
        for _ in range(20):
            got[i] = layer(xs[i], num_threads=2)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for g, w_ in zip(got, want):
        np.testing.assert_array_equal(g, w_)


def test_spin_setting_and_bad_environment():
    old = pool.spin_us()
    try:
        pool.set_spin_us(0)
        assert pool.spin_us() == 0
        np.testing.assert_array_equal(pool._test_sum(2, 100, 1), np.arange(100))
    finally:
        pool.set_spin_us(old)
    with pytest.raises(ValueError, match="spin_us"):
        pool.set_spin_us(-1)
    run = subprocess.run([sys.executable, "-c", "import workbench_ext.int8"], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "WORKBENCH_POOL_SPIN_US": "fast"})
    assert run.returncode != 0 and "WORKBENCH_POOL_SPIN_US" in run.stderr and "'fast'" in run.stderr


def test_trace_records_each_parallel_job_in_order():
    """pool.trace(): one row per parallel job run inside the block, in order, with its chunk count
    and how many the workers ran; nothing outside the block; at most `capacity` rows."""
    pool._test_sum(2, 10, 1)                      # workers started
    with pool.trace() as t:
        pool._test_sum(2, 40, 1)
        pool._test_sum(2, 10, 5)
        pool._test_sum(1, 10, 1)                  # one thread: runs on the caller, not a job
    pool._test_sum(2, 30, 1)
    jobs = t.jobs
    assert list(jobs["chunks"]) == [40, 2]
    assert (jobs["end_ns"] >= jobs["start_ns"]).all() and jobs["start_ns"][1] >= jobs["end_ns"][0]
    assert ((jobs["by_workers"] >= 0) & (jobs["by_workers"] <= jobs["chunks"])).all()
    assert (jobs["end_ns"] - jobs["start_ns"] >= 20_000).all()    # every chunk waits ~20 us
    with pool.trace(capacity=1) as t:
        pool._test_sum(2, 8, 1)
        pool._test_sum(2, 8, 1)
    assert len(t.jobs) == 1
    with pytest.raises(ValueError, match="capacity"):
        pool.trace(capacity=0)


@pytest.mark.skipif(len(__import__("os").sched_getaffinity(0)) < 2, reason="needs two CPUs to move between")
def test_a_worker_on_its_callers_cpu_moves_off_it_and_is_not_pinned():
    """A worker that starts a job on the CPU its caller is on moves to another allowed CPU, and
    its affinity afterwards is what it was (moved, never pinned: wb_pool_impl.h, threads apart)."""
    import os

    mask = os.sched_getaffinity(0)
    t = threading.Thread(target=lambda: result.append((pool._test_move_apart(), os.sched_getaffinity(0))))
    result = []
    t.start()
    t.join()
    (moved, before, after), mask_after = result[0]
    assert moved and after != before and after in mask
    assert mask_after == mask


def _cpu_list(text: str) -> set[int]:
    """'0-2,5' -> {0, 1, 2, 5} (the kernel's Cpus_allowed_list)."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def _worker_state(name: str) -> tuple[str, set[int]]:
    """(scheduler state letter, allowed CPUs) of this process's thread called `name`."""
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/comm") as f:
            if f.read().strip() != name:
                continue
        with open(f"/proc/self/task/{tid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return fields["State"].split()[0], _cpu_list(fields["Cpus_allowed_list"])
    raise AssertionError(f"no thread named {name!r}")


def _worker_once(want_state: str, done=lambda allowed: True) -> tuple[str, set[int]]:
    """Worker 1's (state, allowed CPUs), polled for up to 5 s until it is in `want_state` with
    `done(allowed)`: it sleeps only when its spin runs out, and a woken worker restores its mask
    only once the scheduler runs it (it can show "R" with the narrowed mask just before)."""
    deadline = time.monotonic() + 5
    while True:
        state, allowed = _worker_state("wb-pool-1")
        if (state == want_state and done(allowed)) or time.monotonic() > deadline:
            return state, allowed
        time.sleep(0.005)


def _job_worker_1_takes_part() -> None:
    """One parallel job that worker 1 ran chunks of. A worker asleep when a job starts may wake
    only after the caller has taken its chunks over; then it never woke, and it still sleeps the
    way the job before left it (seen on a busy host), so a test of how it goes to sleep needs a job
    it joined."""
    for _ in range(100):
        if 1 in pool._test_who(2, 64, 1):   # chunks of ~20 us: an awake worker gets some
            return
    raise AssertionError("worker 1 took no chunk of 100 jobs")


def _sleeping_worker_cpus() -> set[int]:
    """Worker 1's allowed CPUs once it is asleep."""
    return _worker_once("S")[1]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_a_sleeping_worker_waits_off_its_callers_cpu_and_is_not_pinned_when_awake():
    """A worker that goes to sleep narrows its affinity away from the CPU its caller last started
    a job on, so that the wake-up cannot put it on the caller's CPU (where it waited for a
    scheduler tick: wb_pool_impl.h, wb_pool_sleep_away); awake again, it has its whole mask."""
    mask = os.sched_getaffinity(0)
    spin = pool.spin_us()
    try:
        pool.set_spin_us(0)                       # the worker sleeps as soon as a job is done
        pool._set_sleep_apart(True)
        _job_worker_1_takes_part()
        caller = pool._test_range_cpu(0)
        asleep = _sleeping_worker_cpus()
        assert caller in mask and caller not in asleep and asleep and asleep <= mask
        pool._set_sleep_apart(False)              # the A/B switch: sleeps with its whole mask
        _job_worker_1_takes_part()
        assert _sleeping_worker_cpus() == mask
        pool._set_sleep_apart(True)
        pool.set_spin_us(10_000_000)              # after this job it spins: awake, mask restored
        pool._test_sum(2, 64, 1)
        pool._test_sum(2, 64, 1)
        state, awake = _worker_once("R", lambda allowed: allowed == mask)
        assert state == "R" and awake == mask
    finally:
        pool._set_sleep_apart(True)
        pool.set_spin_us(spin)
        pool._test_sum(2, 64, 1)                  # the worker's next wait uses the usual spin


def test_apart_setting_and_bad_environment():
    """WORKBENCH_POOL_APART / set_apart turn the moving off and on; jobs run either way; a bad
    value fails at import with a message that names the variable."""
    import os

    try:
        pool.set_apart(False)
        assert pool.apart() is False
        np.testing.assert_array_equal(pool._test_sum(2, 100, 1), np.arange(100))
        pool.set_apart(True)
        assert pool.apart() is True
        np.testing.assert_array_equal(pool._test_sum(2, 100, 1), np.arange(100))
    finally:
        pool.set_apart(True)
    assert "moves" in pool.stats()
    run = subprocess.run([sys.executable, "-c", "import workbench_ext.pool as p; print(p.apart())"],
                         capture_output=True, text=True, timeout=60, env={**os.environ, "WORKBENCH_POOL_APART": "0"})
    assert run.returncode == 0 and run.stdout.strip() == "False"
    run = subprocess.run([sys.executable, "-c", "import workbench_ext.int8"], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "WORKBENCH_POOL_APART": "yes"})
    assert run.returncode != 0 and "WORKBENCH_POOL_APART" in run.stderr and "'yes'" in run.stderr


def _import_order_env(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_importing_workbench_before_torch_gives_torchs_openmp_a_short_spin():
    # libgomp reads its spin count when torch loads it: `import workbench` must set it first
    # (torch's default ~10 ms spin after each op shares the cores with the pool's threads)
    code = ("import os, sys; import workbench; assert 'torch' not in sys.modules; import torch; "
            "print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'))")
    assert _import_order_env(code) == "20000 PASSIVE"
    assert _import_order_env(code, GOMP_SPINCOUNT="300000") == "300000 PASSIVE"   # the user's value wins
    assert _import_order_env(code, OMP_WAIT_POLICY="ACTIVE") == "20000 ACTIVE"


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_wake_rouses_a_sleeping_worker_without_giving_it_work():
    """`pool.wake()` wakes a sleeping worker, which then spins for its next job (state R), runs no
    chunk and counts in stats()["wakes"]; jobs after it run every index once. The engine calls it at the start of every forward, so a worker's
    wake-up overlaps the input checks (results/bench/zen5-wake)."""
    spin = pool.spin_us()
    try:
        pool.set_spin_us(0)                       # the worker sleeps as soon as a job is done
        pool._test_sum(2, 64, 1)
        assert _worker_once("S")[0] == "S"
        pool.set_spin_us(10_000_000)              # once woken it spins rather than sleeping again
        before = pool.stats()
        pool.wake()
        state, _ = _worker_once("R")
        after = pool.stats()
        assert state == "R" and after["wakes"] == before["wakes"] + 1
        assert (after["jobs"], after["chunks_by_workers"]) == (before["jobs"], before["chunks_by_workers"])
        np.testing.assert_array_equal(pool._test_sum(2, 500, 1), np.arange(500))
    finally:
        pool.set_spin_us(spin)
        pool._test_sum(2, 64, 1)


def test_a_forward_wakes_the_pool_before_it_checks_its_inputs(tiny_bert, monkeypatch):
    """`Engine.__call__` wakes the kernels' pool first, before the inputs are checked: the
    compiled one-call path (`Int8Encoder.forward_call`) before its checks, the checked path
    before `check_inputs`; even a call with bad inputs (refused, naming them) has woken it."""
    import workbench.runtime.engine as engine_module
    from workbench_ext import encoder as encoder_module

    from workbench.runtime import compile_model
    from workbench.runtime import kernels as K

    engine = compile_model(tiny_bert)
    events = []
    monkeypatch.setattr(K, "wake_pool", lambda: events.append("wake"))
    monkeypatch.setattr(encoder_module, "_pool_wake", lambda: events.append("wake"))
    check = engine_module.check_inputs
    monkeypatch.setattr(engine_module, "check_inputs", lambda *a: events.append("check") or check(*a))
    ids = np.ones((1, 8), np.int64)
    engine(ids, np.ones_like(ids))   # the one-call path: no Python check
    assert events == ["wake"]
    events.clear()
    engine(ids.astype(np.int32), np.ones_like(ids))   # int32: the checked path
    assert events[0] == "wake" and "check" in events
    events.clear()
    with pytest.raises(ValueError, match="input_ids"):
        engine(np.ones(8, np.int64))
    assert events[0] == "wake" and "check" in events
    events.clear()
    engine._encoder = None   # the per-op path (no compiled call to wake it): the checked path wakes it
    engine(ids, np.ones_like(ids))
    assert events == ["wake", "check"]


def test_the_fields_a_thread_spins_on_have_cache_lines_of_their_own():
    """Workers spin on `state` and the caller on `done`; a store of the other side's into the same
    line (the job's fields, the counters) would first take the line back from the spinning core
    (results/bench/zen5-b1-order/pool-lines/: batch-1 forwards 1-4 % faster near, 2-13 % far)."""
    lines = pool._test_cache_lines()
    assert all(v < 10**6 for v in lines.values()), f"the pool does not start a cache line: {lines}"
    # the job's fields share one line, written before `state` and only read afterwards
    assert lines["job"] == lines["job_end"]
    groups = {k: v for k, v in lines.items() if k != "job_end"}
    assert len(set(groups.values())) == len(groups), f"fields share a cache line: {groups}"
