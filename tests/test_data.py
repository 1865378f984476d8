
import numpy as np
import pandas as pd
import pytest

from superalign.data import TaskData, load_task, make_splits
from superalign.data.registry import balanced_subsample
from superalign.errors import DataError, UnknownNameError


def test_local_csv_jsonl_parquet_load_the_same(tmp_path, toy_csv):
    frame = pd.read_csv(toy_csv)
    frame.to_json(tmp_path / "t.jsonl", orient="records", lines=True)
    frame.to_parquet(tmp_path / "t.parquet")
    a = load_task(str(toy_csv))
    b = load_task(str(tmp_path / "t.jsonl"))
    c = load_task(str(tmp_path / "t.parquet"))
    assert a.fingerprint() == b.fingerprint() == c.fingerprint()
    assert a.label_names == ["0", "1"] and len(a) == 600


def test_string_labels_and_pairs(tmp_path):
    pd.DataFrame({"q": ["a", "b", "c", "d"], "p": ["w", "x", "y", "z"], "y": ["yes", "no", "yes", "no"]}).to_csv(
        tmp_path / "p.csv", index=False)
    t = load_task(str(tmp_path / "p.csv"), text_column="q", pair_column="p", label_column="y")
    assert t.label_names == ["no", "yes"] and t.labels.tolist() == [1, 0, 1, 0]
    assert t.inputs()[0] == "a\nw"


def test_missing_column_names_the_field(tmp_path):
    pd.DataFrame({"sentence": ["a", "b"], "label": [0, 1]}).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(DataError) as e:
        load_task(str(tmp_path / "m.csv"))
    assert "text_column" in str(e.value) and "'text' is missing" in str(e.value) and "sentence" in str(e.value)


def test_labels_outside_declared_classes(tmp_path):
    pd.DataFrame({"text": ["a", "b", "c"], "label": [0, 1, 2]}).to_csv(tmp_path / "l.csv", index=False)
    with pytest.raises(DataError) as e:
        load_task(str(tmp_path / "l.csv"), label_names=["neg", "pos"])
    assert "outside the declared classes" in str(e.value) and "row 2" in str(e.value)


def test_empty_text_and_empty_file(tmp_path):
    pd.DataFrame({"text": ["a", " "], "label": [0, 1]}).to_csv(tmp_path / "e.csv", index=False)
    with pytest.raises(DataError, match="empty"):
        load_task(str(tmp_path / "e.csv"))
    with pytest.raises(DataError, match="no examples"):
        TaskData("t", [], np.array([], dtype=int), ["a", "b"])


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(UnknownNameError) as e:
        load_task("no_such_task")
    assert "imdb" in str(e.value) and "hf:OWNER/NAME" in str(e.value)


def test_splits_are_disjoint_and_deterministic():
    labels = np.array([0, 1] * 100)
    sizes = {"weak_train": 50, "strong_train": 80, "val": 20, "test": 40}
    s1 = make_splits(labels, sizes, seed=3)
    s2 = make_splits(labels, sizes, seed=3)
    all_idx = np.concatenate(list(s1.as_dict().values()))
    assert len(set(all_idx.tolist())) == 190
    for k in sizes:
        assert np.array_equal(s1.as_dict()[k], s2.as_dict()[k])
    assert not np.array_equal(make_splits(labels, sizes, seed=4).test, s1.test)


def test_split_sizes_that_do_not_fit():
    with pytest.raises(DataError) as e:
        make_splits(np.array([0, 1] * 10), {"weak_train": 10, "strong_train": 10, "val": 0, "test": 10}, 0, "tiny")
    assert "splits" in str(e.value) and "has 20" in str(e.value) and "lower" in str(e.value)


def test_one_class_split_is_an_error():
    labels = np.array([0] * 50 + [1] * 2)
    with pytest.raises(DataError, match="only one class"):
        make_splits(labels, {"weak_train": 10, "strong_train": 10, "val": 0, "test": 2}, 0)


def test_balanced_subsample():
    labels = np.array([0] * 90 + [1] * 10)
    idx = balanced_subsample(labels, 40, 0)
    assert len(idx) == 40 and (labels[idx] == 1).sum() == 10  # all of the minority, the rest from the majority
    assert np.array_equal(idx, balanced_subsample(labels, 40, 0))


def test_hf_dataset_roundtrip(toy_csv):
    t = load_task(str(toy_csv))
    ds = t.to_hf()
    assert ds.column_names == ["text", "label"] and len(ds) == len(t)
