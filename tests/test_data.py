"""Tasks: deterministic stratified splits, no overlap, embedded and local loaders, metrics."""
from __future__ import annotations

import json

import numpy as np
import pytest

from workbench.config import ConfigError
from workbench.data import classification_metrics, load_task


@pytest.fixture(scope="module")
def rt():
    return load_task("rt-sentiment", seed=0)


def test_rt_sentiment_split_is_deterministic_and_disjoint(rt):
    again = load_task("rt-sentiment", seed=0)
    for s in ("train", "validation", "test"):
        assert again.splits[s]["text"] == rt.splits[s]["text"]
    sets = {s: set(rt.splits[s]["text"]) for s in ("train", "validation", "test")}
    assert not sets["train"] & sets["test"]
    assert not sets["train"] & sets["validation"]
    assert not sets["validation"] & sets["test"]
    other = load_task("rt-sentiment", seed=1)
    assert other.splits["test"]["text"] != rt.splits["test"]["text"]


def test_rt_sentiment_contents(rt):
    n = {s: len(rt.splits[s]) for s in rt.splits}
    total = sum(n.values())
    assert 9000 < total < 10605  # 10,605 sentences minus the near-neutral band and duplicates
    assert abs(n["train"] / total - 0.8) < 0.01 and abs(n["test"] / total - 0.1) < 0.01
    assert rt.label_names == ["negative", "positive"]
    for s in rt.splits:  # stratified: the same class balance in every split
        frac = np.mean(rt.splits[s]["label"])
        assert abs(frac - np.mean(rt.splits["train"]["label"])) < 0.02


def test_bbc_labels_come_from_folder_names():
    task = load_task("bbc-news", seed=0)
    assert task.label_names == ["business", "entertainment", "politics", "sports", "tech"]
    texts = task.splits["train"]["text"]
    labels = task.splits["train"]["label"]
    sport = [t for t, y in zip(texts, labels) if y == task.label_names.index("sports")]
    assert any(w in " ".join(sport[:50]).lower() for w in ("match", "cup", "champion", "coach"))


def test_local_csv_tsv_jsonl(tmp_path):
    rows = [(f"text number {i} {'good' if i % 2 else 'bad'}", "pos" if i % 2 else "neg") for i in range(60)]
    (tmp_path / "d.csv").write_text("sentence,y\n" + "".join(f"{t},{y}\n" for t, y in rows))
    (tmp_path / "d.tsv").write_text("sentence\ty\n" + "".join(f"{t}\t{y}\n" for t, y in rows))
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"sentence": t, "y": y}) + "\n" for t, y in rows))
    for f in ("d.csv", "d.tsv", "d.jsonl"):
        task = load_task({"name": str(tmp_path / f), "text_column": "sentence", "label_column": "y"})
        assert task.label_names == ["neg", "pos"]
        assert sum(len(task.splits[s]) for s in task.splits) == 60
        assert set(task.splits["train"].column_names) == {"text", "label"}


def test_local_parquet_and_json_array_files_and_a_folder_of_them(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"sentence": f"text number {i}", "y": "pos" if i % 2 else "neg"} for i in range(60)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    (tmp_path / "d.json").write_text(json.dumps(rows, indent=1))  # one array, over many lines
    for f in ("d.parquet", "d.json"):
        task = load_task({"name": str(tmp_path / f), "text_column": "sentence", "label_column": "y"})
        assert task.label_names == ["neg", "pos"] and sum(len(task.splits[s]) for s in task.splits) == 60
    folder = tmp_path / "folder"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist(rows[:50]), folder / "train.parquet")
    pq.write_table(pa.Table.from_pylist(rows[50:]), folder / "test.parquet")
    (folder / "test.md").write_text("notes on the test split\n")  # not a table: not read as the split
    task = load_task({"name": str(folder), "text_column": "sentence", "label_column": "y"})
    assert task.splits["test"]["text"] == [r["sentence"] for r in rows[50:]]
    # bad rows are named by row (item of the array), as lines are in a text file
    pq.write_table(pa.Table.from_pylist(rows[:5] + [{"sentence": " ", "y": "pos"}]), tmp_path / "blank.parquet")
    (tmp_path / "odd.json").write_text(json.dumps(rows[:3] + [5]))
    (tmp_path / "not.parquet").write_text("hello")
    for f, says in (("blank.parquet", "text column 'sentence' is blank or not a string on 1 row \\(row 6: ' '\\)"),
                    ("odd.json", "item 4 of the array is not a JSON object \\(e.g. 5\\)"),
                    ("not.parquet", "could not be read as Parquet")):
        with pytest.raises(ConfigError, match=f"task file '{tmp_path / f}'.*{says}"):
            load_task({"name": str(tmp_path / f), "text_column": "sentence", "label_column": "y"})


def test_a_hugging_face_dataset_saved_to_disk_is_a_task(tmp_path):
    import datasets

    rows = {"sentence": [f"text number {i}" for i in range(60)], "y": [i % 2 for i in range(60)]}
    features = datasets.Features({"sentence": datasets.Value("string"), "y": datasets.ClassLabel(names=["neg", "pos"])})
    whole = datasets.Dataset.from_dict(rows, features=features)
    datasets.DatasetDict({"train": whole.select(range(40)), "dev": whole.select(range(40, 50)),
                          "test": whole.select(range(50, 60))}).save_to_disk(str(tmp_path / "dict"))
    whole.save_to_disk(str(tmp_path / "one"))
    task = load_task({"name": str(tmp_path / "dict"), "text_column": "sentence", "label_column": "y"})
    assert task.label_names == ["neg", "pos"]  # the ClassLabel's names
    assert [len(task.splits[s]) for s in ("train", "validation", "test")] == [40, 10, 10]  # dev read as validation
    task = load_task({"name": str(tmp_path / "one"), "text_column": "sentence", "label_column": "y"})
    assert sum(len(task.splits[s]) for s in task.splits) == 60 and len(task.splits["test"]) == 6  # carved
    with pytest.raises(ConfigError, match="'subset' 'x' is for hf: datasets"):
        load_task({"name": str(tmp_path / "one"), "text_column": "sentence", "label_column": "y", "subset": "x"})
    with pytest.raises(ConfigError, match="label_column 'label' not in split 'train'"):
        load_task({"name": str(tmp_path / "one"), "text_column": "sentence"})


def test_local_folder_keeps_given_splits(tmp_path):
    for split, n in (("train", 40), ("test", 10)):
        (tmp_path / f"{split}.csv").write_text("text,label\n" + "".join(f"{split} {i},{i % 2}\n" for i in range(n)))
    task = load_task(str(tmp_path))
    assert len(task.splits["test"]) == 10  # given test split kept as is
    assert len(task.splits["train"]) + len(task.splits["validation"]) == 40
    assert task.label_names == ["0", "1"]


def test_hf_datasets_path_with_local_files(tmp_path, monkeypatch):
    """The `hf:` loader goes through datasets.load_dataset; here it reads a local csv builder."""
    import datasets

    (tmp_path / "train.csv").write_text("text,label\n" + "".join(f"t{i},{i % 3}\n" for i in range(90)))
    real = datasets.load_dataset
    monkeypatch.setattr(datasets, "load_dataset",
                        lambda name, subset=None: real("csv", data_files={"train": str(tmp_path / "train.csv")}))
    task = load_task("hf:my/dataset")
    assert task.num_labels == 3 and sum(len(task.splits[s]) for s in task.splits) == 90


@pytest.mark.parametrize("allow, advice", [("", "workbench is offline by default: set WORKBENCH_ALLOW_DOWNLOAD=1"),
                                          ("1", "check the name")])
def test_hf_dataset_that_cannot_be_loaded_is_named(monkeypatch, allow, advice):
    import datasets

    def unreachable(name, subset=None):
        raise ConnectionError(f"Couldn't reach '{name}' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    monkeypatch.setenv("WORKBENCH_ALLOW_DOWNLOAD", allow)
    with pytest.raises(ConfigError, match=f"task 'hf:some/data': Hugging Face dataset 'some/data' could not be "
                                          f"loaded .*Couldn't reach.*; {advice}"):
        load_task("hf:some/data")


def test_bad_task_inputs_are_named(tmp_path):
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        load_task("nope")
    (tmp_path / "d.csv").write_text("a,b\nx,1\n")
    with pytest.raises(ConfigError, match="text_column 'text' not found"):
        load_task(str(tmp_path / "d.csv"))
    with pytest.raises(ConfigError, match="max_length"):
        load_task({"name": "rt-sentiment", "max_length": 2})


def test_metrics_against_hand_computation():
    m = classification_metrics(np.array([0, 1, 1, 0, 2]), np.array([0, 1, 0, 0, 1]), 3)
    assert m["accuracy"] == pytest.approx(3 / 5)
    # class 0: tp=2 fp=0 fn=1 -> 0.8; class 1: tp=1 fp=1 fn=1 -> 0.5; class 2: tp=0 fp=1 fn=0 -> 0
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 0.0) / 3)


def test_a_text_pair_task_reaches_the_model_as_a_pair(tmp_path, word_tokenizer, monkeypatch):
    from workbench.data import tokenize_task
    from workbench.data.pairs import PAIR_MARK, split_texts

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))  # tokenized here, not read from a cache

    rows = [(f"w{i} w{i + 1}", f"w{i + 2}", "same" if i % 2 else "other") for i in range(60)]
    (tmp_path / "p.csv").write_text("premise,hypothesis,y\n" + "".join(f"{a},{b},{y}\n" for a, b, y in rows))
    cfg = {"name": str(tmp_path / "p.csv"), "text_column": "premise", "text_pair_column": "hypothesis",
           "label_column": "y"}
    task = load_task(cfg)
    first, second = split_texts(task.splits["train"]["text"])
    assert second is not None and all(f"{a},{b}" in {f"{r[0]},{r[1]}" for r in rows} for a, b in zip(first, second))
    data = tokenize_task(task, word_tokenizer)
    ex = data["train"][0]
    ids, types = ex["input_ids"].tolist(), ex["token_type_ids"].tolist()
    sep = word_tokenizer.sep_token_id
    assert ids.count(sep) == 2 and types == [0] * (ids.index(sep) + 1) + [1] * (len(ids) - ids.index(sep) - 1)
    # the single-text reading of the same file is another task (its fingerprint too)
    assert load_task({**cfg, "text_pair_column": None}).fingerprint != task.fingerprint
    (tmp_path / "bad.csv").write_text("premise,hypothesis,y\na,b,x\nc, ,y\n")
    with pytest.raises(ConfigError, match="text column 'hypothesis' is blank or not a string on 1 row"):
        load_task({**cfg, "name": str(tmp_path / "bad.csv")})
    with pytest.raises(ConfigError, match="text_pair_column 'nope' not found"):
        load_task({**cfg, "text_pair_column": "nope"})
    with pytest.raises(ConfigError, match="'text_pair_column' must name a column other than"):
        load_task({**cfg, "text_pair_column": "premise"})
    (tmp_path / "mark.csv").write_text(f"text,label\nx{PAIR_MARK}y,a\nz,b\n")
    with pytest.raises(ConfigError, match="holds the character U\\+E000"):
        load_task(str(tmp_path / "mark.csv"))
