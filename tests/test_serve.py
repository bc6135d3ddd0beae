"""The HTTP server for real: uvicorn on a loopback port, over a model adapted with the packaged MiniLM."""

# ruff: noqa: E402  (the [serve] extra is optional: skip before importing what needs it)

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from typer.testing import CliRunner

from fewintent.cli.main import app as cli_app
from fewintent.data import IntentSet
from fewintent.errors import FewIntentError
from fewintent.model import IntentClassifier, persistence
from fewintent.serve import MicroBatcher, ModelStore
from fewintent.serve import app as serve_app
from fewintent.serve.app import SETTINGS_ENV, ServeSettings, create_app

INTENTS = {
    "greet": ["hi there", "hello", "good morning", "hey, how are you doing"],
    "order_status": ["where is my order", "has my package shipped", "track my parcel", "when will my order arrive"],
    "refund": ["I want my money back", "refund my purchase please", "how do I get a refund", "can I get reimbursed"],
}
OOS = ["what is the capital of france", "tell me a joke about cats"]
NEW_NAME = "book_table"
NEW_EXAMPLES = ["book a table for two", "reserve a table tonight", "a dinner reservation please", "table for 4 at 8pm"]
NEW_QUERY = "can you reserve a table for six people tomorrow evening"
KEY = "test-key-123"


def _intent_set() -> IntentSet:
    pairs = [(t, i) for i, texts in INTENTS.items() for t in texts] + [(t, "oos") for t in OOS]
    return IntentSet.from_pairs(pairs)


@pytest.fixture
def model(real_encoder, tmp_path) -> tuple[IntentClassifier, Path]:
    """A classifier over INTENTS (sharing the session's MiniLM) and the directory it is saved in."""
    clf = IntentClassifier(real_encoder).fit(_intent_set())
    return clf, clf.save(tmp_path / "model")


class LiveServer:
    """uvicorn in a thread, on a socket bound here to a free loopback port (no port race)."""

    def __init__(self, app) -> None:
        self.app = app
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, trust_env=False, **kw)


@contextmanager
def serving(model_dir: Path, classifier: IntentClassifier | None = None, **settings) -> Iterator[LiveServer]:
    with LiveServer(create_app(ServeSettings(model_dir=str(model_dir), **settings), classifier)) as server:
        yield server


def assert_error(r: httpx.Response, status: int, type_: str, words: str = "") -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert err["status"] == status and err["type"] == type_ and isinstance(err["message"], str) and err["message"]
    assert words.lower() in err["message"].lower(), err["message"]
    return err


def labels_of(server: LiveServer) -> list[str]:
    with server.client() as c:
        return [i["name"] for i in c.get("/intents").json()["intents"]]


# ----------------------------------------------------------------- predict
def test_predict_is_the_predict_json_contract(model):
    clf, model_dir = model
    texts = ["where's my package?", "hello!", "please refund me", "what is the tallest mountain"]
    expected = [p.to_dict() for p in clf.predict(texts, top_k=5)]
    with serving(model_dir, clf) as server, server.client() as c:
        r = c.post("/predict", json={"texts": texts})
        assert r.status_code == 200, r.text
        got = r.json()["predictions"]
        assert [set(p) for p in got] == [{"text", "intent", "is_oos", "intent_ranking", "oos_score"}] * len(texts)
        for g, e in zip(got, expected):
            assert g["text"] == e["text"] and g["is_oos"] == e["is_oos"]
            assert g["intent"]["name"] == e["intent"]["name"]
            assert g["intent"]["confidence"] == pytest.approx(e["intent"]["confidence"], abs=1e-4)
            assert [x["name"] for x in g["intent_ranking"]] == [x["name"] for x in e["intent_ranking"]]
        assert [g["intent"]["name"] for g in got[:3]] == ["order_status", "greet", "refund"]

        one = c.post("/predict", json={"texts": ["hi"], "top_k": 1}).json()["predictions"][0]
        assert len(one["intent_ranking"]) == 1
        assert c.post("/predict", json={"texts": []}).json() == {"predictions": []}
        health = c.get("/health").json()
        assert health["status"] == "ok" and health["intents"] == 3 and health["model"].endswith("all-MiniLM-L6-v2")
        intents = c.get("/intents").json()
        assert intents == {
            "intents": [{"name": n, "examples": 4, "tuned": False} for n in INTENTS],
            "oos_label": "oos",
            "multi_label": False,
        }
        assert c.get("/docs").status_code == 200
        assert "/intents/{name}" in c.get("/openapi.json").json()["paths"]


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(model):
    clf, model_dir = model
    queries = [f"{t} please" for texts in INTENTS.values() for t in texts]
    expected = {q: p.intent.name for q, p in zip(queries, clf.predict(queries))}

    async def main(url: str) -> list[dict]:
        async with httpx.AsyncClient(base_url=url, timeout=60, trust_env=False) as c:
            rs = await asyncio.gather(*(c.post("/predict", json={"texts": [q]}) for q in queries * 2))
            return [r.json()["predictions"][0] for r in rs]

    with serving(model_dir, clf, max_wait_ms=20) as server:
        got = asyncio.run(main(server.url))
        with server.client() as c:
            stats = c.get("/health").json()["batching"]
    assert [(g["text"], g["intent"]["name"]) for g in got] == [(q, expected[q]) for q in queries * 2]
    assert stats["requests"] == 2 * len(queries) and stats["batches"] < stats["requests"], stats


# ----------------------------------------------------------------- errors
def test_every_error_is_json_with_its_status(model):
    clf, model_dir = model
    with serving(model_dir, clf, max_texts=4, max_chars=50) as server, server.client() as c:
        r = c.post("/predict", content=b'{"texts": ["unterminated', headers={"content-type": "application/json"})
        assert_error(r, 422, "validation_error", "json")
        err = assert_error(c.post("/predict", json={"text": "hi"}), 422, "validation_error", "texts")
        assert err["details"][0]["loc"] == ["body", "texts"]
        assert_error(c.post("/predict", json={"texts": "hi"}), 422, "validation_error")
        assert_error(c.post("/predict", json={"texts": [1, 2]}), 422, "validation_error")
        assert_error(c.post("/predict", json={"texts": ["hi"], "top_k": 0}), 422, "validation_error", "top_k")
        assert_error(c.post("/intents", json={"name": "x"}), 422, "validation_error", "examples")

        assert_error(c.post("/predict", json={"texts": ["a"] * 5}), 413, "payload_too_large", "at most 4")
        assert_error(c.post("/predict", json={"texts": ["ok", "x" * 51]}), 413, "payload_too_large", "texts[1]")
        assert_error(c.post("/intents", json={"name": "n", "examples": ["e"] * 5}), 413, "payload_too_large")
        big = b'{"texts": ["' + b"x" * 2_000_000 + b'"]}'
        assert_error(c.post("/predict", content=big), 413, "payload_too_large", "byte limit")

        def chunked():  # no Content-Length: counted while it streams
            yield b'{"texts": ["'
            yield from [b"x" * 8192] * 16
            yield b'"]}'

        r = c.post("/predict", content=chunked(), headers={"content-type": "application/json"})
        assert_error(r, 413, "payload_too_large", "byte limit")

        assert_error(c.get("/nope"), 404, "not_found", "/nope")
        page = c.get("/docs")  # served from here, no CDN script: readable offline
        assert page.status_code == 200 and "POST /predict" in page.text and "<script" not in page.text
        assert_error(c.delete("/intents/no_such_intent"), 404, "not_found", "no_such_intent")
        assert_error(c.put("/predict", json={"texts": ["hi"]}), 405, "method_not_allowed")
        # FewIntentError from the classifier: a 4xx with its message
        assert_error(c.post("/intents", json={"name": "oos", "examples": ["x"]}), 400, "bad_request", "out-of-scope")
        assert_error(c.post("/intents", json={"name": "  ", "examples": ["x"]}), 400, "bad_request", "name")
        # a name with a newline could never be deleted again (the route cannot match it): refused up front
        assert_error(c.post("/intents", json={"name": "a\nb", "examples": ["x"]}), 400, "bad_request", "control")
        # a lone surrogate (valid JSON, not valid UTF-8) is classified, not a 500
        r = c.post(
            "/predict",
            content=b'{"texts": ["\\ud800 where is my order"]}',
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 200, r.text
        assert c.delete("/intents/greet").status_code == 200
        assert_error(c.delete("/intents/refund"), 409, "conflict", "at least 2")
        assert labels_of(server) == ["order_status", "refund"]


def test_mutations_need_the_key_when_one_is_set(model, monkeypatch):
    clf, model_dir = model
    body = {"name": NEW_NAME, "examples": NEW_EXAMPLES}
    with serving(model_dir, clf, api_key=KEY) as server, server.client() as c:
        r = c.post("/intents", json=body)
        assert_error(r, 401, "unauthorized", "bearer")
        assert r.headers["www-authenticate"] == "Bearer"
        assert_error(c.post("/intents", json=body, headers={"Authorization": "Bearer wrong"}), 401, "unauthorized")
        assert_error(c.post("/intents", json=body, headers={"Authorization": f"Basic {KEY}"}), 401, "unauthorized")
        assert_error(c.delete("/intents/greet"), 401, "unauthorized")
        assert c.post("/predict", json={"texts": ["hi"]}).status_code == 200  # reading needs no key
        assert NEW_NAME not in labels_of(server)
        ok = c.post("/intents", json=body, headers={"Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200 and ok.json()["created"] is True
    monkeypatch.setenv("FEWINTENT_API_KEY", KEY)
    with serving(model_dir, clf) as server, server.client() as c:
        assert_error(c.delete("/intents/greet"), 401, "unauthorized")
        assert c.delete("/intents/greet", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


# ----------------------------------------------------------------- live edits
def test_add_intent_predict_it_and_it_survives_a_restart(model):
    clf, model_dir = model
    with serving(model_dir, clf) as server, server.client() as c:
        r = c.post("/intents", json={"name": NEW_NAME, "examples": NEW_EXAMPLES + ["book a table for two"]})
        assert r.status_code == 200, r.text
        assert r.json() == {
            "name": NEW_NAME,
            "created": True,
            "removed": False,
            "examples": 4,
            "intents": 4,
            "warnings": [],
        }
        pred = c.post("/predict", json={"texts": [NEW_QUERY]}).json()["predictions"][0]
        assert pred["intent"]["name"] == NEW_NAME and not pred["is_oos"]
        replaced = c.post("/intents", json={"name": "greet", "examples": ["hi", "hello there", "hey"]}).json()
        assert replaced["created"] is False and replaced["examples"] == 3
    assert not [p.name for p in model_dir.parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    # A new server process would only have the directory: load it from disk, with a fresh encoder.
    with serving(model_dir) as server, server.client() as c:
        assert {i["name"]: i["examples"] for i in c.get("/intents").json()["intents"]} == {
            "greet": 3,
            "order_status": 4,
            "refund": 4,
            NEW_NAME: 4,
        }
        assert c.post("/predict", json={"texts": [NEW_QUERY]}).json()["predictions"][0]["intent"]["name"] == NEW_NAME


def test_predictions_during_edits_never_see_a_half_updated_model(model):
    clf, model_dir = model
    before = frozenset(INTENTS)
    after_add = before | {NEW_NAME}
    after_remove = after_add - {"refund"}
    valid = {before, after_add, after_remove}
    seen: list[tuple[float, float, frozenset[str]]] = []  # (sent, answered, intents in the ranking)

    async def reader(c: httpx.AsyncClient, stop: asyncio.Event) -> None:
        texts = [NEW_QUERY, "refund please", "hello"]
        while not stop.is_set():
            sent = time.monotonic()
            r = await c.post("/predict", json={"texts": texts, "top_k": 100})
            answered = time.monotonic()
            assert r.status_code == 200, r.text
            for p in r.json()["predictions"]:
                names = frozenset(x["name"] for x in p["intent_ranking"])
                assert sum(x["confidence"] for x in p["intent_ranking"]) == pytest.approx(1.0, abs=1e-4)
                seen.append((sent, answered, names))

    async def main(url: str) -> tuple[float, float, float, float]:
        stop = asyncio.Event()
        async with httpx.AsyncClient(base_url=url, timeout=60, trust_env=False) as c:
            readers = [asyncio.create_task(reader(c, stop)) for _ in range(6)]
            await asyncio.sleep(1.0)
            add_sent = time.monotonic()
            r = await c.post("/intents", json={"name": NEW_NAME, "examples": NEW_EXAMPLES})
            assert r.status_code == 200
            added = time.monotonic()
            await asyncio.sleep(1.0)
            remove_sent = time.monotonic()
            assert (await c.delete("/intents/refund")).status_code == 200
            removed = time.monotonic()
            await asyncio.sleep(1.0)
            stop.set()
            await asyncio.gather(*readers)
        return add_sent, added, remove_sent, removed

    with serving(model_dir, clf) as server:
        add_sent, added, remove_sent, removed = asyncio.run(main(server.url))
        assert server.app.state.store.reloads == 0  # its own saves never make a server reload
    assert len(seen) > 30
    assert {names for _, _, names in seen} == valid
    # Read-after-write, strictly: a request answers with the state of some moment between its sending and its
    # answer. So one answered before an edit was sent never sees it, and one sent after an edit answered always
    # does. A request still in flight when the next edit is sent may see either side of that edit: it is
    # concurrent with it (the check that once flagged those as a race lumped them in with later requests).
    for sent, answered, names in seen:
        if answered < add_sent:
            assert names == before, (sent, answered, names)
        if added < sent and answered < remove_sent:
            assert names == after_add, (sent, answered, names)
        if added < sent < removed:
            assert names in (after_add, after_remove), (sent, answered, names)
        if removed < sent:
            assert names == after_remove, (sent, answered, names)


def test_a_stale_check_racing_an_edits_own_save_sees_the_edit(tiny_encoder, tmp_path, monkeypatch):
    """Between the save and the swap the disk is ahead of memory: a request then waits for the edit, never reloads."""
    clf = IntentClassifier(tiny_encoder).fit(_intent_set())
    model_dir = clf.save(tmp_path / "model")
    store = ModelStore(model_dir, clf, device="cpu")
    racing: list[list[str]] = []
    stale_during_save: list[bool] = []
    threads: list[threading.Thread] = []
    real_save = IntentClassifier.save

    def save_then_race(self: IntentClassifier, path, **kw):
        out = real_save(self, path, **kw)
        stale_during_save.append(store.is_stale())
        # A request arriving now, from another thread: it must block on the edit, then answer with the edit.
        t = threading.Thread(target=lambda: racing.append(asyncio.run(store.current()).labels))
        t.start()
        t.join(0.2)
        assert t.is_alive(), "a stale check during an edit must wait for that edit"
        threads.append(t)
        return out

    monkeypatch.setattr(IntentClassifier, "save", save_then_race)
    edited, created = asyncio.run(store.add_intent(NEW_NAME, NEW_EXAMPLES))
    monkeypatch.undo()
    for t in threads:
        t.join(30)
    assert created and stale_during_save == [True]
    assert racing == [[*INTENTS, NEW_NAME]]
    assert store.classifier is edited and not store.is_stale() and store.reloads == 0
    assert asyncio.run(store.current()) is edited
    assert IntentClassifier.load(model_dir, device="cpu").labels == edited.labels


@pytest.mark.parametrize("where", ["writing tensors", "swapping directories"])
def test_a_crash_while_saving_keeps_the_previous_model(model, monkeypatch, where):
    clf, model_dir = model
    if where == "writing tensors":

        def boom(*a, **k):
            raise OSError("disk full (simulated)")

        monkeypatch.setattr(persistence, "save_file", boom)
    else:
        real_rename = os.rename

        def rename(src, dst):
            if ".tmp-" in os.fspath(src):
                raise OSError("power cut (simulated)")
            return real_rename(src, dst)

        monkeypatch.setattr(persistence.os, "rename", rename)
    with serving(model_dir, clf) as server, server.client() as c:
        r = c.post("/intents", json={"name": NEW_NAME, "examples": NEW_EXAMPLES})
        assert_error(r, 500, "internal_error", "simulated")
        assert labels_of(server) == list(INTENTS)  # still serving the previous model
        monkeypatch.undo()
        reloaded = IntentClassifier.load(model_dir)
        assert reloaded.labels == list(INTENTS)
        assert [p.intent.name for p in reloaded.predict(["track my parcel"])] == ["order_status"]
        assert not [p.name for p in model_dir.parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
        assert c.post("/intents", json={"name": NEW_NAME, "examples": NEW_EXAMPLES}).status_code == 200


def test_servers_on_one_directory_see_each_others_edits(model, real_encoder):
    """What --workers N relies on: an edit saved by one process is answered by the others on their next request."""
    clf, model_dir = model
    other = IntentClassifier(real_encoder).fit(_intent_set())
    with serving(model_dir, clf) as a, serving(model_dir, other) as b, a.client() as ca, b.client() as cb:
        assert ca.post("/intents", json={"name": NEW_NAME, "examples": NEW_EXAMPLES}).status_code == 200
        assert cb.post("/predict", json={"texts": [NEW_QUERY]}).json()["predictions"][0]["intent"]["name"] == NEW_NAME
        assert cb.delete("/intents/greet").status_code == 200
        assert labels_of(a) == ["order_status", "refund", NEW_NAME]
        # An edit on the stale server builds on the other's save instead of overwriting it.
        assert cb.post("/intents", json={"name": "greet", "examples": ["hi", "hello"]}).status_code == 200
        assert ca.post("/intents", json={"name": "bye", "examples": ["bye", "see you"]}).status_code == 200
        assert labels_of(b) == ["order_status", "refund", NEW_NAME, "greet", "bye"]


# ----------------------------------------------------------------- embedding in Python
def test_one_classifier_shared_by_threads_while_it_is_edited(real_encoder):
    """Threads predicting on the very object being edited see the table before or after an edit, never between."""
    clf = IntentClassifier(real_encoder).fit(_intent_set())
    states = [frozenset(INTENTS), frozenset(INTENTS) | {NEW_NAME}, frozenset(INTENTS) - {"greet"} | {NEW_NAME}]
    seen: set[frozenset[str]] = set()
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                for p in clf.predict([NEW_QUERY, "hello"], top_k=100):
                    seen.add(frozenset(x.name for x in p.intent_ranking))
                    assert sum(x.confidence for x in p.intent_ranking) == pytest.approx(1.0, abs=1e-4)
        except BaseException as e:  # surfaced below: an assert in a thread would pass silently
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    clf.add_intent(NEW_NAME, NEW_EXAMPLES)
    time.sleep(0.1)
    clf.remove_intent("greet")
    time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert seen <= set(states) and len(seen) >= 2
    assert clf.predict([NEW_QUERY])[0].intent.name == NEW_NAME


async def _predict_in_async_code(clf: IntentClassifier) -> list[str]:
    # The documented pattern: the event loop stays free while the encoder runs in a worker thread.
    preds = await asyncio.to_thread(clf.predict, ["track my parcel", "hello"])
    return [p.intent.name for p in preds]


def test_async_pattern(model):
    clf, _ = model
    assert asyncio.run(_predict_in_async_code(clf)) == ["order_status", "greet"]


# ----------------------------------------------------------------- the batcher alone
class _FakeClassifier:
    def __init__(self, delay: float = 0.03) -> None:
        self.calls: list[int] = []
        self.delay = delay
        self.fail = False

    def predict(self, texts, *, top_k=10):
        from fewintent.model import IntentScore, Prediction

        if self.fail:
            raise FewIntentError("broken on purpose")
        self.calls.append(len(texts))
        time.sleep(self.delay)
        ranking = [IntentScore(f"i{k}", 1 / (k + 1)) for k in range(top_k)]
        return [Prediction(t, ranking[0], False, list(ranking)) for t in texts]


def test_batcher_merges_routes_and_survives_errors():
    fake = _FakeClassifier()

    async def main() -> None:
        async with MicroBatcher(lambda: fake, max_wait_ms=5, max_batch_texts=8) as b:  # type: ignore[arg-type,return-value]
            start = time.perf_counter()
            assert [p.text for p in await b.predict(["alone"])] == ["alone"]
            assert time.perf_counter() - start < 0.5
            results = await asyncio.gather(*(b.predict([f"t{i}", f"u{i}"], top_k=1 + i % 3) for i in range(12)))
            for i, preds in enumerate(results):
                assert [p.text for p in preds] == [f"t{i}", f"u{i}"]
                assert all(len(p.intent_ranking) == 1 + i % 3 for p in preds)
            assert max(fake.calls) <= 8 and len(fake.calls) < 13
            fake.fail = True
            with pytest.raises(FewIntentError, match="on purpose"):
                await b.predict(["x"])
            fake.fail = False
            assert len(await b.predict(["again"])) == 1
            assert b.stats.requests == 14

    asyncio.run(main())


class _GatedClassifier:
    """Answers every text with one intent, ``name``; blocks in ``predict`` until ``release`` is set."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def predict(self, texts, *, top_k=10):
        from fewintent.model import IntentScore, Prediction

        self.entered.set()
        assert self.release.wait(30)
        return [Prediction(t, IntentScore(self.name, 1.0), False, [IntentScore(self.name, 1.0)]) for t in texts]


def test_batcher_answers_a_request_queued_after_a_swap_with_the_new_classifier():
    """A batch keeps the classifier it started with; a request queued after the swap waits for the next batch."""
    old, new = _GatedClassifier("old"), _GatedClassifier("new")
    old.release.clear()
    current = old

    async def main() -> None:
        nonlocal current
        async with MicroBatcher(lambda: current, max_wait_ms=0) as b:  # type: ignore[arg-type,return-value]
            first = asyncio.create_task(b.predict(["before the swap"]))
            assert await asyncio.to_thread(old.entered.wait, 30)  # the old classifier's batch is running
            current = new  # what ModelStore does before an edit answers
            second = asyncio.create_task(b.predict(["after the swap"]))
            await asyncio.sleep(0.05)  # queued behind the running batch
            assert not second.done()
            old.release.set()
            assert [p.intent.name for p in await first] == ["old"]
            assert [p.intent.name for p in await second] == ["new"]

    asyncio.run(main())


# ----------------------------------------------------------------- the command
def test_cli_serve_options_and_errors(model, monkeypatch):
    _, model_dir = model
    calls: list[tuple[ServeSettings, dict]] = []
    monkeypatch.setattr(serve_app, "run_server", lambda settings, **kw: calls.append((settings, kw)))
    monkeypatch.delenv("FEWINTENT_API_KEY", raising=False)
    runner = CliRunner()
    result = runner.invoke(cli_app, ["serve", str(model_dir / "missing")])
    assert result.exit_code == 1 and "error:" in result.output and "Traceback" not in result.output
    args = ["serve", str(model_dir), "--host", "0.0.0.0", "--port", "9999", "--workers", "2", "--max-texts", "3"]
    args += ["--threads", "2"]
    result = runner.invoke(cli_app, args)
    assert result.exit_code == 0, result.output
    assert "no API key: anyone who can reach 0.0.0.0" in result.output
    settings, kw = calls[-1]
    assert (settings.workers, settings.max_texts, settings.max_chars, settings.api_key) == (2, 3, 2000, None)
    assert settings.threads == 2
    assert kw["host"] == "0.0.0.0" and kw["port"] == 9999
    result = runner.invoke(cli_app, ["serve", str(model_dir)])  # loopback: other local users can still edit
    assert result.exit_code == 0 and "no API key: any user or process on this host" in result.output
    monkeypatch.setenv("FEWINTENT_API_KEY", KEY)
    result = runner.invoke(cli_app, ["serve", str(model_dir)])
    assert result.exit_code == 0 and "API key" not in result.output
    settings, kw = calls[-1]
    assert settings.api_key == KEY and kw["host"] == "127.0.0.1" and kw["port"] == 8000
    assert isinstance(kw["classifier"], IntentClassifier)  # one worker: loaded (and checked) before serving


def test_worker_factory_reads_its_settings_from_the_environment(model, monkeypatch):
    _, model_dir = model
    monkeypatch.setenv(SETTINGS_ENV, ServeSettings(model_dir=str(model_dir), api_key=KEY, max_texts=2).to_json())
    with LiveServer(serve_app.app_from_env()) as server, server.client() as c:
        assert_error(c.post("/predict", json={"texts": ["a", "b", "c"]}), 413, "payload_too_large")
        assert c.post("/predict", json={"texts": ["track my parcel"]}).json()["predictions"][0]["intent"]["name"] == (
            "order_status"
        )
        assert_error(c.delete("/intents/greet"), 401, "unauthorized")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # three Python processes loading torch: ~10-30 s
def test_cli_serve_with_two_workers(model, tmp_path):
    _, model_dir = model
    port = _free_port()
    env = {**os.environ, "FEWINTENT_API_KEY": KEY, "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "fewintent.cli.main", "serve", str(model_dir), "--port", str(port), "--workers", "2"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30, trust_env=False) as c:
            deadline = time.monotonic() + 90
            while True:
                try:
                    if c.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
            assert_error(c.post("/intents", json={"name": NEW_NAME, "examples": NEW_EXAMPLES}), 401, "unauthorized")
            auth = {"Authorization": f"Bearer {KEY}"}
            r = c.post("/intents", json={"name": NEW_NAME, "examples": NEW_EXAMPLES}, headers=auth)
            assert r.status_code == 200, r.text
            # New connections land on either worker; all of them must know the new intent.
            for _ in range(8):
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30, trust_env=False) as fresh:
                    r = fresh.post("/predict", json={"texts": [NEW_QUERY]})
                    assert r.json()["predictions"][0]["intent"]["name"] == NEW_NAME
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert "Uvicorn running on http://127.0.0.1" in out or "Started parent process" in out, out
    assert json.loads((model_dir / "config.json").read_text())["labels"][-1] == NEW_NAME
    shutil.rmtree(model_dir)
