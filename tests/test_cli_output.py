"""What the CLI prints: warnings said once and short, user text shown as typed (never Rich markup), one-line
errors with a non-zero exit, and --help that reads well."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest
from conftest import tiny_model_dir
from helpers import (
    ROWS,
    SMALL,
    fit,
    one_line_error,
    run,
    runner,
    write_rows,
)

from fewintent import IntentClassifier
from fewintent.cli.main import app
from fewintent.encoder.registry import MINILM

# --- adapt's warnings and progress ---------------------------------------------------------------------------------


def test_one_example_per_intent_keeps_a_fallback_and_says_so(tmp_path, real_encoder):
    data = tmp_path / "one.jsonl"
    rows = [("where is my card", "card"), ("what is my balance", "balance"), ("i want to close my account", "close")]
    data.write_text("\n".join(json.dumps({"text": t, "intent": i}) for t, i in rows))
    result = run("adapt", data, "-o", tmp_path / "m", "--adapter", "none", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "cannot be calibrated" in result.output and result.output.count("cannot be calibrated") == 1
    assert IntentClassifier.load(tmp_path / "m").threshold == pytest.approx(MINILM.constants.fallback_threshold)
    out = run("predict", tmp_path / "m", "write me a poem about the sea", "where is my new card?", "--json")
    first, second = (json.loads(line) for line in out.stdout.splitlines())
    assert first["is_oos"] and not second["is_oos"] and second["intent"]["name"] == "card"


def test_conflict_warning_is_short_and_printed_once(tmp_path):
    long = "where is my card " * 100
    rows = [(long, "card"), (long, "balance"), ("card please", "card"), ("balance", "balance"), ("cards", "card")]
    p = tmp_path / "c.jsonl"
    p.write_text("\n".join(json.dumps({"text": t, "intent": i}) for t, i in rows + [("money", "balance")]))
    result = run("adapt", p, "-o", tmp_path / "m", "--base", tiny_model_dir(), "--adapter", "none")
    assert result.exit_code == 0, result.output
    warning = [line for line in result.output.splitlines() if "labelled both" in line]
    assert len(warning) == 1 and len(warning[0]) < 200


def test_copy_of_the_packaged_base_gets_the_shipped_adapter(tmp_path, small_file):
    from fewintent.encoder.encoder import packaged_model_path

    base = tmp_path / "minilm-copy"
    shutil.copytree(packaged_model_path(), base)
    result = run("adapt", small_file, "-o", tmp_path / "m", "--base", base, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "adapter: minilm-meta," in result.output


def test_large_support_warns_and_shows_plain_progress(tmp_path, monkeypatch, capsys):
    from fewintent.cli import _common, adapt

    monkeypatch.setattr(adapt, "LARGE_SUPPORT", 3)
    result = run("adapt", tmp_path / "missing-dir" / "x.jsonl", "-o", tmp_path / "m")
    assert result.exit_code == 1  # (sanity: the flag path exists)
    p = tmp_path / "big.jsonl"
    p.write_text(SMALL)
    result = run("adapt", p, "-o", tmp_path / "m", "--base", tiny_model_dir(), "--adapter", "none")
    assert result.exit_code == 0 and "fewintent is built for 5-10 per intent" in result.output
    monkeypatch.setattr(_common, "PLAIN_PROGRESS_MIN", 10)
    with _common.progress_bar("encoding", 300) as advance:  # stderr is not a terminal under pytest
        for _ in range(30):
            advance(10)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("encoding:")]
    assert lines[0] == "encoding: 30/300" and lines[-1] == "encoding: 300/300" and len(lines) == 10


def test_many_intents_warn_about_the_linear_head(tmp_path, monkeypatch):
    from fewintent.cli import adapt

    monkeypatch.setattr(adapt, "MANY_INTENTS", 1)
    p = tmp_path / "t.jsonl"
    p.write_text(SMALL)
    result = run("adapt", p, "-o", tmp_path / "m", "--base", tiny_model_dir(), "--adapter", "none")
    assert result.exit_code == 0 and "--head prototype fits instantly" in result.output


def test_adapt_flags_that_would_be_ignored_are_not_silent(tmp_path):
    train = tmp_path / "train.csv"
    rows = [f"{w} {i},{w}" for w in ("alpha", "beta") for i in range(3)] + ["write a poem,oos"] * 1
    train.write_text("text,intent\n" + "\n".join(rows) + "\n")
    result = runner.invoke(app, ["adapt", str(train), "-o", str(tmp_path / "m"), "--tune-time", "30"])
    assert result.exit_code == 1 and "--tune-time is the time budget of --tune" in result.output
    from conftest import tiny_model_dir

    base = ["--base", str(tiny_model_dir()), "--adapter", "none", "--head", "prototype"]
    result = runner.invoke(app, ["adapt", str(train), "-o", str(tmp_path / "m"), *base, "--in-scope-recall", "0.9"])
    assert result.exit_code == 0, result.output
    assert "--in-scope-recall 0.9 is only a floor here: the file's 1 'oos' rows set the threshold" in result.output


# --- user text is text, never Rich markup --------------------------------------------------------------------------


EVIL = "[link=http://evil.example]click[/link] my order [unclosed]"


def test_predict_shows_markup_in_texts_and_intent_names_as_typed(tmp_path):
    model = fit([*ROWS, ("[/] hi there", "[/]"), ("[bold]hello", "[/]")]).save(tmp_path / "m")
    result = run("predict", model, "[/]", "[b]x[/b] [/]")
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and "[b]x[/b] [/]" in result.output
    assert "[/]" in result.output.split("\n", 3)[3]  # the intent column too
    shown = run("predict", model, EVIL)
    assert shown.exit_code == 0 and "[link=http://evil.example]" in shown.output and "[unclosed]" in shown.output


def test_data_validate_shows_markup_intent_names(tmp_path):
    rows = [*ROWS, ("[/] one", "[/]"), ("two", "[/]"), (":thumbs_up: yes", ":x:"), ("ok", ":x:")]
    data = write_rows(tmp_path / "[red]d.jsonl", rows)
    result = run("data", "validate", data, "--no-overlap")
    assert result.exit_code == 0, result.output
    assert "[/]" in result.output and "[red]d.jsonl" in result.output and ":thumbs_up:" in result.output


def test_discover_shows_markup_messages(tmp_path, monkeypatch):
    import fewintent.cli.discover as discover_cli
    from fewintent.model.discovery import Cluster, DiscoveryResult, LabelCandidate

    model = fit().save(tmp_path / "m")
    logs = tmp_path / "logs.txt"
    logs.write_text("[/]\nhello\n")
    found = DiscoveryResult([Cluster(0, 2, "x", ["[/]", EVIL], ["[/]", EVIL])], [LabelCandidate("[/] b", "[/]", 0.5)])
    monkeypatch.setattr(discover_cli, "run_discovery", lambda *a, **k: found)
    result = run("discover", model, logs, "-o", tmp_path / "[/]review.jsonl")
    assert result.exit_code == 0, result.output
    assert "[/] b" in result.output and "[link=http://evil.example]" in result.output and "[/]review" in result.output


def test_evaluate_cv_shows_markup_intent_names(tmp_path):
    data = write_rows(tmp_path / "t.jsonl", [*ROWS, ("[/] one", "[/]"), ("[/] two", "[/]")])
    result = run("evaluate", data, "--cv", "2", "--base", tiny_model_dir(), "--adapter", "none", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "[/]" in result.output


# --- one-line errors and exit codes --------------------------------------------------------------------------------


def test_unknown_hub_id_offline_is_one_line(tmp_path, small_file, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    one_line_error(run("adapt", small_file, "-o", tmp_path / "m", "--base", "unknown-org/unknown-model"), "unknown")


def test_cli_edge_cases(tmp_path, small_file):
    p = tmp_path / "nl.jsonl"
    p.write_text(SMALL + "\n" + json.dumps({"text": "cancel it", "intent": "a\nb"}))
    one_line_error(run("adapt", p, "-o", tmp_path / "m"), "control character")
    y = tmp_path / "nlu.yml"
    y.write_text("nlu:\n- intent: [greet, hello]\n  examples: |\n    - hi\n    - hello\n")
    one_line_error(run("data", "validate", y), "plain text")
    base = tiny_model_dir()
    assert run("adapt", small_file, "-o", tmp_path / "m", "--base", base, "--adapter", "none").exit_code == 0
    one_line_error(run("predict", tmp_path / "m", "hi", "--device", "mps"), "mps")
    out = run("predict", tmp_path / "m", "\udcff\udcfe bad bytes", "--json")  # what argv holds for bad bytes
    assert out.exit_code == 0, out.output
    unknown = tmp_path / "u.jsonl"
    unknown.write_text(json.dumps({"text": "hello friend", "intent": "nope"}))
    result = run("evaluate", tmp_path / "m", unknown, "--json")
    assert result.exit_code == 0 and "unknown to the model" in result.stderr
    assert json.loads(result.stdout)["unknown_intents"] == ["nope"]


def test_threads_beyond_the_cpus_are_refused(tmp_path):
    one_line_error(run("predict", tmp_path, "hi", "--threads", 100_000), "--threads 100000")


def test_discover_checks_its_output_before_work_and_leaves_no_temporary(tmp_path, monkeypatch):
    import fewintent.cli.discover as discover_cli
    from fewintent.model.discovery import DiscoveryResult

    logs = tmp_path / "logs.txt"
    logs.write_text("hello\n")
    (tmp_path / "out").mkdir()
    one_line_error(run("discover", tmp_path / "nomodel", logs, "-o", tmp_path / "out"), "is a directory")
    one_line_error(run("discover", tmp_path / "nomodel", logs, "-o", logs), "overwrite the messages")
    assert logs.read_text() == "hello\n"
    model = fit().save(tmp_path / "m")
    monkeypatch.setattr(discover_cli, "run_discovery", lambda *a, **k: DiscoveryResult([], [], 1, 0))

    def full(self, target):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "replace", full)
    one_line_error(run("discover", model, logs, "-o", tmp_path / "r.jsonl"), "No space left")
    assert not (tmp_path / ".r.jsonl.tmp").exists() and not (tmp_path / "r.jsonl").exists()


def test_an_error_about_a_path_with_a_newline_stays_one_line(tmp_path):
    one_line_error(run("predict", tmp_path / "no\nsuch", "hi"), "no\\nsuch")


def test_serve_refuses_a_busy_port_and_an_unknown_host_before_loading(tmp_path):
    import socket

    pytest.importorskip("uvicorn")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        one_line_error(run("serve", tmp_path / "nomodel", "--port", port), "pick another with --port")
    one_line_error(run("serve", tmp_path / "nomodel", "--host", "999.1.1.1"), "--host 999.1.1.1")


def test_predict_json_into_a_closed_pipe_exits_quietly(tmp_path):
    import subprocess
    import sys

    model = fit().save(tmp_path / "m")
    (tmp_path / "many.txt").write_text("".join(f"message {i}\n" for i in range(500)))
    many = tmp_path / "many.txt"
    cmd = f"'{sys.executable}' -m fewintent.cli.main predict '{model}' --input '{many}' --json | head -1"
    done = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=300)
    assert done.stdout.startswith('{"text": "message 0"') and done.stderr == "", done.stderr


# --- --help: -h, no Python types or <bool>, choices shown, usage names arguments as the text does ------------------


def _commands(command, path=()):
    yield path
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def test_every_help_reads_well_at_80_columns():
    import typer.main

    for path in _commands(typer.main.get_command(app)):
        result = runner.invoke(app, [*path, "-h"], terminal_width=80)
        text = result.output
        assert result.exit_code == 0, (path, text)
        assert text.startswith(f"Usage: fewintent {' '.join(path)}".rstrip()), (path, text[:80])
        for bad in ("<bool>", "list[", "<str>", "<float", "<int range>", "Path]"):
            assert bad not in text, (path, bad, text)
        assert "{" not in text.splitlines()[0], text
        assert max(map(len, text.splitlines())) <= 80, (path, text)
        assert "-h, --help" in text
    adapt = runner.invoke(app, ["adapt", "--help"], terminal_width=80).output
    assert adapt.startswith("Usage: fewintent adapt [OPTIONS] TRAIN_FILE...\n") and len(adapt.splitlines()) < 90
    assert "--device <auto|cpu|cuda>" in adapt and "--head <linear|prototype" in adapt
    assert "--json  " in runner.invoke(app, ["predict", "-h"]).output  # a flag takes no value
    predict = runner.invoke(app, ["predict", "-h"]).output
    assert "MODEL_DIR [TEXTS]..." in predict.splitlines()[0]
    evaluate = runner.invoke(app, ["evaluate", "-h"]).output
    assert "MODEL_DIR|TRAIN_FILE [TEST_FILES]..." in evaluate.splitlines()[0]
    assert "--log-level <critical|error|warning|info|debug>" in runner.invoke(app, ["serve", "-h"]).output
    assert "--quantize <int8>" in runner.invoke(app, ["export", "-h"]).output


def test_meta_train_algo_choices_are_the_algorithms():
    from fewintent.cli.meta_train import ALGORITHMS
    from fewintent.meta.args import Algorithm

    assert ALGORITHMS == "<" + "|".join(a.value for a in Algorithm) + ">"


# --- evaluate: the report `rasa test nlu` gives --------------------------------------------------------------------


def test_evaluate_prints_a_per_intent_report_confusions_with_examples_and_writes_the_errors(tmp_path):
    model = fit().save(tmp_path / "m")
    rows = [*ROWS, ("block my card now", "card"), ("money money", "balance"), ("tell me a joke", "oos")]
    test = write_rows(tmp_path / "test.jsonl", rows)
    errors = tmp_path / "out" / "errors.jsonl"
    result = run("evaluate", model, test, "--errors", errors, terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "per intent" in result.output and "precision" in result.output
    written = [json.loads(line) for line in errors.read_text().splitlines()]
    assert all(set(e) == {"text", "intent", "predicted", "confidence"} for e in written)
    assert all(e["intent"] != e["predicted"] for e in written)
    assert result.output.rstrip().endswith(f"wrote {len(written)} misclassified rows to {errors}")
    as_json = json.loads(run("evaluate", model, test, "--json").stdout)
    assert set(as_json["per_intent"]) >= {"card", "balance", "oos"} and "errors" not in as_json
    assert sum(e["intent"] == "card" for e in written) == round(
        as_json["per_intent"]["card"]["support"] * (1 - as_json["per_intent"]["card"]["recall"])
    )
    for pair in as_json["confused_pairs"]:
        assert pair["examples"] and all(
            {"text": t, "intent": pair["gold"], "predicted": pair["predicted"]}.items() <= e.items()
            for t in pair["examples"]
            for e in written
            if e["text"] == t
        )
    one_line_error(run("evaluate", model, test, "--errors", test), "would overwrite the test file")
    one_line_error(run("evaluate", model, test, "--errors", model / "errors.jsonl"), "inside the model directory")
    one_line_error(run("evaluate", test, "--cv", "2", "--errors", errors), "--errors")


def test_evaluate_cv_loo_says_what_a_round_is(tmp_path):
    data = write_rows(tmp_path / "t.jsonl", [*ROWS, ("my card is lost", "card")])
    result = run("evaluate", data, "--cv", "loo", "--base", tiny_model_dir(), "--adapter", "none", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "leave-one-out cross-validation (3 rounds: round i holds out the i-th example of every intent" in (
        result.output
    )


def test_plain_output_never_wraps_a_path_onto_a_new_line(tmp_path):
    """Piped (not a terminal), at 40 columns: each command's last line holds its whole path."""
    import os
    import subprocess
    import sys

    deep = tmp_path / ("a-rather-long-directory-name-" * 3) / "model"
    model = fit().save(deep)
    review = deep.parent / "review-file-with-a-long-name.jsonl"
    (tmp_path / "logs.txt").write_text("where is my card\nhello\n")
    env = {**os.environ, "COLUMNS": "40"}
    for args, tail in [
        (["discover", str(model), str(tmp_path / "logs.txt"), "-o", str(review)], f"wrote {review}: "),
        (["export", str(model), "-o", f"{deep}-onnx"], f"-> {deep}-onnx ("),
    ]:
        if args[0] == "export":
            pytest.importorskip("onnxruntime")
        command = [sys.executable, "-m", "fewintent.cli.main", *args]
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr
        assert tail in done.stdout.splitlines()[-1], done.stdout


def test_output_files_that_are_links_or_pipes_are_written_through_not_replaced(tmp_path):
    import os
    import stat
    import threading

    model = fit().save(tmp_path / "m")
    test = write_rows(tmp_path / "test.jsonl", [*ROWS, ("tell me a joke", "oos"), ("sing a song", "oos")])
    real = tmp_path / "real.jsonl"
    (tmp_path / "link.jsonl").symlink_to(real)
    assert run("evaluate", model, test, "--errors", tmp_path / "link.jsonl").exit_code == 0
    assert (tmp_path / "link.jsonl").is_symlink() and real.is_file()  # the link was followed, not replaced
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    logs = tmp_path / "logs.txt"
    logs.write_text("where is my card\nsing me a song\n")
    result = run("discover", model, logs, "-o", fifo)  # a pipe needs no --force: it is written, not replaced
    reader.join(timeout=60)
    assert result.exit_code == 0, result.output
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and got and got[0].startswith(b"{")
    assert not list(tmp_path.glob(".pipe*"))


def test_a_multi_label_model_says_micro_f1_after_tuning_and_that_sweep_does_not_apply(tmp_path):
    rows = []
    for i in range(5):
        rows += [
            {"text": f"block my card {i}", "intents": ["card"]},
            {"text": f"refund me {i}", "intents": ["refund"]},
            {"text": f"block my card and refund me {i}", "intents": ["card", "refund"]},
        ]
    data = tmp_path / "ml.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    base = ["--base", tiny_model_dir(), "--adapter", "none", "--device", "cpu"]
    result = run("adapt", data, "-o", tmp_path / "m", *base, "--tune")
    assert result.exit_code == 0, result.output
    assert "held-out micro-F1" in result.output and "held-out accuracy" not in result.output
    card = (tmp_path / "m" / "README.md").read_text()
    assert "(held-out micro-F1" in card and "held-out accuracy" not in card
    result = run("evaluate", tmp_path / "m", data, "--sweep")
    assert result.exit_code == 0 and "--sweep is for single-label models" in result.stderr


def test_calibrate_logs_given_a_labelled_file_says_the_labels_are_ignored(tiny_encoder, tmp_path):
    from helpers import DATA

    model = IntentClassifier(tiny_encoder).fit(DATA).save(tmp_path / "m")  # 12 examples: enough to calibrate
    labelled = write_rows(tmp_path / "held.jsonl", [(f"message number {i}", "card") for i in range(220)])
    result = run("calibrate", model, "--logs", labelled)
    assert result.exit_code == 0, result.output
    assert "has intent labels, which --logs ignores" in result.stderr
    plain_logs = tmp_path / "logs.txt"
    plain_logs.write_text("".join(f"message number {i}\n" for i in range(220)))
    assert "intent labels" not in run("calibrate", model, "--logs", plain_logs).stderr


def test_evaluate_names_the_model_intent_a_test_intent_differs_from_only_by_case(tmp_path):
    model = fit().save(tmp_path / "m")
    test = write_rows(tmp_path / "t.jsonl", [("where is my card", "Card"), ("what is my balance", "balance")])
    result = run("evaluate", model, test)
    assert result.exit_code == 0 and "Card (the model has 'card': only the case differs)" in result.stderr
