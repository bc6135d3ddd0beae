"""Data layer: every reader, cleaning, and each bad input rejected with a message that says what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fewintent.data import IntentSet, read_intent_file
from fewintent.errors import FewIntentError


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return p


def test_jsonl_with_extra_keys_and_oos(tmp_path):
    rows = [
        {"text": "hi", "intent": "greet", "domain": "x"},
        {"text": "hello", "intent": "greet"},
        {"text": "bye", "intent": "leave"},
        {"text": "see you", "intent": "leave"},
        {"text": "weather?", "intent": "oos"},
    ]
    p = write(tmp_path, "a.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    s = read_intent_file(p)
    assert s.labels == ["greet", "leave"]
    assert s.counts() == {"greet": 2, "leave": 2}
    assert s.oos_texts == ["weather?"]
    assert s.warnings == []


def test_csv_accepts_label_alias_and_quotes(tmp_path):
    p = write(tmp_path, "a.csv", 'Text,Label\n"hi, there",greet\nhello,greet\nbye,leave\n"see you",leave\n')
    s = read_intent_file(p)
    assert s.by_intent() == {"greet": ["hi, there", "hello"], "leave": ["bye", "see you"]}


def test_rasa_yaml_strips_entity_markup(tmp_path):
    content = """version: "3.1"
nlu:
- intent: book_flight
  examples: |
    - book a flight to [Berlin](city)
    - fly me to [Paris]{"entity": "city"}
- synonym: NYC
  examples: |
    - New York
- intent: greet
  examples: |
    - hi
    - hello
"""
    s = read_intent_file(write(tmp_path, "nlu.yml", content))
    assert s.by_intent() == {"book_flight": ["book a flight to Berlin", "fly me to Paris"], "greet": ["hi", "hello"]}


def test_cleaning_strips_dedups_and_reports_singletons():
    s = IntentSet.from_pairs(
        [("  hi  there ", "greet"), ("hi there", "greet"), ("", "greet"), ("hello", "greet"), ("bye", "leave")]
    )
    assert s.by_intent() == {"greet": ["hi there", "hello"], "leave": ["bye"]}
    text = " | ".join(s.warnings)
    assert "1 duplicate" in text and "empty" in text and "single example (leave)" in text


def test_test_data_keeps_duplicates_and_single_intent():
    s = IntentSet.from_pairs([("a", "x"), ("a", "x")], for_training=False)
    assert s.texts == ["a", "a"]


def test_conflicting_labels_keep_first():
    s = IntentSet.from_pairs([("a", "x"), ("a", "y"), ("b", "y"), ("c", "x")])
    assert s.by_intent() == {"x": ["a", "c"], "y": ["b"]}
    assert any("labelled both" in w for w in s.warnings)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.jsonl", "", "the file is empty"),
        ("blank.csv", "text,intent\n , \n", "no usable rows"),
        ("bad.jsonl", '{"text": "a", "intent": "x"}\n{"text": oops}\n', "bad.jsonl:2: not valid JSON"),
        ("cols.csv", "utterance,intent\nhi,greet\n", "no text column"),
        ("nointent.jsonl", '{"text": "a", "tag": "x"}\n', "no intent column"),
        ("one.csv", "text,intent\nhi,greet\nhello,greet\n", "at least 2 in-scope intents"),
        ("bytes.csv", b"text,intent\nhi\xff\xfe,greet\n", "not UTF-8"),
        ("notnlu.yml", "foo: bar\n", "not a Rasa NLU file"),
        ("broken.yml", "nlu: [\n", "not valid YAML"),
        ("array.jsonl", "[1, 2]\n", "expected an object"),
    ],
)
def test_bad_files_are_rejected_with_a_clear_message(tmp_path, name, content, message):
    with pytest.raises(FewIntentError, match=message.replace("(", r"\(")):
        read_intent_file(write(tmp_path, name, content))


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FewIntentError, match="no such file"):
        read_intent_file(tmp_path / "nope.jsonl")
    with pytest.raises(FewIntentError, match="is a directory"):
        read_intent_file(tmp_path)


def test_huge_text_is_cut(tmp_path):
    s = IntentSet.from_pairs([("x" * 10_000, "a"), ("y", "a"), ("z", "b")])
    assert len(s.texts[0]) == 2000
    assert any("longer than" in w for w in s.warnings)


def test_hf_dataset_with_column_mapping_and_classlabel(tmp_path):
    import datasets

    from fewintent.data import load_hf_intents

    features = datasets.Features(
        {"utterance": datasets.Value("string"), "label": datasets.ClassLabel(names=["greet", "leave"])}
    )
    ds = datasets.Dataset.from_dict({"utterance": ["hi", "hello", "bye", "ciao"], "label": [0, 0, 1, 1]}, features)
    ds.to_parquet(str(tmp_path / "train.parquet"))
    s = load_hf_intents(
        "parquet",
        data_files={"train": str(tmp_path / "train.parquet")},
        text_column="utterance",
        intent_column="label",
    )
    assert s.by_intent() == {"greet": ["hi", "hello"], "leave": ["bye", "ciao"]}
    with pytest.raises(FewIntentError, match="no column 'text'"):
        load_hf_intents("parquet", data_files={"train": str(tmp_path / "train.parquet")}, intent_column="label")
