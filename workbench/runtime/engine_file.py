"""How a compiled `Engine` is saved and loaded (`EngineFile`, a mixin of
`workbench.runtime.engine.Engine`).

Engines are saved as `engine.safetensors` (int8 weights, scales, biases, fp32 tensors; int8 engines keep word embeddings in fp16) plus
`engine.json` (architecture, shapes, which layers are sparse); no pickle. Packed kernel formats
are rebuilt at load time.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.results import atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:
    from workbench.runtime.engine import Engine

FORMAT = "workbench-engine"
FORMAT_VERSION = 1
WEIGHTS_FILE = "engine.safetensors"
META_FILE = "engine.json"


class EngineFile:
    """`Engine`'s persistence: `serialized()`, `save(directory)`, `Engine.load(directory)`."""

    # set by Engine.__init__
    meta: dict[str, Any]
    tensors: dict[str, np.ndarray]

    def serialized(self) -> bytes:
        """The engine's safetensors bytes, as `save` writes them (plus the JSON beside it)."""
        from safetensors.numpy import save

        return save({k: np.ascontiguousarray(v) for k, v in self.tensors.items()},
                    metadata={"format": FORMAT, "version": str(FORMAT_VERSION)})

    def save(self, directory: str | os.PathLike) -> Path:
        d = Path(directory)
        if d.exists() and not d.is_dir():
            raise NotADirectoryError(f"engine.save: '{d}' is a file; an engine is saved as a folder "
                                     f"({META_FILE} + {WEIGHTS_FILE}): give a folder path")
        atomic_write_bytes(d / WEIGHTS_FILE, self.serialized())
        atomic_write_text(d / META_FILE, json.dumps(self.meta, indent=1, sort_keys=True))
        return d

    @classmethod
    def load(cls: type[Engine], directory: str | os.PathLike) -> Engine:
        from safetensors.numpy import load_file

        d = Path(directory)
        if not (d / META_FILE).is_file() or not (d / WEIGHTS_FILE).is_file():
            raise FileNotFoundError(f"{d} does not hold a saved engine ({META_FILE} + {WEIGHTS_FILE})")
        # a file cut short (a copy interrupted) or not written by Engine.save: name it, not the parser's error
        try:
            meta = json.loads((d / META_FILE).read_text(encoding="utf-8"))
            if not isinstance(meta, dict):
                raise ValueError(f"a JSON {type(meta).__name__}, not an object")
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"{d / META_FILE} is not an engine's metadata ({exc}); it is cut short or was not "
                             "written by Engine.save: save the engine again") from None
        try:
            tensors = {k: np.ascontiguousarray(v) for k, v in load_file(str(d / WEIGHTS_FILE)).items()}
        except Exception as exc:  # safetensors raises its own SafetensorError (not an OSError/ValueError)
            raise ValueError(f"{d / WEIGHTS_FILE} is not readable safetensors ({exc}); it is cut short or was "
                             "not written by Engine.save: save the engine again") from None
        return cls(meta, tensors)
