"""workbench.bench.builds: two builds taking turns as separate processes (the A/B scripts)."""
from __future__ import annotations

import pytest

from workbench.bench.builds import ab_script, builds_in_turns, median_in_build

CHILD = "import os, sys; print('x'); print(float(sys.argv[1]) * (2 if os.environ.get('PYTHONPATH') else 1))"


def test_median_in_build_passes_the_arguments_and_puts_the_checkout_on_pythonpath(tmp_path):
    assert median_in_build(CHILD, [1.5], None) == 1.5
    assert median_in_build(CHILD, [1.5], str(tmp_path)) == 3.0


def test_builds_in_turns_prints_each_round_and_the_median_ratio(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PYTHONPATH", raising=False)
    ratios = builds_in_turns(CHILD, [(2.0,), (4.0,)], str(tmp_path), 2, label=lambda c: f"case {c[0]}")
    assert ratios == {"case 2.0": [2.0, 2.0], "case 4.0": [2.0, 2.0]}
    out = capsys.readouterr().out
    assert "case 4.0 round 2: base      8.0 us, new      4.0 us, base / new 2.000" in out
    assert "case 2.0: median base / new 2.000 (min 2.000, max 2.000)" in out


def test_ab_script_refuses_a_base_without_the_extension(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["ab.py", "--base", str(tmp_path)])
    with pytest.raises(SystemExit):
        ab_script("doc", CHILD, [(1.0,)])
    assert "no workbench_ext folder there" in capsys.readouterr().err
