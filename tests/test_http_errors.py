"""The server's error answers: a body that is not what it should be, an intent name that needs normalising,
a model that cannot be saved. Each is a JSON error with its status, and the model stays as it was."""

from __future__ import annotations

import errno
import logging
import unicodedata

import pytest
from helpers import (
    NO_SPACE,
    ROWS,
    fit,
)
from safetensors import SafetensorError

from fewintent.model import persistence

# --- the server ----------------------------------------------------------------------------------------------------


@pytest.fixture
def client(tmp_path):
    fastapi = pytest.importorskip("fastapi.testclient")
    from fewintent.serve.app import ServeSettings, create_app

    clf = fit([*ROWS, ("hi there", "greet"), ("hello", "greet")])
    clf.save(tmp_path / "m")
    with fastapi.TestClient(create_app(ServeSettings(model_dir=str(tmp_path / "m")), clf)) as c:
        yield c


# --- request bodies ------------------------------------------------------------------------------------------------


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


def test_http_bodies_with_unknown_keys_are_refused(client):
    r = client.post("/predict", json={"texts": ["hi"], "topk": 1})
    assert r.status_code == 422 and "topk" in r.json()["error"]["message"]
    r = client.post("/intents", json={"name": "x", "example": ["hi"], "examples": ["hi"]})
    assert r.status_code == 422 and "example" in r.json()["error"]["message"]


def test_http_intent_names_are_nfc_and_case_twins_warn(client):
    nfd = unicodedata.normalize("NFD", "café")
    r = client.post("/intents", json={"name": nfd, "examples": ["a latte please"]})
    assert r.status_code == 200 and r.json()["name"] == unicodedata.normalize("NFC", "café"), r.text
    r = client.post("/intents", json={"name": "Card", "examples": ["lost my card"]})
    assert r.status_code == 200 and "only by case" in r.json()["warnings"][0]
    assert client.delete(f"/intents/{nfd}").status_code == 200  # the decomposed spelling finds it


# --- 507 / 503 when the model cannot be saved ----------------------------------------------------------------------


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


def test_docs_says_what_it_is_and_links_the_schema(client):
    page = client.get("/docs")
    assert page.status_code == 200 and "<script" not in page.text
    assert "lists every endpoint" in page.text and "href='/openapi.json'" in page.text
    assert client.get("/openapi.json").json()["paths"]["/predict"]
