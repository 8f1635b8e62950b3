"""The `ort-exported` engine of `workbench bench --run`: each stage as the file `workbench export`
writes for it, timed in ONNX Runtime beside the other engines.

    workbench bench --run results/quantization-run --engines torch-fp32,ort-exported,wb-int8

`ort-fp32` / `ort-int8` export a stage's saved fp32 model themselves (and re-quantize it with
ORT's own dynamic grids); `ort-exported` runs what a user would deploy: `<run>/export/<stage>.onnx`
from `workbench.export.export_stage`, i.e. the fp32 graph for an fp32 stage, ORT integer ops for
a `dynamic_int8` stage, a QDQ graph with the stage's own calibrated scales for a static int8 /
SmoothQuant / QAT stage. The export runs here, in the bench's process, once per stage before any
engine starts; its own check (probe logits against the stage's within the export's tolerance)
must pass or no file is written. A file already there is reused while it is current: a sidecar
`<stage>.onnx.check.json` records the check and a fingerprint of what the file was made from
(the stage's definition and metrics, the size and time of its model files); any change
re-exports.

Stages: with this engine, `bench --run` also lists the run's measured stages that have no saved
model (a `dynamic_int8` stage is rebuilt from its source by the pipeline): only `ort-exported`
benches them, against the source stage's saved model (their `max_abs_err_vs_torch_fp32` is then
literally against torch fp32). A stage export refuses (a `workbench_runtime` stage, a partly
quantized one...) gets rows with status "skipped" and export's reason; an unexpected export error
gets "failed". The worker process finds the file through a pointer in its cache folder
(`exported_file`).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from workbench.config import ConfigError

ENGINE = "ort-exported"
POINTER = "exported.json"


@dataclass
class ExportedStage:
    """What `ort-exported` benches for one stage, or why it cannot."""

    stage: str
    status: str  # "ok", "skipped" (export refused the stage) or "failed" (an unexpected error)
    path: str = ""  # the exported .onnx file
    reference: str = ""  # the saved model folder the worker loads (inputs, torch reference logits)
    notes: str = ""
    reason: str = ""
    reused: bool = False


def run_stage_names(folder: Path) -> list[str]:
    """The stages `metrics.json` says the run measured, in run order."""
    from workbench.results import read_json

    metrics = folder / "metrics.json"
    return [m["stage"] for m in read_json(metrics).get("stages", [])] if metrics.exists() else []


def reference_models(folder: Path, saved: dict[str, Path]) -> dict[str, Path | None]:
    """Stage -> the saved model folder that stands for it: its own, else (a stage the pipeline
    rebuilds, never saves) the nearest stage it starts from (`from:`, else the previous) that has one."""
    from workbench.pipeline.spec import PipelineSpec

    spec = PipelineSpec.from_yaml(folder / "recipe.yaml")
    names = [s.name for s in spec.stages]
    out: dict[str, Path | None] = {}
    for name in dict.fromkeys([*run_stage_names(folder), *saved]):
        i: int | None = names.index(name) if name in names else None
        while i is not None and names[i] not in saved:
            src = spec.stages[i].source
            i = names.index(src) if src is not None else (i - 1 if i else None)
        out[name] = saved[names[i]] if i is not None else saved.get(name)
    return out


def _fingerprint(folder: Path, stage: str, reference: Path | None) -> str:
    """What the exported file was made from: the stage's recipe and metrics entry, and the
    size and modification time of every file of the model it loads from."""
    from workbench.pipeline.spec import PipelineSpec
    from workbench.pipeline.store import stage_hash
    from workbench.results import read_json

    spec = PipelineSpec.from_yaml(folder / "recipe.yaml")
    stages = {s.name: s for s in spec.stages}
    measured = {m["stage"]: m for m in read_json(folder / "metrics.json").get("stages", [])}
    files = sorted((p.relative_to(reference).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
                   for p in reference.rglob("*") if p.is_file()) if reference is not None and reference.is_dir() else []
    return stage_hash({"stage": stages[stage].to_dict() if stage in stages else None,
                       "metrics": measured.get(stage), "files": files, "format": "onnx"})


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".check.json")


def _current(path: Path, fingerprint: str) -> dict[str, Any] | None:
    """The sidecar of an exported file still current for `fingerprint`, else None."""
    side = _sidecar(path)
    if not (path.is_file() and side.is_file()):
        return None
    try:
        info = json.loads(side.read_text())
    except ValueError:
        return None
    st = path.stat()
    same = (info.get("fingerprint"), info.get("size"), info.get("mtime_ns")) == (fingerprint, st.st_size, st.st_mtime_ns)
    return info if same else None


def _describe(info: dict[str, Any]) -> str:
    return (f"{info['kind']} export {Path(info['path']).name} ({info['notes']}); export check on {info['examples']} "
            f"probe texts: max |Δlogit| {info['max_abs_diff']:.3g} <= {info['bound']:.3g}, "
            f"argmax agreement {info['argmax_agreement']:.2f}")


def export_stages(folder: Path, stages: Sequence[str], references: dict[str, Path | None],
                  log: Callable[[str], None] = print) -> dict[str, ExportedStage]:
    """Export each of `stages` of the run in `folder` to `<folder>/export/<stage>.onnx` (or reuse
    a current one); never raises for a stage: a refusal is "skipped", anything else "failed"."""
    from workbench.export import export_stage
    from workbench.results import atomic_write_text

    out: dict[str, ExportedStage] = {}
    for stage in stages:
        ref = references.get(stage)
        dest = folder / "export" / f"{stage}.onnx"
        fingerprint = _fingerprint(folder, stage, ref)
        info = _current(dest, fingerprint)
        reused = info is not None
        try:
            if info is None:
                res = export_stage(folder, stage, "onnx", dest)
                st = dest.stat()
                info = {**{k: v for k, v in asdict(res).items() if k != "path"}, "path": str(dest),
                        "fingerprint": fingerprint, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
                atomic_write_text(_sidecar(dest), json.dumps(info, indent=1))
            if ref is None:
                raise ConfigError(f"stage '{stage}' exported, but the run holds no saved model for it or for the "
                                  "stage it starts from, to draw inputs and reference logits from")
            got = ExportedStage(stage, "ok", str(dest), str(ref), _describe(info) + ("; reused" if reused else ""),
                                reused=reused)
        except ConfigError as exc:
            got = ExportedStage(stage, "skipped", reason=str(exc))
        except Exception as exc:  # the bench goes on; the row says what happened
            got = ExportedStage(stage, "failed", reason=f"export: {type(exc).__name__}: {exc}"[:400])
        log(f"  {ENGINE} {stage}: " + (f"{'reused' if reused else 'exported'} {dest}" if got.status == "ok"
                                        else f"{got.status}: {got.reason}"))
        out[stage] = got
    return out


def write_pointer(cache_dir: Path, exported: ExportedStage) -> Path:
    """Leave the worker process the file to load (see `exported_file`); returns the folder."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    (cache_dir / POINTER).write_text(json.dumps({"stage": exported.stage, "path": exported.path,
                                                 "notes": exported.notes}))
    return cache_dir


def exported_file(cache_dir: Path, model_name: str) -> tuple[Path, str]:
    """In the engine's process: (the exported file, its notes), as `write_pointer` left them."""
    pointer = Path(cache_dir) / POINTER
    if not pointer.is_file():
        raise ConfigError(f"{ENGINE} runs the file `workbench export` wrote for a run's stage; it has none for "
                          f"'{model_name}': use it with `workbench bench --run RUN`")
    info = json.loads(pointer.read_text())
    return Path(info["path"]), info["notes"]


def skipped_rows(exported: ExportedStage, batches: Sequence[int], threads: int, seq_len: int,
                 runs: int) -> list[dict[str, Any]]:
    """speed.csv rows for a stage `ort-exported` cannot bench: one per batch, with the reason."""
    return [{"model": exported.stage, "engine": ENGINE, "threads": threads, "seq_len": seq_len, "runs": runs,
             "batch": int(b), "status": exported.status, "error": exported.reason} for b in batches]
