"""The ONNX Runtime int8 peer chooses its variant the way the bench times engines.

`ort-int8` runs the fastest of four quantized graphs; choosing it from the first calls after
each session starts (warm-up noise) once picked a variant 20 % slower than the best, which
flattered every ratio against the peer. Fake sessions stand in for ORT here: each is fast for
its first calls (the warm-up artefact) and then runs at its own steady speed."""
from __future__ import annotations

import time

import pytest
import torch

from workbench.bench import interleave, ort_engines
from workbench.bench.ort_engines import ORT_INT8_VARIANTS, SELECT_ROUNDS, OrtInt8

STEADY_S = {"plain-pt": 0.006, "plain-pc": 0.002, "opt-pt": 0.004, "opt-pc": 0.008}


class _FakeSession:
    def __init__(self, variant: str) -> None:
        self.variant, self.calls = variant, 0

    def run(self, outputs, feed):
        self.calls += 1
        if self.calls > 6:  # the first calls return at once, whatever the variant's speed
            time.sleep(STEADY_S[self.variant])
        return [None]


@pytest.fixture
def fake_ort(monkeypatch):
    made: dict[str, _FakeSession] = {}

    def onnx_int8(model, cache_dir, model_name, graph, per_channel):
        variant = next(v for v, args in ORT_INT8_VARIANTS.items() if args == (graph, per_channel))
        if variant == "opt-pc":
            raise ValueError("this ORT cannot quantize it")
        return variant, f"notes of {variant}"

    def session(path, threads):
        made[path] = _FakeSession(path)
        return made[path]

    monkeypatch.setattr(ort_engines, "onnx_int8", onnx_int8)
    monkeypatch.setattr(ort_engines, "ort_session", session)
    monkeypatch.setattr(interleave, "QUIET_S", 0.001)
    monkeypatch.setattr("workbench.bench.models.make_inputs",
                        lambda model, b, s: {"input_ids": torch.ones(b, s, dtype=torch.long)})
    return made


def test_ort_int8_picks_the_variant_fastest_in_timed_turns(fake_ort):
    eng = OrtInt8()
    eng.shape = (1, 8)
    eng.setup(None, 1, None, "m")
    assert eng.variant == "plain-pc" and eng.sess is fake_ort["plain-pc"]
    # every variant that loaded was timed in every round: a pause, one untimed call, one timed
    assert all(s.calls == 3 + 2 * SELECT_ROUNDS for s in fake_ort.values())
    assert "best of 4 variants: plain-pc" in eng.notes and "failed: opt-pc (ValueError)" in eng.notes
    assert eng.notes.endswith("notes of plain-pc")
