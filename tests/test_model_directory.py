"""A model directory: saving and loading, leftovers of killed saves, symlinks, config.json checks, a base
whose tokenizer changed, a full disk. Each damaged directory is refused in one line; a failed save keeps the
previous model."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shutil
import stat
from pathlib import Path

import pytest
from conftest import tiny_model_dir
from helpers import (
    DATA,
    NO_SPACE,
    ROWS,
    SMALL,
    edit_config,
    fit,
    no_leftovers,
    one_line_error,
    read_intent_file_from_text,
    run,
    runner,
    write_rows,
)
from safetensors import SafetensorError

from fewintent import FewIntentError, IntentClassifier
from fewintent.cli.main import app
from fewintent.errors import CorruptModelError
from fewintent.model import persistence, storage

# --- a base's tokenizer --------------------------------------------------------------------------------------------


TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


def _base_without_tokenizer(tmp_path: Path) -> Path:
    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir(), base)
    for name in TOKENIZER_FILES:
        (base / name).unlink(missing_ok=True)
    return base


def test_base_without_tokenizer_is_refused_at_adapt(small_file, tmp_path):
    base = _base_without_tokenizer(tmp_path)
    result = run("adapt", small_file, "-o", tmp_path / "m", "--base", base, "--adapter", "none")
    one_line_error(result, "tokenizer")
    assert not (tmp_path / "m").exists()


def test_model_whose_base_lost_its_tokenizer_refuses_to_load(small_file, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir(), base)
    assert run("adapt", small_file, "-o", tmp_path / "m", "--base", base, "--adapter", "none").exit_code == 0
    assert json.loads((tmp_path / "m" / "config.json").read_text())["tokenizer_sha256"]
    for name in TOKENIZER_FILES:
        (base / name).unlink(missing_ok=True)
    one_line_error(run("predict", tmp_path / "m", "hello"), "tokenizer")


def test_model_whose_base_tokenizer_was_replaced_refuses_to_load(small_file, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir(), base)
    assert run("adapt", small_file, "-o", tmp_path / "m", "--base", base, "--adapter", "none").exit_code == 0
    vocab = (base / "tokenizer.json").read_text()
    (base / "tokenizer.json").write_text(vocab.replace('"hello"', '"hellp"'))  # same size, another tokenizer
    one_line_error(run("predict", tmp_path / "m", "hello"), "tokenizer")


# --- config.json is strict -----------------------------------------------------------------------------------------


def test_saved_config_is_strict_json_and_corrupt_thresholds_are_refused(tiny_encoder, tmp_path):
    clf = IntentClassifier(tiny_encoder).fit(read_intent_file_from_text(SMALL))
    clf.threshold = 0.25
    clf.save(tmp_path / "m")

    def no_constants(name: str):
        raise AssertionError(f"non-standard JSON constant {name}")

    config = json.loads((tmp_path / "m" / "config.json").read_text(), parse_constant=no_constants)
    assert config["threshold"] == 0.25
    text = (tmp_path / "m" / "config.json").read_text().replace('"threshold": 0.25', '"threshold": NaN')
    (tmp_path / "m" / "config.json").write_text(text)
    one_line_error(run("predict", tmp_path / "m", "hello"), "threshold")


@pytest.mark.parametrize("version", ["2", None, "abc", 0, -1, 1.5, True])
def test_bad_format_version_is_one_line(tiny_encoder, tmp_path, version):
    IntentClassifier(tiny_encoder).fit(read_intent_file_from_text(SMALL)).save(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["format_version"] = version
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    one_line_error(run("predict", tmp_path / "m", "hello"), "format_version")


@pytest.mark.parametrize(
    "key, value",
    [
        ("labels", "ab"),
        ("labels", [0, 1]),
        ("labels", ["card", "card"]),
        ("oos_label", 7),
        ("head", "forest"),
        ("intent_names", "yes"),
        ("max_length", "long"),
        ("threshold_manual", "no"),
    ],
)
def test_config_fields_of_the_wrong_type_are_refused(tiny_encoder, tmp_path, key, value):
    IntentClassifier(tiny_encoder).fit(read_intent_file_from_text(SMALL)).save(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    (config["classifier"] if key in config["classifier"] else config)[key] = value
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    one_line_error(run("predict", tmp_path / "m", "hello"), key)


FIXTURE = Path(__file__).parent / "fixtures" / "model-format-2"


def _fixture_copy(tmp_path: Path) -> Path:
    target = tmp_path / "m"
    shutil.copytree(FIXTURE, target)
    return target


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("lora", ...),
        ("lora", None),
        ("classifier", ...),
        ("classifier", None),
        ("threshold", ...),
        ("base_model", ...),
        ("oos_temperature", ...),
        ("max_length", ...),
    ],
)
def test_a_config_missing_what_its_format_needs_is_refused(tmp_path, key, value):
    model = _fixture_copy(tmp_path)
    edit_config(model, **{key: value})
    with pytest.raises(CorruptModelError, match=f"lacks '{key}'"):
        IntentClassifier.load(model)
    result = runner.invoke(app, ["predict", str(model), "hello"])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and f"lacks '{key}'" in result.output


def test_lora_is_required_when_the_meta_names_an_adapter_even_without_the_file(tmp_path):
    model = _fixture_copy(tmp_path)
    (model / "lora.safetensors").unlink()
    edit_config(model, lora=None)
    with pytest.raises(CorruptModelError, match="lacks 'lora'"):
        IntentClassifier.load(model)


def test_classifier_must_be_an_object(tmp_path):
    model = _fixture_copy(tmp_path)
    edit_config(model, classifier=["linear"])
    with pytest.raises(CorruptModelError, match='"classifier" must be an object'):
        IntentClassifier.load(model)


def test_a_model_without_an_adapter_still_loads_with_lora_null(tiny_encoder, tmp_path):
    clf = IntentClassifier(tiny_encoder, head="prototype").fit(DATA)
    clf.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["lora"] is None
    again = IntentClassifier.load(tmp_path / "m")
    texts = ["hi", "lost my card"]
    assert [p.to_dict() for p in again.predict(texts)] == [p.to_dict() for p in clf.predict(texts)]


# --- saving: leftovers, names --------------------------------------------------------------------------------------


def test_killed_save_leftovers_are_cleaned_and_files_are_readable(tiny_encoder, tmp_path):
    clf = IntentClassifier(tiny_encoder).fit(read_intent_file_from_text(SMALL))
    dead = tmp_path / ".m.tmp-999999999-abc"  # a pid that cannot exist: its save was killed
    dead.mkdir()
    (dead / "model.safetensors").write_bytes(b"half")
    alive = tmp_path / f".m.tmp-{os.getpid()}-xyz"  # a save in progress in a live process stays
    alive.mkdir()
    old = os.umask(0o022)
    try:
        clf.save(tmp_path / "m")
    finally:
        os.umask(old)
    assert not dead.exists() and alive.exists()
    for f in (tmp_path / "m").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f


def test_leftovers_of_a_model_named_with_glob_characters_are_cleaned(tmp_path):
    model = fit().save(tmp_path / "m[1]")
    (tmp_path / ".m[1].tmp-99999999-abc").mkdir()  # a killed save's
    fit().save(model)
    assert no_leftovers(tmp_path) == []


def test_a_model_name_too_long_for_its_temporary_folder_is_refused_before_work(tmp_path):
    data = write_rows(tmp_path / "d.jsonl", ROWS)
    one_line_error(run("adapt", data, "-o", tmp_path / ("x" * 240), "--adapter", "none"), "at most 233")


# --- symlinked model directories -----------------------------------------------------------------------------------


def test_saving_through_a_symlink_replaces_the_target_and_keeps_the_link(tmp_path):
    real, link = tmp_path / "real", tmp_path / "link"
    fit().save(real)
    link.symlink_to("real")
    clf = fit([*ROWS, ("hi", "greet"), ("hello", "greet")])
    clf.save(link)
    assert link.is_symlink() and os.readlink(link) == "real"
    assert IntentClassifier.load(real).labels == ["card", "balance", "greet"]
    clf.save(link)  # twice: no backup of the first save is left to revive
    assert no_leftovers(tmp_path) == [] and link.is_symlink()
    assert IntentClassifier.load(link).labels == ["card", "balance", "greet"]


def test_adapt_through_a_symlink_and_a_dangling_one(tmp_path):
    data = write_rows(tmp_path / "d.jsonl", ROWS)
    (tmp_path / "link").symlink_to(tmp_path / "real")  # dangling: adapt creates the target
    for _ in range(2):
        result = run("adapt", data, "-o", tmp_path / "link", "--base", tiny_model_dir(), "--adapter", "none")
        assert result.exit_code == 0, result.output
    assert (tmp_path / "link").is_symlink() and (tmp_path / "real" / "config.json").is_file()
    assert no_leftovers(tmp_path) == []


def test_symlink_loop_is_one_line(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(FewIntentError, match="symbolic link"):
        fit().save(tmp_path / "a")
    one_line_error(run("predict", tmp_path / "a", "hi"))


def test_a_stale_backup_is_never_revived(tmp_path):
    """Only a backup with its save's temporary folder beside it (a crash between the renames) is put back."""
    model = fit().save(tmp_path / "m")
    shutil.copytree(model, tmp_path / ".m.old-99999999-abc")  # a backup whose cleanup failed
    (tmp_path / ".m.old-99999998-def").symlink_to(model)  # what older releases left for a symlinked model
    shutil.rmtree(model)  # the user deletes the model on purpose
    with pytest.raises(CorruptModelError, match="not restored automatically"):
        IntentClassifier.load(tmp_path / "m")
    assert not model.exists()
    fit().save(model)  # the next save clears the leftovers
    assert no_leftovers(tmp_path) == []


def test_old_symlink_backup_does_not_answer_for_a_deleted_link(tmp_path):
    real, link = tmp_path / "real", tmp_path / "link"
    fit().save(real)
    (tmp_path / ".link.old-99999999-abc").symlink_to(real)  # left by a save that replaced the link
    link.mkdir()
    shutil.rmtree(link)
    one_line_error(run("predict", link, "where is my card"), "no such model directory")


def test_server_edits_a_symlinked_model_in_place(tmp_path):
    from fewintent.serve import ModelStore

    real, link = tmp_path / "real", tmp_path / "link"
    clf = fit()
    clf.save(real)
    link.symlink_to(real)
    store = ModelStore(link, clf, device="cpu")
    asyncio.run(store.add_intent("greet", ["hi", "hello there"]))
    assert link.is_symlink() and IntentClassifier.load(real).labels == ["card", "balance", "greet"]
    assert no_leftovers(tmp_path) == []


def test_python_export_to_a_symlink_of_the_model_is_refused(tmp_path):
    model = fit().save(tmp_path / "m")
    (tmp_path / "link").symlink_to(model)
    with pytest.raises(FewIntentError, match="itself"):
        IntentClassifier.export(model, tmp_path / "link")


def test_export_to_a_symlink_of_the_model_is_refused(tmp_path):
    model = fit().save(tmp_path / "m")
    (tmp_path / "link").symlink_to(model)
    before = (model / "config.json").read_text()
    one_line_error(run("export", model, "-o", tmp_path / "link"), "itself")
    assert (model / "config.json").read_text() == before


# --- a model directory is replaced whole: nothing is written inside one, and none holds another --------------------


@pytest.fixture
def tiny_model(tiny_encoder, tmp_path) -> Path:
    IntentClassifier(tiny_encoder, head="prototype").fit(DATA).save(tmp_path / "m")
    return tmp_path / "m"


def test_a_model_is_never_saved_inside_another_model(tiny_model, tmp_path):
    clf = IntentClassifier.load(tiny_model)
    with pytest.raises(FewIntentError, match="inside the model directory .* replaced whole"):
        clf.save(tiny_model / "onnx")
    assert not (tiny_model / "onnx").exists()
    result = runner.invoke(app, ["adapt", str(tmp_path / "train.csv"), "-o", str(tiny_model / "sub" / "x")])
    assert result.exit_code == 1 and "inside the model directory" in result.output


def test_a_model_holding_another_is_not_replaced_by_a_save(tiny_model):
    shutil.copytree(tiny_model, tiny_model / "old")  # as an earlier release let `export m -o m/old` write it
    clf = IntentClassifier.load(tiny_model)
    with pytest.raises(FewIntentError, match="holds another model"):
        clf.save(tiny_model)
    assert (tiny_model / "old" / "config.json").exists()
    with pytest.raises(FewIntentError, match="inside the model directory"):
        IntentClassifier.load(tiny_model / "old").save(tiny_model / "old")


def test_export_onto_another_existing_model_needs_force(tiny_model, tiny_encoder, tmp_path):
    IntentClassifier(tiny_encoder, head="prototype").fit(DATA).save(tmp_path / "other")
    before = (tmp_path / "other" / "config.json").read_text()
    result = runner.invoke(app, ["export", str(tiny_model), "-o", str(tmp_path / "other")])
    assert result.exit_code == 1 and "--force" in result.output and result.output.count("\n") == 1
    assert (tmp_path / "other" / "config.json").read_text() == before
    result = runner.invoke(app, ["export", str(tiny_model), "-o", str(tiny_model / "onnx"), "--force"])
    assert result.exit_code == 1 and "inside the model directory" in result.output


# --- full disk: one line naming the directory ----------------------------------------------------------------------


def _disk_full(*args, **kwargs):
    raise SafetensorError(NO_SPACE)


def test_full_disk_is_one_line_and_keeps_the_model(tmp_path, monkeypatch):
    model = fit().save(tmp_path / "m")
    before = {p.name: p.read_bytes() for p in model.iterdir()}
    rows = [(f"where is my card {i}", "card") for i in range(10)] + [(f"weather {i}", "oos") for i in range(3)]
    held_out = write_rows(tmp_path / "valid.jsonl", rows)  # calibrate needs 10 in-scope and 3 OOS rows (issue 34)
    monkeypatch.setattr(persistence, "save_file", _disk_full)
    with pytest.raises(storage.StorageError, match=r"No space left on device \(it needs about [0-9.]+ [KMG]iB"):
        fit().save(model)
    one_line_error(run("calibrate", model, held_out), str(model), "No space left", "previous model is unchanged")
    one_line_error(run("calibrate", model, held_out, "--json"), "No space left")
    assert {p.name: p.read_bytes() for p in model.iterdir()} == before
    assert no_leftovers(tmp_path) == []


def test_full_disk_on_a_new_directory_says_nothing_was_written(tmp_path, monkeypatch):
    def full(path, text, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(storage.StorageError, match="nothing was written") as e:
        fit().save(tmp_path / "new")
    assert e.value.no_space and not (tmp_path / "new").exists() and no_leftovers(tmp_path) == []


# --- an exported (ONNX) directory's config.json -----------------------------------------------------------------


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory) -> Path:
    pytest.importorskip("onnxruntime")
    root = tmp_path_factory.mktemp("onnx")
    fit().save(root / "torch")
    IntentClassifier.export(root / "torch", root / "onnx")
    return root / "onnx"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("file", "../torch/model.safetensors", "must be a file name inside the model directory"),
        ("file", "/etc/passwd", "must be a file name inside the model directory"),
        ("data", "..", "must be a file name inside the model directory"),
        ("file", 7, "must be a file name inside the model directory"),
        ("sha256", ..., "lacks 'encoder.sha256'"),
        ("data_sha256", None, "lacks 'encoder.data_sha256'"),
    ],
)
def test_an_onnx_config_naming_other_files_or_lacking_their_hash_is_refused(onnx_dir, tmp_path, key, value, message):
    model = Path(shutil.copytree(onnx_dir, tmp_path / "o"))
    config = json.loads((model / "config.json").read_text())
    if value is ...:
        del config["encoder"][key]
    else:
        config["encoder"][key] = value
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(CorruptModelError, match=message):
        IntentClassifier.load(model)
    one_line_error(run("predict", model, "hello"), message)
