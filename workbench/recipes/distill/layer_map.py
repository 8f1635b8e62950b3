"""Which teacher layer each student layer learns from (TinyBERT's mapping function g).

Layers are numbered from 1 (the first transformer layer) to M (student) or N (teacher); 0 is the
embeddings' output, as in Jiao et al. (2020), "TinyBERT: Distilling BERT for Natural Language
Understanding", where g(0) = 0 and g(M + 1) = N + 1 (the prediction layer, handled apart).

* ``"uniform"``: student layer m <- teacher layer g(m) = round(m * N / M) (TinyBERT's uniform
  strategy; exactly m * N / M when M divides N; halves round up);
* ``"last"``: the student's M layers <- the teacher's last M, m <- N - M + m;
* an explicit ``{student_layer: teacher_layer}``: only the listed student layers are matched
  (key 0 chooses the teacher hidden state the embeddings are matched to; default 0).
"""
from __future__ import annotations

from typing import Any

from workbench.config import fail

STRATEGIES = ("uniform", "last")


def normalize_map(layer_map: Any, where: str, key: str = "layer_map") -> str | dict[int, int]:
    """Check the shape of a `layer_map` setting (ranges are checked in `layer_pairs`, when the
    layer counts are known); an explicit map comes back with int keys and values (YAML/JSON may
    give the keys as strings)."""
    if isinstance(layer_map, str):
        if layer_map not in STRATEGIES:
            fail(where, key, f"must be one of {list(STRATEGIES)} or a mapping {{student_layer: teacher_layer}}, "
                             f"got {layer_map!r}")
        return layer_map
    if not isinstance(layer_map, dict) or not layer_map:
        fail(where, key, f"must be one of {list(STRATEGIES)} or a non-empty mapping {{student_layer: teacher_layer}}, "
                         f"got {layer_map!r}")
    out: dict[int, int] = {}
    for k, v in layer_map.items():
        m = k if isinstance(k, int) and not isinstance(k, bool) else (
            int(k) if isinstance(k, str) and k.strip().isdigit() else None)
        if m is None or m < 0:
            fail(where, f"{key}[{k!r}]", "student layer must be an integer >= 0 (1-based layers, 0 = embeddings)")
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            fail(where, f"{key}[{m}]", f"teacher layer must be an integer >= 0 (1-based layers, 0 = embeddings), got {v!r}")
        out[m] = v
    return out


def layer_pairs(layer_map: str | dict[int, int], student_layers: int, teacher_layers: int,
                where: str, key: str = "layer_map") -> dict[int, int]:
    """{student layer: teacher layer} for the student layers 1..M that are matched (1-based), plus
    0 -> the teacher hidden state the embeddings are matched to. ConfigError naming the entry when
    a layer is out of range."""
    m_, n_ = student_layers, teacher_layers
    layer_map = normalize_map(layer_map, where, key)
    if layer_map == "uniform":
        return {0: 0, **{m: (2 * m * n_ + m_) // (2 * m_) for m in range(1, m_ + 1)}}
    if layer_map == "last":
        if m_ > n_:
            fail(where, key, f"'last' needs a teacher at least as deep as the student: the student has {m_} "
                             f"layers, the teacher {n_}")
        return {0: 0, **{m: n_ - m_ + m for m in range(1, m_ + 1)}}
    pairs = {0: 0}
    for m, t in sorted(layer_map.items()):
        if m > m_:
            fail(where, f"{key}[{m}]", f"student layer {m} is out of range: the student has {m_} layers "
                                       f"(1..{m_}; 0 = embeddings)")
        if t > n_:
            fail(where, f"{key}[{m}]", f"teacher layer {t} is out of range: the teacher has {n_} layers "
                                       f"(1..{n_}; 0 = embeddings)")
        pairs[m] = t
    return pairs
