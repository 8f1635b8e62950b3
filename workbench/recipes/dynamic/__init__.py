"""Dynamic-inference recipes (issue #10): `length_adaptive` (LAT / Dynamic-TinyBERT training),
`early_exit` (exit heads trained with self-distillation) and `length_search` (the evolutionary
search of a length configuration under a latency budget). The runtime side is
`workbench.runtime.dynamic`; the torch reference and the saved spec, `workbench.models.dynamic`."""
from workbench.recipes.dynamic.early_exit import EarlyExit  # noqa: F401
from workbench.recipes.dynamic.length_adaptive import LengthAdaptive  # noqa: F401
from workbench.recipes.dynamic.length_search import LengthSearch  # noqa: F401
