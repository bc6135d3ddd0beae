"""Serving an exported model without the training stack: an int8 ONNX model directory loads, predicts, evaluates,
calibrates, discovers, takes live edits, saves and serves (Python API, CLI and HTTP) in a fresh interpreter that
never imports torch, transformers, peft, sentence-transformers or datasets; where training parts are missing, a
command says in one line what to install."""

from __future__ import annotations

import functools
import json
import os
import platform
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import make_tiny_encoder

from fewintent import IntentClassifier, IntentSet
from fewintent.errors import TRAINING_STACK

pytest.importorskip("onnxruntime")
pytest.importorskip("fastapi")
ROOT = Path(__file__).resolve().parent.parent
WORDS = ("alpha", "beta", "gamma")
DATA = IntentSet.from_pairs(
    [(f"{w} number {i}", w) for w in WORDS for i in range(5)] + [("unrelated thing", "oos"), ("the weather", "oos")]
)

# Run in a fresh interpreter: the test process itself has torch loaded (it built the model).
_SESSION = textwrap.dedent(
    """
    import json, shutil, socket, sys
    from pathlib import Path

    model, work = Path(sys.argv[1]), Path(sys.argv[2])
    done = []

    from fewintent import IntentClassifier, IntentSet
    from fewintent.model import evaluate

    clf = IntentClassifier.load(model)
    assert type(clf.encoder).__name__ == "OnnxEncoder"
    texts = ["alpha number 9", "gamma", "something else entirely", "beta beta number"]
    assert [p.intent.name for p in clf.predict(texts)][:1] == ["alpha"]
    assert clf.predict_proba(texts).shape == (4, 3)
    labelled = IntentSet.from_pairs(
        [(f"{w} number {i}", w) for w in ("alpha", "beta", "gamma") for i in range(6, 9)]
        + [("gamma number 9", "gamma")]  # calibrate needs 10 in-scope rows (issue 34)
        + [(f"zeta thing {i}", "oos") for i in range(3)],
        for_training=False,
    )
    assert evaluate(clf, labelled).n == 13
    clf.calibrate(labelled)
    chatter = [f"{w} thing {i}" for w in ("zeta", "theta") for i in range(8)]
    clf.discover(chatter + texts, min_cluster_size=3, min_confidence=1.0)
    clf.add_intent("delta", ["delta one", "delta two", "delta three"])
    clf.remove_intent("beta")
    clf.save(work / "edited")
    again = IntentClassifier.load(work / "edited")
    assert again.labels == ["alpha", "gamma", "delta"], again.labels
    assert [p.to_dict() for p in again.predict(texts)] == [p.to_dict() for p in clf.predict(texts)]
    done.append("api")

    from typer.testing import CliRunner

    from fewintent.cli.main import app

    def cli(*args):
        result = CliRunner().invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, (args, result.output)
        return result.stdout

    for n in (1, 2):
        shutil.copytree(model, work / f"copy{n}")
    line = json.loads(cli("predict", model, "alpha number 9", "--json", "--threads", "1").splitlines()[0])
    assert line["intent"]["name"] == "alpha", line
    (work / "test.jsonl").write_text(
        "".join(json.dumps({"text": t, "intent": i}) + "\\n" for t, i in zip(labelled.texts, labelled.intents))
    )
    assert json.loads(cli("evaluate", model, work / "test.jsonl", "--json"))["n"] == 10
    cli("calibrate", work / "copy1", work / "test.jsonl")
    (work / "chat.txt").write_text("\\n".join(chatter) + "\\n")
    assert "clusters" in json.loads(cli("discover", model, work / "chat.txt", "--json"))
    done.append("cli")

    import uvicorn
    from fastapi.testclient import TestClient

    def answer(app, **options):  # what `fewintent serve` hands to uvicorn, asked over HTTP instead
        with TestClient(app) as client:
            r = client.post("/predict", json={"texts": ["gamma number 1", "something else"]})
            assert r.status_code == 200, r.text
            assert r.json()["predictions"][0]["intent"]["name"] == "gamma", r.text
            r = client.post("/intents", json={"name": "delta", "examples": ["delta one", "delta two"]})
            assert r.status_code == 200 and r.json()["intents"] == 4, r.text
            assert client.delete("/intents/beta").status_code == 200
            assert client.get("/health").json()["intents"] == 3
        done.append("http")

    uvicorn.run = answer
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cli("serve", work / "copy2", "--port", port, "--threads", "1")
    assert IntentClassifier.load(work / "copy2").labels == ["alpha", "gamma", "delta"]
    forbidden = sorted(m for m in sys.modules if m.split(".")[0] in json.loads(sys.argv[3]))
    print(json.dumps({"done": done, "forbidden": forbidden}))
    """
)

# A runtime-only install, simulated: the training stack cannot be imported at all.
_BLOCKED = textwrap.dedent(
    """
    import importlib.abc, json, sys

    missing = set(json.loads(sys.argv[1]))

    class NotInstalled(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in missing:
                raise ModuleNotFoundError(f"No module named '{name}'", name=name)
            return None

    sys.meta_path.insert(0, NotInstalled())
    from fewintent.cli.main import app

    sys.argv = ["fewintent", *sys.argv[2:]]
    app()
    """
)


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("lean")
    IntentClassifier(make_tiny_encoder()).fit(DATA).save(work / "torch")
    IntentClassifier.export(work / "torch", work / "int8", quantize="int8")
    return work


def test_an_exported_model_runs_without_the_training_stack(int8_model, tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", _SESSION, str(int8_model / "int8"), str(tmp_path), json.dumps(TRAINING_STACK)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["done"] == ["api", "cli", "http"]
    assert result["forbidden"] == [], f"imported on the serving path: {result['forbidden']}"


def test_a_server_starts_without_the_libraries_only_some_commands_use():
    """What `fewintent serve` imports before it loads a model: every module held costs each worker memory."""
    code = (
        "import json, sys; import fewintent.cli.main, fewintent.serve.app, uvicorn; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    loaded = set(json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout))
    assert not loaded & {*TRAINING_STACK, "yaml", "sklearn", "scipy", "pandas", "matplotlib", "onnx"}, loaded


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_a_server_process_hands_freed_memory_back_unless_malloc_was_configured():
    code = "from fewintent.serve.memory import return_freed_memory; print(return_freed_memory())"
    run = functools.partial(subprocess.run, [sys.executable, "-c", code], capture_output=True, text=True, check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    assert run(env=env).stdout.strip() == "True"
    assert run(env={**env, "MALLOC_ARENA_MAX": "2"}).stdout.strip() == "False"


@pytest.mark.parametrize(
    ("argv", "what"),
    [
        (["adapt", "data/demo_company.jsonl", "-o", "{tmp}/m"], "adapting a classifier"),
        (["export", "{model}/torch", "-o", "{tmp}/x"], "fewintent export"),
        (["predict", "{model}/torch", "hello"], "a torch encoder"),
        (["meta-train", "-o", "{tmp}/a"], "fewintent meta-train"),
        (["benchmark", "--out", "{tmp}/b"], "fewintent benchmark"),
        (["data", "validate", "data/demo_company.jsonl"], "add --no-overlap to check the file without it"),
    ],
)
def test_training_commands_name_what_to_install_in_one_line(int8_model, tmp_path, argv, what):
    args = [a.format(tmp=tmp_path, model=int8_model) for a in argv]
    out = subprocess.run(
        [sys.executable, "-c", _BLOCKED, json.dumps(TRAINING_STACK), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert out.returncode == 1, out.stderr[-3000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), out.stderr[-3000:]
    assert what in lines[0] and "pip install" in lines[0] and "torch is not installed" in lines[0]


def test_the_runtime_requirements_agree_with_pyproject_and_leave_the_training_stack_out():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    name = re.compile(r"^([A-Za-z0-9_.-]+)")
    bounds = {name.match(r).group(1).lower(): r.split(";")[0].strip() for r in declared}
    lines = (ROOT / "requirements" / "runtime.txt").read_text().splitlines()
    runtime = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert {"onnxruntime", "tokenizers", "numpy", "fastapi", "uvicorn", "typer"} <= {
        name.match(r).group(1) for r in runtime
    }
    for requirement in runtime:
        package = name.match(requirement).group(1).lower()
        assert package.replace("-", "_") not in TRAINING_STACK and package != "sentence-transformers"
        assert bounds.get(package) == requirement, f"{requirement}: pyproject.toml says {bounds.get(package)}"
