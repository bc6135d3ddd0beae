"""The CLI end to end on the real packaged MiniLM: adapt -> predict -> evaluate, and bad input handled cleanly."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fewintent.cli.main import app
from fewintent.data import read_intent_file

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "data" / "demo_company.jsonl"
runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "demo"
    result = run("adapt", DEMO, "-o", out, "--adapter", "none", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "adapted 12 intents from 74 examples + 9 out-of-scope" in result.output
    return out


def test_predict_json_contract(demo_model):
    result = run("predict", demo_model, "is my bike ready yet", "who won the football last night", "--json")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 2
    for line in lines:
        assert set(line) == {"text", "intent", "is_oos", "intent_ranking", "oos_score"}
        assert set(line["intent"]) == {"name", "confidence"} and 0 <= line["intent"]["confidence"] <= 1
        assert all(set(r) == {"name", "confidence"} for r in line["intent_ranking"])
    assert lines[0]["intent"]["name"] == "repair_status" and not lines[0]["is_oos"]
    assert lines[1]["is_oos"] and lines[1]["intent"]["name"] == "oos"


def test_threads_option_sets_torch_and_numpy_threads(demo_model):
    import torch
    from threadpoolctl import threadpool_info

    before = torch.get_num_threads()
    try:
        result = run("predict", demo_model, "is my bike ready yet", "--json", "--threads", "1")
        assert result.exit_code == 0, result.output
        assert torch.get_num_threads() == 1
        # scoring and head fits run in numpy: its BLAS follows --threads too
        assert {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"} == {1}
        assert run("predict", demo_model, "hi", "--threads", "0").exit_code != 0  # typer's range check
    finally:
        torch.set_num_threads(before)


def test_predict_from_file_and_table(demo_model, tmp_path):
    f = tmp_path / "msgs.txt"
    f.write_text("where is my order\n\n" + json.dumps({"text": "are you open on sunday"}) + "\n")
    result = run("predict", demo_model, "--input", f, "--json")
    assert [json.loads(x)["intent"]["name"] for x in result.stdout.splitlines()] == ["order_status", "opening_hours"]
    table = run("predict", demo_model, "what time do you close")
    assert table.exit_code == 0 and "opening_hours" in table.output


def test_evaluate_json(demo_model):
    result = run("evaluate", demo_model, ROOT / "data" / "demo_company_test.jsonl", "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    for key in ("n", "accuracy", "in_scope_accuracy", "oos_recall", "oos_precision", "macro_f1", "mcc"):
        assert key in metrics
    assert metrics["n"] == 15 and metrics["accuracy"] > 0.7 and metrics["oos_recall"] is not None
    table = run("evaluate", demo_model, ROOT / "data" / "demo_company_test.jsonl")
    assert "in_scope_accuracy" in table.output


def test_data_validate(tmp_path):
    result = run("data", "validate", DEMO)
    assert result.exit_code == 0 and "12 intents, 74 examples, 9 out-of-scope" in result.output
    f = tmp_path / "one.csv"
    f.write_text("text,intent\nhi,greet\nhello,greet\nbye,leave\n")
    result = run("data", "validate", f)
    assert result.exit_code == 0 and "single example (leave)" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["adapt", "missing.jsonl", "-o", "{tmp}/m"], "missing.jsonl: no such file"),
        (["adapt", "{tmp}/empty.csv", "-o", "{tmp}/m"], "the file is empty"),
        (["adapt", "{demo}", "-o", "{tmp}/m", "--adapter", "nonexistent"], "unknown adapter 'nonexistent'"),
        (["adapt", "{demo}", "-o", "{tmp}/m", "--base", "./no/such/model"], "no such model directory"),
        (["adapt", "{demo}", "-o", "{tmp}/m", "--base", "someorg/not-cached"], "HF_HUB_OFFLINE is set"),
        (["adapt", "{demo}", "-o", "{tmp}/m", "--device", "tpu"], "unknown device 'tpu'"),
        (["predict", "{tmp}/nomodel", "hello"], "no such model directory"),
        (["predict", "{tmp}", "hello"], "not a fewintent model"),
        (["predict", "{demo_model}"], "nothing to classify"),
        (["evaluate", "{demo_model}", "{tmp}/empty.csv"], "the file is empty"),
    ],
)
def test_bad_input_one_line_error(args, message, tmp_path, demo_model):
    (tmp_path / "empty.csv").write_text("")
    args = [a.format(tmp=tmp_path, demo=DEMO, demo_model=demo_model) for a in args]
    result = run(*args)
    assert result.exit_code == 1
    assert message in result.stderr
    assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1


def test_real_process_prints_no_traceback(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "hi", "intent": "a"}\n{broken\n')
    proc = subprocess.run(
        [sys.executable, "-m", "fewintent.cli.main", "adapt", str(bad), "-o", str(tmp_path / "m")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"error: {bad}:2: not valid JSON (Expecting property name enclosed in double quotes)"
    assert not (tmp_path / "m").exists()


def test_adapt_saves_and_predict_loads_under_the_model_dir_lock(tmp_path, monkeypatch):
    """A server on the directory (which takes the same lock) never reloads between a save's two renames."""
    import contextlib
    import fcntl
    import os

    from fewintent.model import persistence

    seen = []
    real_lock = persistence.model_dir_lock

    @contextlib.contextmanager
    def probe(path, *, exclusive):
        with real_lock(path, exclusive=exclusive):
            fd = os.open(path.parent / f".{path.name}.lock", os.O_RDWR)
            try:  # another holder must be shut out while the command works
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                seen.append("not locked")
            except BlockingIOError:
                seen.append(("locked", path.name, exclusive, (path / "config.json").exists()))
            finally:
                os.close(fd)
            yield

    monkeypatch.setattr(persistence, "model_dir_lock", probe)  # save and load take it themselves
    out = tmp_path / "locked"
    assert run("adapt", DEMO, "-o", out, "--adapter", "none", "--device", "cpu", "--no-intent-names").exit_code == 0
    assert json.loads((out / "config.json").read_text())["classifier"]["intent_names"] is False
    assert run("predict", out, "is my bike ready yet").exit_code == 0
    assert seen == [("locked", "locked", True, False), ("locked", "locked", False, True)]


def test_adapt_never_leaves_half_written_model(demo_model, tmp_path, monkeypatch):
    """An adapt that fails while saving over an existing model leaves that model exactly as it was."""
    import shutil

    from fewintent.model import persistence

    target = tmp_path / "model"
    shutil.copytree(demo_model, target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(persistence, "model_card", disk_full)
    result = run("adapt", DEMO, "-o", target, "--adapter", "none")
    assert result.exit_code == 1 and "No space left on device" in result.stderr
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.lock", "model"]  # no temp or backup left


def test_adapt_refuses_foreign_output_before_work(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    result = run("adapt", DEMO, "-o", tmp_path / "notes")
    assert result.exit_code == 1 and "not a fewintent model; refusing to overwrite it" in result.stderr
    assert (tmp_path / "notes" / "todo.txt").read_text() == "mine"


def test_snips_ten_shot_well_above_chance(datasets_dir, real_encoder, tmp_path):
    """Adapting on 10 examples per intent of SNIPS train scores far above chance (1/7) on its test split."""
    from fewintent import IntentClassifier, IntentSet, evaluate

    train = read_intent_file(datasets_dir / "snips" / "train.jsonl")
    rng = random.Random(0)
    pairs = [(t, i) for i, texts in train.by_intent().items() for t in rng.sample(texts, 10)]
    clf = IntentClassifier(real_encoder).fit(IntentSet.from_pairs(pairs))
    test = read_intent_file(datasets_dir / "snips" / "test.jsonl", for_training=False)
    result = evaluate(clf, test)
    assert result.n == 700
    assert result.top1_accuracy is not None and result.top1_accuracy > 0.75
    assert result.in_scope_accuracy is not None and result.in_scope_accuracy > 0.6
    # saved then loaded: identical predictions on real data
    clf.save(tmp_path / "snips")
    loaded = IntentClassifier.load(tmp_path / "snips", device="cpu")
    sample = test.texts[:50]
    assert [p.to_dict() for p in loaded.predict(sample)] == [p.to_dict() for p in clf.predict(sample)]


def test_model_dir_lock_is_reentrant_in_a_thread_and_cannot_be_upgraded(tmp_path):
    """A transaction (a server's reload, edit, save) holds the lock while save/load take it again inside."""
    import fcntl
    import os

    import pytest

    from fewintent.model.persistence import model_dir_lock

    d = tmp_path / "m"

    def locked_elsewhere() -> bool:
        fd = os.open(tmp_path / ".m.lock", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    with model_dir_lock(d, exclusive=True):
        with model_dir_lock(d, exclusive=False), model_dir_lock(d, exclusive=True):
            assert locked_elsewhere()
        assert locked_elsewhere()  # leaving the inner holds did not release the transaction's lock
    assert not locked_elsewhere()
    with model_dir_lock(d, exclusive=False), pytest.raises(RuntimeError, match="exclusive one first"):
        with model_dir_lock(d, exclusive=True):
            pass
