"""Where finished stages live: `<run>/artifacts/<stage>/` (and, for cached or seed-pinned stages,
a shared copy under the cache), each a saved model plus `done.json` holding the stage key, the
measurement key and the metrics. A stage is reused only when its key matches."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from torch import nn

from workbench.evaluate import is_torch_quantized
from workbench.models.registry import no_hf_progress_bar
from workbench.results import atomic_dir, write_json


def stage_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def saveable(model: nn.Module) -> bool:
    """Plain Hugging Face models are saved after their stage; quantized/compiled ones are rebuilt."""
    return hasattr(model, "save_pretrained") and not is_torch_quantized(model)


class StageStore:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def artifact(self, stage: str) -> Path:
        return self.run_dir / "artifacts" / stage

    def find(self, stage: str, key: str, shared: Path | None) -> tuple[Path, dict[str, Any]] | None:
        """The saved stage with this key (the run's own copy first, then the shared one)."""
        for saved in (self.artifact(stage), shared):
            if saved is not None and (saved / "done.json").exists() and (saved / "model").exists():
                info = json.loads((saved / "done.json").read_text())
                if info.get("key") == key:
                    return saved, info
        return None

    def holds_other(self, stage: str, key: str) -> bool:
        done = self.artifact(stage) / "done.json"
        return done.exists() and json.loads(done.read_text()).get("key") != key

    def save(self, stage: str, model: nn.Module, tokenizer: Any, info: dict[str, Any],
             shared: Path | None) -> None:
        """Write the stage atomically (a reader never sees half a stage)."""
        for target in [self.artifact(stage)] + ([shared] if shared is not None else []):
            with atomic_dir(target) as tmp, no_hf_progress_bar():  # no "Writing model shards" bar
                model.save_pretrained(tmp / "model")
                tokenizer.save_pretrained(tmp / "model")
                write_json(tmp / "done.json", info)
