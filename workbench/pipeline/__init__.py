"""Pipelines: ordered stages of recipes (`spec`), run and measured (`run`), stored and reused
(`store`), and repeated over seeds with aggregated tables (`seeds`)."""
from workbench.pipeline.run import STAGE_COLUMNS, PipelineRun, engine_name, run_pipeline  # noqa: F401
from workbench.pipeline.spec import EvalConfig, PipelineSpec, QuickConfig, StageSpec, parse_stage  # noqa: F401
