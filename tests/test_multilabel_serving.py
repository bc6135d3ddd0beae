"""Everywhere a multi-label model goes after adapt: HTTP (/predict's `intents`, Rasa's /model/parse, live edits,
the OpenAPI schema), the model card, `data validate`'s label statistics, and an int8 ONNX export served without
the training stack (tiny random encoder; the single-label shapes must not change)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from conftest import make_tiny_encoder
from helpers import MULTI_LABEL_ROWS
from typer.testing import CliRunner

from fewintent import IntentClassifier, IntentSet
from fewintent.cli.main import app as cli_app
from fewintent.errors import TRAINING_STACK

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from fewintent.serve.app import ServeSettings, create_app  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ROWS = MULTI_LABEL_ROWS + [("what is the weather", [])]
TEXTS = ["block my card", "did the transfer arrive", "close my account", "write me a poem", "card card card"]
SINGLE = {"greet": ["hi there", "hello", "good morning"], "bye": ["goodbye", "see you", "bye bye"]}


@pytest.fixture(scope="module")
def multi_dir(tmp_path_factory) -> Path:
    clf = IntentClassifier(make_tiny_encoder(), head="onevsrest").fit(IntentSet.from_pairs(ROWS))
    return clf.save(tmp_path_factory.mktemp("ml") / "model")


def _client(model_dir: Path) -> TestClient:
    return TestClient(create_app(ServeSettings(model_dir=str(model_dir), device="cpu")))


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_predict_and_parse_carry_every_intent_that_passes(multi_dir):
    expected = [p.to_dict() for p in IntentClassifier.load(multi_dir, device="cpu").predict(TEXTS, top_k=5)]
    with _client(multi_dir) as c:
        got = c.post("/predict", json={"texts": TEXTS}).json()["predictions"]
        assert [set(p) for p in got] == [{"text", "intent", "is_oos", "intent_ranking", "oos_score", "intents"}] * 5
        for g, e in zip(got, expected):
            assert [x["name"] for x in g["intents"]] == [x["name"] for x in e["intents"]]
            assert g["intents"] == sorted(g["intents"], key=lambda x: -x["confidence"])
            assert g["is_oos"] == (not g["intents"])
            assert g["intent"]["name"] == (g["intents"][0]["name"] if g["intents"] else "oos")
        assert any(len(p["intents"]) >= 2 for p in got) or any(len(e["intents"]) >= 2 for e in expected)
        for text, g in zip(TEXTS, got):
            parse = c.post("/model/parse", json={"text": text}).json()
            assert set(parse) == {"text", "intent", "entities", "intent_ranking", "intents"}
            assert parse["intent"]["name"] == g["intent"]["name"]  # alone, not batched: the same up to float noise
            assert [x["name"] for x in parse["intents"]] == [x["name"] for x in g["intents"]]
            for a, b in zip(parse["intents"], g["intents"]):
                assert a["confidence"] == pytest.approx(b["confidence"], abs=1e-4)
            if g["is_oos"]:  # Rasa's fallback heads the ranking
                assert parse["intent_ranking"][0]["name"] == "oos"
        intents = c.get("/intents").json()
        assert intents["multi_label"] is True and [i["name"] for i in intents["intents"]] == [
            "card",
            "arrival",
            "block",
            "account",
            "transfer",
        ]
        assert {i["name"]: i["examples"] for i in intents["intents"]}["card"] == 4  # an example counts per intent
        assert c.get("/health").json()["multi_label"] is True
        schema = c.get("/openapi.json").json()["components"]["schemas"]
        assert (
            "intents" in schema["PredictionOut"]["properties"] and "intents" in schema["ParseResponse"]["properties"]
        )
        assert "intents" not in schema["PredictionOut"].get("required", [])


def test_single_label_answers_keep_their_shape(tmp_path):
    clf = IntentClassifier(make_tiny_encoder()).fit(
        IntentSet.from_pairs([(t, i) for i, texts in SINGLE.items() for t in texts])
    )
    model_dir = clf.save(tmp_path / "single")
    with _client(model_dir) as c:
        got = c.post("/predict", json={"texts": ["hello", "bye"]}).json()["predictions"]
        assert [set(p) for p in got] == [{"text", "intent", "is_oos", "intent_ranking", "oos_score"}] * 2
        assert set(c.post("/model/parse", json={"text": "hi"}).json()) == {
            "text",
            "intent",
            "entities",
            "intent_ranking",
        }
        assert c.get("/intents").json()["multi_label"] is False and c.get("/health").json()["multi_label"] is False
    card = (model_dir / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert "multi_label" not in front and "multi-label" not in front["tags"] and "multi-label" not in card


def test_live_edits_on_a_multi_label_model_over_http(multi_dir, tmp_path):
    model_dir = _copy(multi_dir, tmp_path / "model")
    with _client(model_dir) as c:
        r = c.post("/intents", json={"name": "loan", "examples": ["i need a loan", "borrow money", "a small loan"]})
        assert r.status_code == 200 and r.json()["created"] is True and r.json()["intents"] == 6, r.text
        assert c.get("/health").json()["intents"] == 6
        p = c.post("/predict", json={"texts": ["i need a loan"]}).json()["predictions"][0]
        assert isinstance(p["intents"], list) and "loan" in {x["name"] for x in p["intent_ranking"]}
        r = c.delete("/intents/block")  # examples of block alone go; card+block keeps card
        assert r.status_code == 200 and r.json() == {
            "name": "block",
            "created": False,
            "removed": True,
            "examples": 0,
            "intents": 5,
            "warnings": [],
        }
        counts = {i["name"]: i["examples"] for i in c.get("/intents").json()["intents"]}
        assert counts == {"card": 4, "arrival": 4, "account": 4, "transfer": 4, "loan": 3}
        assert c.delete("/intents/nope").status_code == 404
        assert c.post("/intents", json={"name": "a++b", "examples": ["x"]}).status_code == 400
        p = c.post("/predict", json={"texts": TEXTS}).json()["predictions"]
        assert all("block" not in {x["name"] for x in q["intents"]} for q in p)
    again = IntentClassifier.load(model_dir, device="cpu")  # saved: the edits survive a restart, still multi-label
    assert again.config.multi_label and again.labels == ["card", "arrival", "account", "transfer", "loan"]
    assert again.table.sets is not None and again.table.sets.shape == (len(again.table.support), 5)


def test_the_model_card_says_multi_label(multi_dir):
    card = (multi_dir / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["multi_label"] is True and "multi-label" in front["tags"]
    assert (
        front["multi_label_decision"]["head"] == "onevsrest"
        and "shared by every intent" in front["multi_label_decision"]["thresholds"]
    )
    assert "no intent passes" in front["multi_label_decision"]["out_of_scope"]
    text = card.split("---", 2)[2]
    assert "**multi-label**" in text and "one threshold chosen" in text and "when none passes" in text


def test_data_validate_reports_labels_per_message_and_co_occurrence(tmp_path):
    multi = tmp_path / "m.jsonl"
    multi.write_text("".join(json.dumps({"text": t, "intents": i}) + "\n" for t, i in ROWS))
    runner = CliRunner()
    result = runner.invoke(cli_app, ["data", "validate", str(multi), "--no-overlap", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["multi_label"] is True and out["labels_per_message"] == {"0": 2, "1": 4, "2": 8}
    assert out["co_occurrence"][:2] == [
        {"intents": ["card", "arrival"], "messages": 2},
        {"intents": ["card", "block"], "messages": 2},
    ]
    assert sum(x["messages"] for x in out["co_occurrence"]) == 8
    result = runner.invoke(cli_app, ["data", "validate", str(multi), "--no-overlap"])
    assert result.exit_code == 0 and "intents per message" in result.stdout and "card + arrival" in result.stdout
    assert "0 (out of scope)" in result.stdout and "1.67 intents per in-scope message" in result.stdout
    single = tmp_path / "s.jsonl"
    single.write_text("".join(json.dumps({"text": t, "intent": i}) + "\n" for i, ts in SINGLE.items() for t in ts))
    result = runner.invoke(cli_app, ["data", "validate", str(single), "--no-overlap", "--json"])
    assert set(json.loads(result.stdout.strip().splitlines()[-1])) == {"intents", "warnings"}
    result = runner.invoke(cli_app, ["data", "validate", str(single), "--no-overlap"])
    assert "intents per message" not in result.stdout and "co-occurrence" not in result.stdout


# An int8 export of a multi-label model, in a fresh interpreter that never imports the training stack.
_LEAN = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from fewintent import IntentClassifier
    from fewintent.cli.main import app
    from fewintent.serve.app import ServeSettings, create_app

    model, expected = Path(sys.argv[1]), json.loads(sys.argv[2])
    clf = IntentClassifier.load(model)
    assert type(clf.encoder).__name__ == "OnnxEncoder" and clf.config.multi_label
    got = [[x.name for x in p.intents] for p in clf.predict(expected["texts"])]
    result = CliRunner().invoke(app, ["predict", str(model), *expected["texts"], "--json"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [[x["name"] for x in line["intents"]] for line in lines] == got
    with TestClient(create_app(ServeSettings(model_dir=str(model)))) as c:
        http = c.post("/predict", json={"texts": expected["texts"]}).json()["predictions"]
        assert [[x["name"] for x in p["intents"]] for p in http] == got
        r = c.post("/intents", json={"name": "loan", "examples": ["i need a loan", "borrow money"]})
        assert r.status_code == 200 and r.json()["intents"] == 6, r.text
    forbidden = sorted(m for m in sys.modules if m.split(".")[0] in json.loads(sys.argv[3]))
    print(json.dumps({"intents": got, "forbidden": forbidden}))
    """
)


def test_an_int8_multi_label_export_predicts_and_serves_without_torch(multi_dir, tmp_path):
    pytest.importorskip("onnxruntime")
    runner = CliRunner()
    out = tmp_path / "int8"
    result = runner.invoke(
        cli_app, ["export", str(multi_dir), "-o", str(out), "--format", "onnx", "--quantize", "int8"]
    )
    assert result.exit_code == 0, result.output
    card = yaml.safe_load((out / "README.md").read_text().split("---")[1])
    assert card["multi_label"] is True
    torch_answer = [[x.name for x in p.intents] for p in IntentClassifier.load(multi_dir, device="cpu").predict(TEXTS)]
    run = subprocess.run(
        [sys.executable, "-c", _LEAN, str(out), json.dumps({"texts": TEXTS}), json.dumps(TRAINING_STACK)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lean = json.loads(run.stdout.strip().splitlines()[-1])
    assert lean["forbidden"] == [], f"imported on the serving path: {lean['forbidden']}"
    # int8 weights move the margins a little; on a random tiny encoder most answers still agree
    agree = sum(a == b for a, b in zip(lean["intents"], torch_answer))
    assert agree >= len(TEXTS) - 2, (lean["intents"], torch_answer)
