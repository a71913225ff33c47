"""LLaVA-style JSON and `datasets` loaders: the multi-turn, multi-image and image-less policy,
and errors that name the file and the record."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from masters.data import VQASample, load_splits
from masters.tasks.loaders import load_llava_json, split_by_id
from masters.errors import DataError
from masters.tasks.specs import HFDatasetsTaskSpec as HFDatasetData, LlavaJsonTaskSpec as LlavaJsonData, ShapesTaskSpec as ShapesData


@pytest.fixture
def images(tmp_path):
    for name, color in (("a.png", "red"), ("b.png", "blue")):
        Image.new("RGB", (16, 16), color).save(tmp_path / name)
    return tmp_path


def _write(path, records, jsonl=False):
    if jsonl:
        path.write_text("\n".join(json.dumps(r) for r in records))
    else:
        path.write_text(json.dumps(records))
    return path


def test_single_multi_turn_multi_image_and_text_only_records(images):
    records = [
        {"id": "one", "image": "a.png", "conversations": [
            {"from": "human", "value": "<image>\nwhat color ?"}, {"from": "gpt", "value": "red"}]},
        {"id": "multi", "image": "a.png", "conversations": [
            {"from": "human", "value": "<image>\nwhat color ?"}, {"from": "gpt", "value": "red"},
            {"from": "human", "value": "and the shape ?"}, {"from": "gpt", "value": "square"}]},
        {"id": "two", "image": ["a.png", "b.png"], "conversations": [
            {"from": "human", "value": "<image> <image> which is blue ?"}, {"from": "gpt", "value": "second"}]},
        {"id": "text", "conversations": [{"from": "human", "value": "say hi"}, {"from": "gpt", "value": "hi"}]},
    ]
    samples = load_llava_json(_write(images / "d.json", records))
    by_id = {s.id: s for s in samples}
    assert set(by_id) == {"one", "multi#0", "multi#1", "two", "text"}
    assert by_id["one"].question == "what color ?" and by_id["one"].answer == "red"
    assert by_id["multi#1"].question == "and the shape ?" and by_id["multi#1"].images == by_id["multi#0"].images
    assert len(by_id["two"].images) == 2 and "<image>" not in by_id["two"].question
    assert by_id["text"].images == ()
    assert by_id["one"].load_images()[0].getpixel((0, 0)) == (255, 0, 0)


def test_turns_of_a_record_share_a_split(images):
    records = [{"id": f"r{i}", "conversations": [
        {"from": "human", "value": "q1"}, {"from": "gpt", "value": "a1"},
        {"from": "human", "value": "q2"}, {"from": "gpt", "value": "a2"}]} for i in range(60)]
    spec = LlavaJsonData(path=str(_write(images / "d.jsonl", records, jsonl=True)), validation_fraction=0.2,
                         test_fraction=0.2)
    splits = load_splits(spec)
    assert sum(len(v) for v in splits.values()) == 120
    where = {}
    for split, samples in splits.items():
        for s in samples:
            assert where.setdefault(s.metadata["record_id"], split) == split
    assert all(splits[s] for s in ("train", "validation", "test"))
    assert load_splits(spec) == splits  # stable


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"id": "x", "image": "missing.png", "conversations": [
            {"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}, "image not found"),
        ({"id": "x", "conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "q"}]}, "alternate"),
        ({"id": "x", "conversations": [{"from": "human", "value": "q"}]}, "no answer"),
        ({"id": "x"}, "conversations"),
        ({"id": "x", "conversations": [{"from": "human", "value": "<image> q"}, {"from": "gpt", "value": "a"}]},
         "markers"),
        ({"id": "x", "conversations": [{"from": "human", "value": 3}, {"from": "gpt", "value": "a"}]}, "value"),
        ("just a string", "object"),
    ],
)
def test_malformed_records_name_the_file_and_the_record(images, record, message):
    good = {"id": "ok", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    path = _write(images / "bad.json", [good, record])
    with pytest.raises(DataError, match=message) as err:
        load_llava_json(path)
    assert str(path) in str(err.value) and "record 1" in str(err.value)


def test_bad_jsonl_line_and_duplicate_ids(images):
    path = images / "bad.jsonl"
    path.write_text('{"id": "a", "conversations": []}\n{oops\n')
    with pytest.raises(DataError, match="line 2"):
        load_llava_json(path)
    good = {"id": "same", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    with pytest.raises(DataError, match="duplicate"):
        load_llava_json(_write(images / "dup.json", [good, good]))


def test_image_deleted_after_loading_names_the_sample(images):
    sample = VQASample("s1", (str(images / "gone.png"),), "q", "a")
    with pytest.raises(DataError, match="s1"):
        sample.load_images()


def _table(tmp_path):
    datasets = pytest.importorskip("datasets")

    rows = {
        "id": [f"r{i}" for i in range(30)],
        "img": [Image.new("RGB", (8, 8), "green") for _ in range(29)] + [None],
        "q": [f"question {i}" for i in range(30)],
        "a": ["yes"] * 29 + [7],
        "opts": [["yes", "no"]] * 30,
    }
    features = datasets.Features({"id": datasets.Value("string"), "img": datasets.Image(),
                                  "q": datasets.Value("string"), "a": datasets.Value("string"),
                                  "opts": datasets.Sequence(datasets.Value("string"))})
    rows["a"][-1] = "7"
    return datasets.Dataset.from_dict(rows, features=features)


def test_hf_dataset_from_disk_with_named_columns(tmp_path):
    _table(tmp_path).save_to_disk(str(tmp_path / "ds"))
    spec = HFDatasetData(path=str(tmp_path / "ds"), image_column="img", question_column="q", answer_column="a",
                         choices_column="opts", validation_fraction=0.2, test_fraction=0.2)
    splits = load_splits(spec)
    samples = [s for v in splits.values() for s in v]
    assert len(samples) == 30 and all(v for v in splits.values())
    first = next(s for s in samples if s.id == "r0")
    assert first.question == "question 0" and first.answer == "yes" and first.choices == ("yes", "no")
    assert first.load_images()[0].size == (8, 8)
    assert next(s for s in samples if s.id == "r29").images == ()  # image-less row kept, text-only


def test_hf_dataset_dict_keeps_its_own_splits_and_parquet_loads(tmp_path):
    datasets = pytest.importorskip("datasets")

    table = _table(tmp_path)
    datasets.DatasetDict({"train": table, "test": table.select(range(5))}).save_to_disk(str(tmp_path / "dd"))
    spec = HFDatasetData(path=str(tmp_path / "dd"), image_column="img", question_column="q", answer_column="a",
                         validation_fraction=0.0, test_fraction=0.5)
    splits = load_splits(spec)
    assert len(splits["test"]) == 5 and len(splits["train"]) == 30 and splits["validation"] == []
    table.to_parquet(str(tmp_path / "t.parquet"))
    spec = HFDatasetData(path=str(tmp_path / "t.parquet"), image_column="img", question_column="q", answer_column="a",
                         validation_fraction=0.0, test_fraction=0.0)
    parquet = load_splits(spec)["train"]
    assert len(parquet) == 30 and parquet[0].load_images()[0].size == (8, 8)


def test_hf_dataset_wrong_column_lists_the_columns(tmp_path):
    _table(tmp_path).save_to_disk(str(tmp_path / "ds"))
    spec = HFDatasetData(path=str(tmp_path / "ds"), image_column="image", question_column="q", answer_column="a")
    with pytest.raises(DataError, match="no column 'image'.*columns: id, img"):
        load_splits(spec)


def test_hf_dataset_empty_question_names_the_record(tmp_path):
    datasets = pytest.importorskip("datasets")

    datasets.Dataset.from_dict({"image": [None, None], "question": ["ok", ""], "answer": ["a", "b"]}).save_to_disk(
        str(tmp_path / "e"))
    with pytest.raises(DataError, match="record 1"):
        load_splits(HFDatasetData(path=str(tmp_path / "e")))


def test_load_splits_shapes_and_split_fraction_guard():
    splits = load_splits(ShapesData(n_train=5, n_validation=2, n_test=3, seed=4))
    assert [len(splits[k]) for k in ("train", "validation", "test")] == [5, 2, 3]
    with pytest.raises(DataError, match="below 1"):
        split_by_id([], 0.5, 0.5)
