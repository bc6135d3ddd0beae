"""What `fewintent predict` shows a person: the runner-up beside each answer, and the quickstart example."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import make_tiny_encoder
from typer.testing import CliRunner

from fewintent import IntentClassifier, IntentSet
from fewintent.cli.main import app

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()
DATA = IntentSet.from_pairs([(f"{w} number {i}", w) for w in ("alpha", "beta", "gamma") for i in range(4)])


def test_the_runner_up_of_an_out_of_scope_answer_is_the_best_in_scope_intent(tmp_path):
    clf = IntentClassifier(make_tiny_encoder()).fit(DATA)
    clf.threshold = 1.0  # every message out of scope: the ranking's first intent is what the fallback overruled
    model = clf.save(tmp_path / "m")
    texts = ["alpha number 9", "beta beta"]
    lines = runner.invoke(app, ["predict", str(model), *texts, "--json"]).stdout.splitlines()
    rankings = [json.loads(line)["intent_ranking"] for line in lines]
    result = runner.invoke(app, ["predict", str(model), *texts], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if any(t in line for t in texts)]
    assert len(rows) == 2
    for row, ranking in zip(rows, rankings):
        best, second = ranking[0], ranking[1]
        assert f"{best['name']} {best['confidence']:.2f}" in row, row
        assert f"{second['name']} {second['confidence']:.2f}" not in row, row


def test_the_runner_up_of_an_in_scope_answer_is_the_second_intent(tmp_path):
    model = IntentClassifier(make_tiny_encoder()).fit(DATA).save(tmp_path / "m")
    line = runner.invoke(app, ["predict", str(model), "alpha number 9", "--json"]).stdout.splitlines()[0]
    p = json.loads(line)
    result = runner.invoke(app, ["predict", str(model), "alpha number 9"], env={"COLUMNS": "200"})
    if not p["is_oos"]:
        second = p["intent_ranking"][1]
        assert f"{second['name']} {second['confidence']:.2f}" in result.stdout, result.stdout


def test_quickstart_keeps_models_demo_and_names_the_best_in_scope_runner_up(tmp_path):
    demo = IntentClassifier(make_tiny_encoder()).fit(DATA).save(tmp_path / "models" / "demo")  # the README's model
    before = {f.name: f.read_bytes() for f in demo.iterdir()}
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert {f.name: f.read_bytes() for f in demo.iterdir()} == before
    assert "models/quickstart" in result.stdout and (tmp_path / "models" / "quickstart" / "config.json").is_file()
    from fewintent import read_intent_file

    clf = IntentClassifier.adapt(read_intent_file(ROOT / "data" / "demo_company.jsonl"))  # what the example did
    poem = clf.predict(["write me a poem about the sea"])[0]
    line = next(x for x in result.stdout.splitlines() if "poem" in x)
    expected = poem.intent_ranking[0] if poem.is_oos else poem.intent_ranking[1]
    assert line.rstrip().endswith(f"(next: {expected.name})"), (line, poem)
