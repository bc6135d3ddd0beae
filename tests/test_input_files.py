"""Reading intent and message files, and the rules for intent names: each odd file is read as meant or refused
in one line."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest
from helpers import (
    ROWS,
    SMALL,
    one_line_error,
    read_intent_file_from_text,
    run,
    write_rows,
)

from fewintent import FewIntentError, IntentClassifier, IntentSet
from fewintent.data import read_intent_file
from fewintent.data.intentset import MAX_INTENT_NAME_CHARS, MAX_TEXT_CHARS, check_intent_name
from fewintent.data.io import read_messages
from fewintent.errors import FewIntentWarning

# --- file formats and their mistakes -------------------------------------------------------------------------------


def test_rasa_intent_names_stay_strings(tmp_path):
    p = tmp_path / "nlu.yml"
    p.write_text(
        'version: "3.1"\nnlu:\n- intent: yes\n  examples: |\n    - yes please\n    - sure\n'
        "- intent: 42\n  examples: |\n    - the answer\n    - forty two\n"
        "- intent: null\n  examples: |\n    - nothing\n    - none at all\n"
    )
    assert sorted(read_intent_file(p).labels) == ["42", "null", "yes"]


def test_semicolon_csv_gets_a_delimiter_hint(tmp_path):
    p = tmp_path / "semi.csv"
    p.write_text("text;intent\nhello;greet\nbye;leave\n")
    one_line_error(run("adapt", p, "-o", tmp_path / "m"), "';'-separated")


@pytest.mark.parametrize("value", ["42", "true", "[1, 2]", '{"a": 1}'])
def test_jsonl_text_must_be_a_string(tmp_path, value):
    p = tmp_path / "t.jsonl"
    p.write_text(f'{{"text": {value}, "intent": "a"}}\n{{"text": "b", "intent": "b"}}\n')
    one_line_error(run("adapt", p, "-o", tmp_path / "m"), ":1:", "must be a string")


def test_long_csv_fields_are_cut_like_jsonl(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("text,intent\n" + "".join(f"{t},{i}\n" for t, i in ROWS) + "y" * 200_000 + ",card\n")
    data = read_intent_file(p)
    assert max(map(len, data.texts)) == MAX_TEXT_CHARS and any("cut 1 text" in w for w in data.warnings)


def test_intent_files_that_never_end_or_hold_nul_bytes_are_one_line(tmp_path):
    one_line_error(run("data", "validate", "/dev/zero", "--no-overlap"), "binary")
    p = tmp_path / "d.csv"
    p.write_bytes(b"text,intent\nhello\x00there,a\nbye,b\n")
    with pytest.raises(FewIntentError, match="binary"):
        read_intent_file(p)


def test_deeply_nested_json_is_one_line(tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    write_rows(tmp_path / "d.jsonl", ROWS)
    (tmp_path / "d.jsonl").write_text('{"text": ' + deep + ', "intent": "a"}\n')
    one_line_error(run("data", "validate", tmp_path / "d.jsonl", "--no-overlap"), "nested too deeply")
    (tmp_path / "m.txt").write_text('{"text": ' + deep + "}\n")
    with pytest.raises(FewIntentError, match="nested too deeply"):
        read_messages(tmp_path / "m.txt")


def test_files_joined_with_cat_read_as_one(tmp_path):
    bom = "\ufeff"
    jsonl = write_rows(tmp_path / "a.jsonl", ROWS)
    jsonl.write_text(jsonl.read_text() + bom + json.dumps({"text": "lost card", "intent": "card"}) + "\n")
    assert read_intent_file(jsonl).counts() == {"card": 3, "balance": 2}
    csv_file = tmp_path / "a.csv"
    csv_file.write_text("text,intent\nhi,a\nhello,a\n" + bom + "text,intent\nbye,b\nciao,b\n")
    data = read_intent_file(csv_file)
    assert data.counts() == {"a": 2, "b": 2} and any("repeated header" in w for w in data.warnings)
    (tmp_path / "m.txt").write_text(f"{bom}one\n{bom}two\n")
    assert read_messages(tmp_path / "m.txt") == ["one", "two"]


RASA = """version: "3.1"
nlu:
- intent: greet
  examples: |
    - hello there
    - hi
- synonym: credit
  examples: |
    - credit card
- regex: account_number
  examples: |
    - \\d{10,12}
- lookup: city
  examples: |
    - Berlin
"""


def test_rasa_synonym_regex_and_lookup_blocks_are_reported_as_skipped(tmp_path):
    from fewintent.data import read_intent_file

    (tmp_path / "nlu.yml").write_text(RASA + "- intent: bye\n  examples: |\n    - goodbye\n    - see you\n")
    data = read_intent_file(tmp_path / "nlu.yml")
    note = next(w for w in data.warnings if "skipped" in w)
    assert "1 synonym block" in note and "1 regex block" in note and "1 lookup block" in note


def test_adapt_reads_several_files_or_a_rasa_folder_as_one(tmp_path):
    from fewintent.data import read_intent_files

    nlu = tmp_path / "data" / "nlu"
    nlu.mkdir(parents=True)
    (nlu / "greet.yml").write_text(RASA)
    (nlu / "card.yml").write_text("nlu:\n- intent: card\n  examples: |\n    - lost my card\n    - hi\n")
    (tmp_path / "data" / "stories.yml").write_text("stories:\n- story: happy\n  steps: []\n")
    data = read_intent_files([tmp_path / "data"])
    assert sorted(data.labels) == ["card", "greet"]
    assert data.texts.count("hi") == 1  # cleaning runs across files: 'hi' under two intents keeps the first
    assert any("stories.yml: skipped" in w for w in data.warnings)
    csv = tmp_path / "more.csv"
    csv.write_text("text,intent\nwhat is the weather,weather\nwill it rain,weather\n")
    both = read_intent_files([nlu / "greet.yml", csv])
    assert sorted(both.labels) == ["greet", "weather"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FewIntentError, match="no intent files"):
        read_intent_files([tmp_path / "empty"])


# --- message files are streamed ------------------------------------------------------------------------------------


class _Endless:
    """Standard input that never ends."""

    def __init__(self, line: bytes) -> None:
        self.buffer = self
        self.line = line

    def readline(self, limit: int = -1) -> bytes:
        return self.line


def test_predict_input_dev_zero_is_one_line(monkeypatch):
    with monkeypatch.context() as m:  # first without /dev/zero: code that reads it whole would fill the memory
        m.setattr("sys.stdin", _Endless(b"\x00" * 4096))
        with pytest.raises(FewIntentError, match="binary"):
            read_messages("-")
    one_line_error(run("predict", Path("/tmp"), "--input", "/dev/zero"), "binary")


def test_messages_are_read_line_by_line_and_runaway_lines_cut(tmp_path, monkeypatch):
    p = tmp_path / "m.txt"
    p.write_bytes(b"x" * (3 << 20) + b"\n\xef\xbb\xbfsecond\n" + "é".encode() * (1 << 20))
    with pytest.warns(FewIntentWarning, match="cut 2 line"):
        texts = read_messages(p)
    assert [len(t) for t in texts] == [MAX_TEXT_CHARS, len("second"), MAX_TEXT_CHARS]
    monkeypatch.setattr("fewintent.data.io.MAX_MESSAGES", 1000)
    monkeypatch.setattr("sys.stdin", _Endless(b"hello\n"))  # refused once the message limit is passed
    with pytest.raises(FewIntentError, match="more than 1000 messages"):
        read_messages("-")


# --- intent names --------------------------------------------------------------------------------------------------


def test_case_variants_of_the_oos_label_are_not_intents(tiny_encoder, tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text(SMALL + "\n" + json.dumps({"text": "tell me a joke", "intent": "OOS"}))
    one_line_error(run("adapt", p, "-o", tmp_path / "m"), "only by case")
    clf = IntentClassifier(tiny_encoder).fit(read_intent_file_from_text(SMALL))
    with pytest.raises(FewIntentError, match="out-of-scope label"):
        clf.add_intent("OOS", ["tell me a joke"])


def test_intent_names_are_nfc_and_case_twins_warn():
    nfd, nfc = unicodedata.normalize("NFD", "café"), unicodedata.normalize("NFC", "café")
    data = IntentSet.from_pairs(
        [("a latte", nfd), ("an espresso", nfc), ("fix my bike", "Book_Repair"), ("repair it", "book_repair")]
    )
    assert data.labels == [nfc, "Book_Repair", "book_repair"]
    assert any("'Book_Repair' and 'book_repair' differ only by case" in w for w in data.warnings)
    with pytest.warns(FewIntentWarning, match="only by case"):
        assert check_intent_name(nfd, known=["Café"]) == nfc


def test_intent_names_have_a_length_limit(tmp_path):
    with pytest.raises(FewIntentError, match=f"the limit is {MAX_INTENT_NAME_CHARS}"):
        IntentSet.from_pairs([*ROWS, ("hi", "x" * 100_000)])
    one_line_error(run("data", "validate", write_rows(tmp_path / "d.jsonl", [*ROWS, ("a", "y" * 201)])), "limit")


def test_default_oos_rows_warn_under_another_oos_label():
    data = IntentSet.from_pairs([*ROWS, ("what is the weather", "oos")], oos_label="balance")
    assert any("labelled 'oos' but the out-of-scope label is 'balance'" in w for w in data.warnings)
    assert not any("'oos'" in w for w in IntentSet.from_pairs([*ROWS, ("weather", "oos")]).warnings)


@pytest.mark.parametrize("name", ["x\u202eevil", "zero\u200bwidth", "a\u2028b", "c1\x85"])
def test_invisible_characters_in_intent_names_are_refused(name):
    with pytest.raises(FewIntentError, match="invisible or control character"):
        check_intent_name(name)
