"""The trainer's data order: seeded, a permutation every epoch, and length-grouped when asked."""
from __future__ import annotations

import statistics

import torch

from workbench.train import TrainConfig, Trainer


def make_trainer(n: int, batch_size: int, group_by_length: bool, seed: int = 0) -> Trainer:
    g = torch.Generator().manual_seed(3)
    data = [{"input_ids": torch.ones(int(torch.randint(2, 60, (1,), generator=g)), dtype=torch.long),
             "labels": torch.tensor(0)} for _ in range(n)]
    cfg = TrainConfig(epochs=2, batch_size=batch_size, group_by_length=group_by_length)
    return Trainer(torch.nn.Linear(1, 1), data, lambda rows: rows, cfg, [], seed=seed, checkpoint_dir=None)


def batches(trainer: Trainer, epoch: int) -> list[list[int]]:
    order, bs = trainer._order(epoch), trainer.cfg.batch_size
    return [order[i:i + bs] for i in range(0, len(order), bs)]


def padded_tokens(trainer: Trainer, epoch: int) -> int:
    lengths = trainer._lengths
    return sum(max(lengths[i] for i in b) * len(b) for b in batches(trainer, epoch))


def test_grouped_order_is_a_seeded_permutation_with_less_padding():
    n, bs = 1003, 16  # 62 full batches and a short one
    grouped, plain = make_trainer(n, bs, True), make_trainer(n, bs, False)
    for epoch in (0, 1):
        order = grouped._order(epoch)
        assert sorted(order) == list(range(n))  # every example once
        assert order == make_trainer(n, bs, True)._order(epoch)  # a pure function of (seed, epoch): resumable
        assert len(batches(grouped, epoch)[-1]) == n % bs  # the short batch stays last
        assert all(len(b) == bs for b in batches(grouped, epoch)[:-1])
    assert grouped._order(0) != grouped._order(1)
    assert grouped._order(0) != make_trainer(n, bs, True, seed=1)._order(0)
    # similar lengths in a batch: far less padding than shuffled batches
    assert padded_tokens(grouped, 0) < 0.75 * padded_tokens(plain, 0)
    lengths = grouped._lengths
    spread = statistics.mean(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches(grouped, 0))
    assert spread < 5
    # batches are not sorted end to end: their order is shuffled
    firsts = [lengths[b[0]] for b in batches(grouped, 0)[:-1]]
    assert firsts != sorted(firsts) and firsts != sorted(firsts, reverse=True)


def test_plain_order_is_a_shuffle():
    t = make_trainer(100, 8, False)
    order = t._order(0)
    assert sorted(order) == list(range(100)) and order != list(range(100))
    assert order == torch.randperm(100, generator=torch.Generator().manual_seed(0)).tolist()
