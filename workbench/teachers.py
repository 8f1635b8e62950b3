"""The teacher service: recipes ask the run for teachers by name.

A teacher is an earlier stage's final model, or any model name or local path (loaded like the
pipeline's `model:`, with its own tokenizer). A teacher whose vocabulary differs from the
student's tokenizes the batch's raw text itself, so logit distillation works across tokenizers;
token-level matching (hidden states, attentions) needs the same tokenizer and says so.

Outputs are computed once per batch for every recipe that asked: each recipe registers what it
needs (`get(name, needs)`), and the first request in a step runs one forward pass with the union.

A teacher asked for logits only computes them per example (one unpadded forward each) and caches
them by raw text, outside any model object, up to a memory bound: an example's teacher logits
are a function of the teacher and the example alone, never of the batch it first appeared in
(padding and batch shape change the last bits of a forward pass). So a resumed stage, a stage
started over under a changed recipe, and a stage that runs after or without its siblings all
read the values an uninterrupted fresh run reads, and the cache can be shared by every stage
that learns from the same teacher. The cache is written next to the run
(`<run>/teacher_cache/<key>-per-example.pt`; older `<key>.pt` files held values computed inside
batches and are not read) at every checkpoint and stage end, so a resumed run need not
recompute it. A teacher that also gives hidden states or attentions runs on the whole batch
anyway, and its logits come from that same forward pass (a function of the batch, which a
resumed run replays). Each teacher's key is the stage key of the stage that produced it (or the
model's path), so a model trained further in a later stage is a different teacher and never
sees the old teacher's outputs.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from workbench.config import ConfigError
from workbench.data.pairs import tokenize_texts
from workbench.forward import MODEL_INPUT_KEYS, ForwardOutputs, forward_with
from workbench.models.families import max_sequence_length


def _same_vocab(a: Any, b: Any) -> bool:
    return a is b or (type(a).__name__ == type(b).__name__ and a.get_vocab() == b.get_vocab())


class Teacher:
    """One frozen teacher: outputs per batch, or logits per example (cached)."""

    def __init__(self, name: str, key: str, model: nn.Module, tokenizer: Any, same_tokenizer: bool,
                 cache_path: Path | None, max_cached: int = 2_000_000) -> None:
        self.name, self.key, self.model, self.tokenizer = name, key, model.eval(), tokenizer
        self.same_tokenizer, self.cache_path, self.max_cached = same_tokenizer, cache_path, max_cached
        self.needs: set[str] = set()
        # another tokenizer's text goes in at most as many tokens as the teacher's position table holds
        self.max_tokens = min(512, max_sequence_length(model) or 512)
        self._logits: dict[str, torch.Tensor] = {}
        if cache_path is not None and cache_path.exists():
            self._logits = torch.load(cache_path, weights_only=True)
        self._dirty = False
        self._step_memo: tuple[dict[str, Any], ForwardOutputs] | None = None

    def require(self, needs: set[str], where: str) -> None:
        if needs and not self.same_tokenizer:
            raise ConfigError(f"{where}: teacher '{self.name}' has a different tokenizer than the student, "
                              f"so its {', '.join(sorted(needs))} do not align token by token; use logit "
                              "distillation with it, or a teacher with the student's tokenizer")
        self.needs |= needs

    def _inputs(self, batch: dict[str, Any]) -> dict[str, Any]:
        if self.same_tokenizer:
            return batch
        enc = tokenize_texts(self.tokenizer, batch["text"], padding=True, truncation=True,
                             max_length=self.max_tokens, return_tensors="pt")
        return dict(enc)

    @torch.no_grad()
    def outputs(self, batch: dict[str, Any]) -> ForwardOutputs:
        """Everything registered for this teacher, for `batch` (one forward per batch, or one per
        example not yet cached when only logits are asked for)."""
        memo = self._step_memo
        if memo is not None and memo[0] is batch:
            return memo[1]
        texts = batch.get("text")
        if self.needs or texts is None:
            out = forward_with(self.model, self._inputs(batch), self.needs)
            out.logits = out.logits.float()
        else:
            out = ForwardOutputs(logits=torch.stack([self._example_logits(batch, i) for i in range(len(texts))]))
        self._step_memo = (batch, out)  # the batch itself, not its id: ids are reused
        return out

    def _example_logits(self, batch: dict[str, Any], i: int) -> torch.Tensor:
        """Row `i`'s logits from the cache, or from a forward pass on that example alone, with
        its padding removed: the same values whatever batch the example arrives in."""
        text = batch["text"][i]
        cached = self._logits.get(text)
        if cached is not None:
            return cached
        if self.same_tokenizer:
            real = batch["attention_mask"][i].bool() if "attention_mask" in batch else None
            one = {k: (batch[k][i][real] if real is not None else batch[k][i])[None] for k in MODEL_INPUT_KEYS
                   if k in batch}
            one["text"] = [text]
        else:
            one = {"text": [text]}
        row = forward_with(self.model, self._inputs(one)).logits[0].float()
        if len(self._logits) < self.max_cached:
            self._logits[text] = row
            self._dirty = True
        return row

    def save(self) -> None:
        if self._dirty and self.cache_path is not None:
            from workbench.results import atomic_write_bytes
            import io

            buf = io.BytesIO()
            torch.save(self._logits, buf)
            atomic_write_bytes(self.cache_path, buf.getvalue())
            self._dirty = False


class TeacherService:
    """Teachers by name for one run; `get` loads each once."""

    def __init__(self, student_tokenizer: Any, num_labels: int, run_dir: Path,
                 stage_model: Callable[[str], tuple[nn.Module, str] | None]) -> None:
        self.student_tokenizer, self.num_labels, self.run_dir = student_tokenizer, num_labels, run_dir
        self.stage_model = stage_model
        self._teachers: dict[str, Teacher] = {}

    def get(self, name: str, needs: set[str] | None = None, where: str = "teacher") -> Teacher:
        teacher = self._teachers.get(name)
        if teacher is None or not self._current(teacher):
            teacher = self._load(name, where)
            self._teachers[name] = teacher
        teacher.require(set(needs or ()), where)
        return teacher

    def _current(self, teacher: Teacher) -> bool:
        found = self.stage_model(teacher.name)
        return found is None or found[1] == teacher.key

    def _load(self, name: str, where: str) -> Teacher:
        found = self.stage_model(name)
        if found is not None:
            model, key = found
            tokenizer, same = self.student_tokenizer, True
        else:
            from workbench.models import load_model, resolve_model_path
            from workbench.models.registry import ModelNotFound

            try:
                path, _ = resolve_model_path(name)
                model, tokenizer = load_model(name, self.num_labels)
            except (ModelNotFound, OSError) as exc:
                raise ConfigError(f"{where}: teacher '{name}' is neither an earlier stage nor a loadable model: {exc}") from exc
            key = "model-" + hashlib.sha256(f"{path}|{self.num_labels}".encode()).hexdigest()[:16]
            same = _same_vocab(tokenizer, self.student_tokenizer)
        return Teacher(name, key, model, tokenizer, same, self.run_dir / "teacher_cache" / f"{key}-per-example.pt")

    def save(self) -> None:
        """Write every teacher's logit cache (called at each checkpoint and stage end)."""
        for t in self._teachers.values():
            t.save()
