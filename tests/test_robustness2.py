"""Hostile input, second pass: markup in user text, symlinked model directories, full or read-only disks, endless
message files, and the rough edges a newcomer hits (Unicode intent names, --cv, HTTP bodies, long CSV fields)."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import re
import shutil
import unicodedata
import warnings
from pathlib import Path

import pytest
from conftest import ROOT, make_tiny_encoder, tiny_model_dir
from safetensors import SafetensorError
from typer.testing import CliRunner

from fewintent import FewIntentError, IntentClassifier, IntentSet
from fewintent.cli.main import app
from fewintent.data import read_intent_file
from fewintent.data.intentset import MAX_INTENT_NAME_CHARS, MAX_TEXT_CHARS, check_intent_name
from fewintent.data.io import read_messages
from fewintent.errors import CorruptModelError, FewIntentWarning
from fewintent.model import persistence, storage
from fewintent.model.crossval import cross_validate

runner = CliRunner()
ROWS = [
    ("where is my card", "card"),
    ("my card did not arrive", "card"),
    ("what is my balance", "balance"),
    ("how much money is left", "balance"),
]
EVIL = "[link=http://evil.example]click[/link] my order [unclosed]"


def run(*args: object, **kwargs):
    return runner.invoke(app, [str(a) for a in args], **kwargs)


def _one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.output.count("\n") == 1, result.output
    assert result.output.startswith("error: "), result.output
    for needle in needles:
        assert needle in result.output, result.output


def _write(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("".join(json.dumps({"text": t, "intent": i}) + "\n" for t, i in rows))
    return path


def _fit(rows: list[tuple[str, str]] = ROWS) -> IntentClassifier:
    return IntentClassifier(make_tiny_encoder()).fit(IntentSet.from_pairs(rows))


def _no_leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


# ------------------------------------------------------------------ 1. user text is text, never Rich markup
def test_predict_shows_markup_in_texts_and_intent_names_as_typed(tmp_path):
    model = _fit([*ROWS, ("[/] hi there", "[/]"), ("[bold]hello", "[/]")]).save(tmp_path / "m")
    result = run("predict", model, "[/]", "[b]x[/b] [/]")
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and "[b]x[/b] [/]" in result.output
    assert "[/]" in result.output.split("\n", 3)[3]  # the intent column too
    shown = run("predict", model, EVIL)
    assert shown.exit_code == 0 and "[link=http://evil.example]" in shown.output and "[unclosed]" in shown.output


def test_data_validate_shows_markup_intent_names(tmp_path):
    rows = [*ROWS, ("[/] one", "[/]"), ("two", "[/]"), (":thumbs_up: yes", ":x:"), ("ok", ":x:")]
    data = _write(tmp_path / "[red]d.jsonl", rows)
    result = run("data", "validate", data, "--no-overlap")
    assert result.exit_code == 0, result.output
    assert "[/]" in result.output and "[red]d.jsonl" in result.output and ":thumbs_up:" in result.output


def test_discover_shows_markup_messages(tmp_path, monkeypatch):
    import fewintent.cli.discover as discover_cli
    from fewintent.model.discovery import Cluster, DiscoveryResult, LabelCandidate

    model = _fit().save(tmp_path / "m")
    logs = tmp_path / "logs.txt"
    logs.write_text("[/]\nhello\n")
    found = DiscoveryResult([Cluster(0, 2, "x", ["[/]", EVIL], ["[/]", EVIL])], [LabelCandidate("[/] b", "[/]", 0.5)])
    monkeypatch.setattr(discover_cli, "run_discovery", lambda *a, **k: found)
    result = run("discover", model, logs, "-o", tmp_path / "[/]review.jsonl")
    assert result.exit_code == 0, result.output
    assert "[/] b" in result.output and "[link=http://evil.example]" in result.output and "[/]review" in result.output


def test_evaluate_cv_shows_markup_intent_names(tmp_path):
    data = _write(tmp_path / "t.jsonl", [*ROWS, ("[/] one", "[/]"), ("[/] two", "[/]")])
    result = run("evaluate", data, "--cv", "2", "--base", tiny_model_dir(), "--adapter", "none", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "[/]" in result.output


# ------------------------------------------------------------------ 2. symlinked model directories
def test_saving_through_a_symlink_replaces_the_target_and_keeps_the_link(tmp_path):
    real, link = tmp_path / "real", tmp_path / "link"
    _fit().save(real)
    link.symlink_to("real")
    clf = _fit([*ROWS, ("hi", "greet"), ("hello", "greet")])
    clf.save(link)
    assert link.is_symlink() and os.readlink(link) == "real"
    assert IntentClassifier.load(real).labels == ["card", "balance", "greet"]
    clf.save(link)  # twice: no backup of the first save is left to revive
    assert _no_leftovers(tmp_path) == [] and link.is_symlink()
    assert IntentClassifier.load(link).labels == ["card", "balance", "greet"]


def test_adapt_through_a_symlink_and_a_dangling_one(tmp_path):
    data = _write(tmp_path / "d.jsonl", ROWS)
    (tmp_path / "link").symlink_to(tmp_path / "real")  # dangling: adapt creates the target
    for _ in range(2):
        result = run("adapt", data, "-o", tmp_path / "link", "--base", tiny_model_dir(), "--adapter", "none")
        assert result.exit_code == 0, result.output
    assert (tmp_path / "link").is_symlink() and (tmp_path / "real" / "config.json").is_file()
    assert _no_leftovers(tmp_path) == []


def test_symlink_loop_is_one_line(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(FewIntentError, match="symbolic link"):
        _fit().save(tmp_path / "a")
    _one_line_error(run("predict", tmp_path / "a", "hi"))


def test_a_stale_backup_is_never_revived(tmp_path):
    """Only a backup with its save's temporary folder beside it (a crash between the renames) is put back."""
    model = _fit().save(tmp_path / "m")
    shutil.copytree(model, tmp_path / ".m.old-99999999-abc")  # a backup whose cleanup failed
    (tmp_path / ".m.old-99999998-def").symlink_to(model)  # what older releases left for a symlinked model
    shutil.rmtree(model)  # the user deletes the model on purpose
    with pytest.raises(CorruptModelError, match="not restored automatically"):
        IntentClassifier.load(tmp_path / "m")
    assert not model.exists()
    _fit().save(model)  # the next save clears the leftovers
    assert _no_leftovers(tmp_path) == []


def test_old_symlink_backup_does_not_answer_for_a_deleted_link(tmp_path):
    real, link = tmp_path / "real", tmp_path / "link"
    _fit().save(real)
    (tmp_path / ".link.old-99999999-abc").symlink_to(real)  # left by a save that replaced the link
    link.mkdir()
    shutil.rmtree(link)
    _one_line_error(run("predict", link, "where is my card"), "no such model directory")


def test_server_edits_a_symlinked_model_in_place(tmp_path):
    from fewintent.serve import ModelStore

    real, link = tmp_path / "real", tmp_path / "link"
    clf = _fit()
    clf.save(real)
    link.symlink_to(real)
    store = ModelStore(link, clf, device="cpu")
    asyncio.run(store.add_intent("greet", ["hi", "hello there"]))
    assert link.is_symlink() and IntentClassifier.load(real).labels == ["card", "balance", "greet"]
    assert _no_leftovers(tmp_path) == []


# ------------------------------------------------------------------ 3. full disk: one line naming the directory
NO_SPACE = 'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'


def _disk_full(*args, **kwargs):
    raise SafetensorError(NO_SPACE)


def test_full_disk_is_one_line_and_keeps_the_model(tmp_path, monkeypatch):
    model = _fit().save(tmp_path / "m")
    before = {p.name: p.read_bytes() for p in model.iterdir()}
    rows = [(f"where is my card {i}", "card") for i in range(10)] + [(f"weather {i}", "oos") for i in range(3)]
    held_out = _write(tmp_path / "valid.jsonl", rows)  # calibrate needs 10 in-scope and 3 OOS rows (issue 34)
    monkeypatch.setattr(persistence, "save_file", _disk_full)
    with pytest.raises(storage.StorageError, match=r"No space left on device \(it needs about [0-9.]+ [KMG]iB"):
        _fit().save(model)
    _one_line_error(run("calibrate", model, held_out), str(model), "No space left", "previous model is unchanged")
    _one_line_error(run("calibrate", model, held_out, "--json"), "No space left")
    assert {p.name: p.read_bytes() for p in model.iterdir()} == before
    assert _no_leftovers(tmp_path) == []


def test_full_disk_on_a_new_directory_says_nothing_was_written(tmp_path, monkeypatch):
    def full(path, text, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(storage.StorageError, match="nothing was written") as e:
        _fit().save(tmp_path / "new")
    assert e.value.no_space and not (tmp_path / "new").exists() and _no_leftovers(tmp_path) == []


# ------------------------------------------------------------------ 4. HTTP: 507 / 503 when the model cannot be saved
@pytest.fixture
def client(tmp_path):
    fastapi = pytest.importorskip("fastapi.testclient")
    from fewintent.serve.app import ServeSettings, create_app

    clf = _fit([*ROWS, ("hi there", "greet"), ("hello", "greet")])
    clf.save(tmp_path / "m")
    with fastapi.TestClient(create_app(ServeSettings(model_dir=str(tmp_path / "m")), clf)) as c:
        yield c


@pytest.mark.parametrize(
    "error, status, kind",
    [
        (SafetensorError(NO_SPACE), 507, "insufficient_storage"),
        (OSError(errno.EROFS, "Read-only file system"), 503, "service_unavailable"),
        (OSError(errno.EACCES, "Permission denied"), 503, "service_unavailable"),
    ],
)
def test_a_model_that_cannot_be_saved_answers_507_or_503(client, monkeypatch, caplog, error, status, kind):
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(persistence, "save_file", fail)
    with caplog.at_level(logging.ERROR, logger="fewintent.serve"):
        for r in (client.post("/intents", json={"name": "new", "examples": ["hi"]}), client.delete("/intents/card")):
            assert r.status_code == status, r.text
            assert r.json()["error"]["type"] == kind and "nothing was written" not in r.json()["error"]["message"]
            assert "previous model is unchanged" in r.json()["error"]["message"]
    assert caplog.records and not any(rec.exc_info for rec in caplog.records)  # understood: no traceback
    assert [i["name"] for i in client.get("/intents").json()["intents"]] == ["card", "balance", "greet"]


# ------------------------------------------------------------------ 5. message files are streamed
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
    _one_line_error(run("predict", Path("/tmp"), "--input", "/dev/zero"), "binary")


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


# ------------------------------------------------------------------ rough edges
def test_intent_names_are_nfc_and_case_twins_warn():
    nfd, nfc = unicodedata.normalize("NFD", "café"), unicodedata.normalize("NFC", "café")
    data = IntentSet.from_pairs(
        [("a latte", nfd), ("an espresso", nfc), ("fix my bike", "Book_Repair"), ("repair it", "book_repair")]
    )
    assert data.labels == [nfc, "Book_Repair", "book_repair"]
    assert any("'Book_Repair' and 'book_repair' differ only by case" in w for w in data.warnings)
    with pytest.warns(FewIntentWarning, match="only by case"):
        assert check_intent_name(nfd, known=["Café"]) == nfc


def test_http_intent_names_are_nfc_and_case_twins_warn(client):
    nfd = unicodedata.normalize("NFD", "café")
    r = client.post("/intents", json={"name": nfd, "examples": ["a latte please"]})
    assert r.status_code == 200 and r.json()["name"] == unicodedata.normalize("NFC", "café"), r.text
    r = client.post("/intents", json={"name": "Card", "examples": ["lost my card"]})
    assert r.status_code == 200 and "only by case" in r.json()["warnings"][0]
    assert client.delete(f"/intents/{nfd}").status_code == 200  # the decomposed spelling finds it


def test_python_api_edits_normalise_intent_names_like_files_and_http():
    clf = _fit()
    nfd, nfc = unicodedata.normalize("NFD", "café"), unicodedata.normalize("NFC", "café")
    clf.add_intent(nfd, ["a latte please", "a flat white"])
    assert nfc in clf.labels and nfd not in clf.labels
    known = clf.labels[0]
    with pytest.warns(FewIntentWarning, match="only by case"):
        clf.add_intent(known.upper(), ["something else entirely"])
    clf.remove_intent(nfd)  # the decomposed spelling finds the composed intent
    assert nfc not in clf.labels


def test_examples_must_be_a_list_of_texts_not_a_mapping_or_bytes():
    clf = _fit()
    for bad in ({"a latte": 1}, b"a latte"):
        with pytest.raises(FewIntentError, match="list of texts"):
            clf.add_intent("coffee", bad)  # type: ignore[arg-type]
    assert "coffee" not in clf.labels


def test_python_export_to_a_symlink_of_the_model_is_refused(tmp_path):
    model = _fit().save(tmp_path / "m")
    (tmp_path / "link").symlink_to(model)
    with pytest.raises(FewIntentError, match="itself"):
        IntentClassifier.export(model, tmp_path / "link")


def test_intent_names_have_a_length_limit(tmp_path):
    with pytest.raises(FewIntentError, match=f"the limit is {MAX_INTENT_NAME_CHARS}"):
        IntentSet.from_pairs([*ROWS, ("hi", "x" * 100_000)])
    _one_line_error(run("data", "validate", _write(tmp_path / "d.jsonl", [*ROWS, ("a", "y" * 201)])), "limit")


def test_default_oos_rows_warn_under_another_oos_label():
    data = IntentSet.from_pairs([*ROWS, ("what is the weather", "oos")], oos_label="balance")
    assert any("labelled 'oos' but the out-of-scope label is 'balance'" in w for w in data.warnings)
    assert not any("'oos'" in w for w in IntentSet.from_pairs([*ROWS, ("weather", "oos")]).warnings)


def test_cv_folds_are_clamped_and_impossible_cv_says_why(tiny_encoder):
    data = IntentSet.from_pairs([*ROWS, ("hi", "greet")])
    result = cross_validate(IntentClassifier(tiny_encoder), data, 1000)
    assert result.folds == 2 and any("1000 folds asked, 2 run" in w for w in result.warnings)
    assert any("one example (greet)" in w for w in result.warnings)
    singles = IntentSet.from_pairs([("a", "x"), ("b", "y"), ("c", "z"), ("d", "z")])
    for folds in (2, 5, "loo"):
        with pytest.raises(FewIntentError, match="at least two intents with two or more examples"):
            cross_validate(IntentClassifier(tiny_encoder), singles, folds)


def test_http_body_must_be_json_and_top_k_an_integer(client):
    r = client.post("/predict", content='{"texts": ["hi"]}', headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "must be JSON" in r.json()["error"]["message"]
    r = client.post("/predict", json=["hi"])
    assert r.status_code == 422 and "must be a JSON object" in r.json()["error"]["message"]
    r = client.post("/predict", content=b'{"texts": ["hi"', headers={"content-type": "application/json"})
    assert r.status_code == 422 and "not valid JSON" in r.json()["error"]["message"]
    for bad in (True, "2", 2.5):
        r = client.post("/predict", json={"texts": ["hi"], "top_k": bad})
        assert r.status_code == 422 and "top_k" in r.json()["error"]["message"], bad


def test_long_csv_fields_are_cut_like_jsonl(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("text,intent\n" + "".join(f"{t},{i}\n" for t, i in ROWS) + "y" * 200_000 + ",card\n")
    data = read_intent_file(p)
    assert max(map(len, data.texts)) == MAX_TEXT_CHARS and any("cut 1 text" in w for w in data.warnings)


def _readme_python() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Python\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_example_runs_as_written(tmp_path, monkeypatch):
    """The README's Python block, on the demo files, with the real packaged encoder (the ONNX line needs the
    onnx extra and is run by tests/test_onnx.py's export tests instead)."""
    code = _readme_python()
    assert "data/demo_company.jsonl" in code
    shutil.copytree(ROOT / "data", tmp_path / "data", ignore=shutil.ignore_patterns("benchmarks"))
    monkeypatch.chdir(tmp_path)
    lines = [line for line in code.splitlines() if "IntentClassifier.export(" not in line]
    with warnings.catch_warnings():
        warnings.simplefilter("error", FewIntentWarning)
        namespace: dict = {}
        exec("\n".join(lines), namespace)  # noqa: S102 - our own README
    assert namespace["found"].clusters, "the demo's logs give candidate intents"
    assert IntentClassifier.load(tmp_path / "models" / "demo").labels == namespace["clf"].labels


# ------------------------------------------------------------------ found by the hostile pass
def test_intent_files_that_never_end_or_hold_nul_bytes_are_one_line(tmp_path):
    _one_line_error(run("data", "validate", "/dev/zero", "--no-overlap"), "binary")
    p = tmp_path / "d.csv"
    p.write_bytes(b"text,intent\nhello\x00there,a\nbye,b\n")
    with pytest.raises(FewIntentError, match="binary"):
        read_intent_file(p)


def test_deeply_nested_json_is_one_line(tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    _write(tmp_path / "d.jsonl", ROWS)
    (tmp_path / "d.jsonl").write_text('{"text": ' + deep + ', "intent": "a"}\n')
    _one_line_error(run("data", "validate", tmp_path / "d.jsonl", "--no-overlap"), "nested too deeply")
    (tmp_path / "m.txt").write_text('{"text": ' + deep + "}\n")
    with pytest.raises(FewIntentError, match="nested too deeply"):
        read_messages(tmp_path / "m.txt")


def test_files_joined_with_cat_read_as_one(tmp_path):
    bom = "\ufeff"
    jsonl = _write(tmp_path / "a.jsonl", ROWS)
    jsonl.write_text(jsonl.read_text() + bom + json.dumps({"text": "lost card", "intent": "card"}) + "\n")
    assert read_intent_file(jsonl).counts() == {"card": 3, "balance": 2}
    csv_file = tmp_path / "a.csv"
    csv_file.write_text("text,intent\nhi,a\nhello,a\n" + bom + "text,intent\nbye,b\nciao,b\n")
    data = read_intent_file(csv_file)
    assert data.counts() == {"a": 2, "b": 2} and any("repeated header" in w for w in data.warnings)
    (tmp_path / "m.txt").write_text(f"{bom}one\n{bom}two\n")
    assert read_messages(tmp_path / "m.txt") == ["one", "two"]


def test_threads_beyond_the_cpus_are_refused(tmp_path):
    _one_line_error(run("predict", tmp_path, "hi", "--threads", 100_000), "--threads 100000")


def test_leftovers_of_a_model_named_with_glob_characters_are_cleaned(tmp_path):
    model = _fit().save(tmp_path / "m[1]")
    (tmp_path / ".m[1].tmp-99999999-abc").mkdir()  # a killed save's
    _fit().save(model)
    assert _no_leftovers(tmp_path) == []


def test_a_model_name_too_long_for_its_temporary_folder_is_refused_before_work(tmp_path):
    data = _write(tmp_path / "d.jsonl", ROWS)
    _one_line_error(run("adapt", data, "-o", tmp_path / ("x" * 240), "--adapter", "none"), "at most 233")


def test_discover_checks_its_output_before_work_and_leaves_no_temporary(tmp_path, monkeypatch):
    import fewintent.cli.discover as discover_cli
    from fewintent.model.discovery import DiscoveryResult

    logs = tmp_path / "logs.txt"
    logs.write_text("hello\n")
    (tmp_path / "out").mkdir()
    _one_line_error(run("discover", tmp_path / "nomodel", logs, "-o", tmp_path / "out"), "is a directory")
    _one_line_error(run("discover", tmp_path / "nomodel", logs, "-o", logs), "overwrite the messages")
    assert logs.read_text() == "hello\n"
    model = _fit().save(tmp_path / "m")
    monkeypatch.setattr(discover_cli, "run_discovery", lambda *a, **k: DiscoveryResult([], [], 1, 0))

    def full(self, target):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "replace", full)
    _one_line_error(run("discover", model, logs, "-o", tmp_path / "r.jsonl"), "No space left")
    assert not (tmp_path / ".r.jsonl.tmp").exists() and not (tmp_path / "r.jsonl").exists()


def test_an_error_about_a_path_with_a_newline_stays_one_line(tmp_path):
    _one_line_error(run("predict", tmp_path / "no\nsuch", "hi"), "no\\nsuch")


def test_serve_refuses_a_busy_port_and_an_unknown_host_before_loading(tmp_path):
    import socket

    pytest.importorskip("uvicorn")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        _one_line_error(run("serve", tmp_path / "nomodel", "--port", port), "pick another with --port")
    _one_line_error(run("serve", tmp_path / "nomodel", "--host", "999.1.1.1"), "--host 999.1.1.1")


@pytest.mark.parametrize("name", ["x\u202eevil", "zero\u200bwidth", "a\u2028b", "c1\x85"])
def test_invisible_characters_in_intent_names_are_refused(name):
    with pytest.raises(FewIntentError, match="invisible or control character"):
        check_intent_name(name)


def test_http_bodies_with_unknown_keys_are_refused(client):
    r = client.post("/predict", json={"texts": ["hi"], "topk": 1})
    assert r.status_code == 422 and "topk" in r.json()["error"]["message"]
    r = client.post("/intents", json={"name": "x", "example": ["hi"], "examples": ["hi"]})
    assert r.status_code == 422 and "example" in r.json()["error"]["message"]


def test_python_api_mistakes_are_fewintent_errors(tmp_path):
    from fewintent import evaluate

    with pytest.raises(FewIntentError, match="pair"):
        IntentSet.from_pairs([("a", "b", "c")])  # type: ignore[list-item]
    with pytest.raises(FewIntentError, match="not a single string"):
        IntentSet.from_pairs("ab")  # type: ignore[arg-type]
    clf = _fit()
    test = _write(tmp_path / "t.jsonl", [("where is my card", "card"), ("what is the weather", "oos")])
    assert evaluate(clf, test).n == 2  # a path, as calibrate takes
    with pytest.raises(FewIntentError, match="IntentSet or a labelled file"):
        evaluate(clf, 5)  # type: ignore[arg-type]


def test_export_to_a_symlink_of_the_model_is_refused(tmp_path):
    model = _fit().save(tmp_path / "m")
    (tmp_path / "link").symlink_to(model)
    before = (model / "config.json").read_text()
    _one_line_error(run("export", model, "-o", tmp_path / "link"), "itself")
    assert (model / "config.json").read_text() == before


def test_predict_json_into_a_closed_pipe_exits_quietly(tmp_path):
    import subprocess
    import sys

    model = _fit().save(tmp_path / "m")
    (tmp_path / "many.txt").write_text("".join(f"message {i}\n" for i in range(500)))
    many = tmp_path / "many.txt"
    cmd = f"'{sys.executable}' -m fewintent.cli.main predict '{model}' --input '{many}' --json | head -1"
    done = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=300)
    assert done.stdout.startswith('{"text": "message 0"') and done.stderr == "", done.stderr
