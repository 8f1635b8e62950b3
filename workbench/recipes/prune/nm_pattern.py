"""N:M sparsity patterns (keep the N largest of every M consecutive weights along a row's input
dimension, the layout of N:M sparse tensor cores): parsing, the per-group keep count on the way
to N:M, the masks, and the config checks that magnitude and movement pruning share."""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from workbench.config import ConfigError, fail


def parse_pattern(pattern: str, where: str, key: str = "pattern") -> tuple[int, int]:
    """`"N:M"` as (N, M) with 1 <= N < M; ConfigError naming `where` and `key` otherwise."""
    parts = pattern.split(":") if isinstance(pattern, str) else []
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        fail(where, key, f'must look like "N:M" (keep N of every M consecutive weights), e.g. "2:4"; got {pattern!r}')
    n, m = int(parts[0]), int(parts[1])
    if not 1 <= n < m:
        fail(where, key, f'"{pattern}" must keep 1 <= N < M weights of every M, e.g. "2:4"')
    return n, m


def nm_keep(sparsity: float, pattern: tuple[int, int]) -> int:
    """Weights kept per group of M at `sparsity` on the way to N:M (M at 0, N at 1 - N/M)."""
    n, m = pattern
    return min(m, max(n, m - int(round(sparsity * m))))


def check_pattern_fits(layers: dict[str, nn.Linear], pattern: tuple[int, int] | None, where: str) -> None:
    """Before any work: every layer's input size must be a multiple of M (ConfigError naming it)."""
    for name, lin in layers.items():
        if pattern is not None and lin.weight.shape[1] % pattern[1]:
            raise ConfigError(f"{where}: pattern {pattern[0]}:{pattern[1]} needs input sizes that are multiples of "
                              f"{pattern[1]}, but '{name}' has {lin.weight.shape[1]}; leave it out of 'targets'")


def nm_mask(scores: torch.Tensor, keep: int, m: int) -> torch.Tensor:
    """A bool mask keeping the `keep` highest `scores` of every M consecutive entries of each row
    (ties by position); rows are a multiple of M long (`check_pattern_fits`)."""
    rows, k = scores.shape
    order = torch.sort(scores.reshape(rows, k // m, m), dim=-1, descending=True, stable=True).indices
    keep_mask = torch.zeros(rows, k // m, m, dtype=torch.bool, device=scores.device)
    keep_mask.scatter_(-1, order[..., :keep], True)
    return keep_mask.reshape(rows, k)


def validate_pattern(cfg: Any, where: str, blocks: tuple[tuple[int, int], ...] = ((1, 1), (1, 4))) -> None:
    """The shared `pattern`/`sparsity`/`block` checks of a pruning config (magnitude, movement):
    with a pattern, `sparsity` must be 1 - N/M (filled in where it may be left out, None), and
    `block` one of `blocks` (per weight, or the recipe's default, which the pattern replaces)."""
    if cfg.pattern is None:
        if cfg.sparsity is None:
            fail(where, "sparsity", 'is required (or set \'pattern\', e.g. "2:4")')
        return
    n, m = parse_pattern(cfg.pattern, where)
    if cfg.sparsity is None:
        cfg.sparsity = 1.0 - n / m
    elif not math.isclose(cfg.sparsity, 1.0 - n / m):
        fail(where, "sparsity", f'is {cfg.sparsity} but pattern "{cfg.pattern}" keeps {n} of {m}: '
             f"set it to {1.0 - n / m:g}")
    if tuple(cfg.block) not in blocks:
        fail(where, "block", f'{list(cfg.block)} cannot combine with pattern "{cfg.pattern}" (it keeps single '
             "weights); leave 'block' out")
