"""Run-to-run analysis of repeated benches (item 7 of the runtime issue): whether an engine's runs
differed as wholes (`spread.level_shift_p`), and each ORT configuration's median read back from
the row's note (`variants`), so a single configuration's range can be compared with ours."""
import pytest

from workbench.bench.spread import level_shift_p
from workbench.bench.variants import variant_medians, variant_note


def test_a_whole_run_slower_is_a_level_shift_and_mixed_rounds_are_not():
    fast = [10.0, 10.2, 10.1, 10.3, 10.0, 10.2, 10.1]
    slow = [t * 1.1 for t in fast]                 # every round of one run 10 % slower
    observed, p = level_shift_p([fast, fast[::-1], slow, fast[1:] + fast[:1]], shuffles=2000)
    assert observed == pytest.approx(10.0)           # (11.11 - 10.1) / 10.1, the medians
    assert p < 0.01
    # the same rounds, the slow ones spread over all runs: the medians hardly move, p is large
    mixed = [[10.0, 11.1, 10.2, 11.2, 10.1, 11.0, 10.3]] * 4
    observed, p = level_shift_p(mixed, shuffles=2000)
    assert observed == 0.0 and p == 1.0


def test_level_shift_p_needs_two_runs():
    with pytest.raises(ValueError, match="at least 2 runs"):
        level_shift_p([[1.0, 2.0], []])


def test_variant_note_round_trip():
    note = variant_note(8, "plain-pc", {"plain-pt": 85.456, "plain-pc": 82.93, "opt-pt": 99.2})
    assert note == "best of 3 variants at batch 8: plain-pc, median ms plain-pt=85.46 plain-pc=82.93 opt-pt=99.20"
    assert variant_medians(f"{note}; isa=avx2") == {"plain-pt": 85.46, "plain-pc": 82.93, "opt-pt": 99.2}
    assert variant_medians("isa=avx512_vnni; 26x DenseInt8Linear") == {}


def test_bench_engine_removes_its_exported_files_when_the_process_ends(tmp_path):
    """Results scripts set up ORT engines in many fresh processes (`results/bench/zen5-process-level/`);
    each left ~0.6 GB of ONNX graphs in /tmp until the disk filled."""
    import subprocess
    import sys

    code = ("import tempfile, sys; tempfile.tempdir = sys.argv[1]\n"
            "from workbench.bench.in_process import bench_engine\n"
            "eng, feed = bench_engine('ort-int8-plain-pt', 1, threads=1, seq_len=16, model='tiny-distilbert', warm_calls=1)\n"
            "import os; print(sorted(os.listdir(sys.argv[1])))")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "wb-bench-engine." in done.stdout          # the files were there while it ran
    assert not any(p.name.startswith("wb-bench-engine.") for p in tmp_path.iterdir())
