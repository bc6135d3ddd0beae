"""`fewintent datasets`: converters on small real excerpts of each source format, the download pipeline (hashes,
atomic writes, offline and partial downloads), the one corpus search order, and (CI) the pinned hashes."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fewintent.cli.main import app
from fewintent.data import download as dl
from fewintent.data import pins, sources
from fewintent.data.corpus import load_corpus
from fewintent.data.locations import find_corpus, search_path
from fewintent.data.sources import CORPORA, REPOS, CorpusSource, SourceFile
from fewintent.errors import FewIntentError

MIRROR = Path(__file__).parent / "fixtures" / "corpora"
runner = CliRunner()


def excerpt(repo: str, path: str) -> bytes:
    r = REPOS[repo]
    return (MIRROR / r.owner / r.name / r.commit / path).read_bytes()


def jsonl(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.decode().splitlines()]


def fsid(folder: str) -> tuple[bytes, bytes]:
    base = f"Datasets/{folder}"
    return excerpt(sources.FSID, f"{base}/seq.in"), excerpt(sources.FSID, f"{base}/label")


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No corpus anywhere: an empty download folder, no $FEWINTENT_DATASETS, no ../shared beside the cwd."""
    home = tmp_path / "home"
    monkeypatch.setenv("FEWINTENT_DATA", str(home))
    monkeypatch.delenv("FEWINTENT_DATASETS", raising=False)
    monkeypatch.delenv(dl.MIRROR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    return home


# --- converters, on real excerpts ---------------------------------------------------------------------------


def test_seq_in_label_rows_keep_text_and_intent_and_strip_outer_spaces() -> None:
    rows = sources.seq_in_rows(*fsid("BANKING77/train_5"), lambda i: "banking", "b77")
    assert rows[0] == {
        "text": "i'm supposed to have a refund but it isn't there",
        "intent": "Refund_not_showing_up",
        "domain": "banking",
    }
    snips = sources.seq_in_rows(*fsid("SNIPS/train"), lambda i: "snips", "snips")
    assert snips[1]["text"] == "add step to me to the 50 clásicos playlist"  # the source line ends with a space
    assert snips[2]["text"] == "i need a forecast for jetmore  massachusetts in 1 hour and 1 second from now"
    with pytest.raises(FewIntentError, match="seq.in has 3 lines but label has 2"):
        sources.seq_in_rows(fsid("SNIPS/train")[0], b"a\nb\n", str, "x")


def test_hwu64_domain_is_the_label_prefix_and_clinc_domains_come_from_domains_json() -> None:
    hwu = sources.seq_in_rows(*fsid("HWU64/train"), lambda i: i.split("_")[0], "hwu")
    assert {(r["intent"], r["domain"]) for r in hwu} >= {("alarm_query", "alarm")}
    assert all(r["intent"].startswith(r["domain"] + "_") for r in hwu)
    domain_of = sources.clinc_domains(excerpt(sources.CLINC, "data/domains.json"))
    assert len(domain_of) == 150 and domain_of["translate"] == "travel" and domain_of["definition"] == "utility"
    data = {
        f"Datasets/CLINC150/{s}/{p}": excerpt(sources.FSID, f"Datasets/CLINC150/{s}/{p}")
        for s in ("train", "oos/train")
        for p in ("seq.in", "label")
    }
    data["data/domains.json"] = excerpt(sources.CLINC, "data/domains.json")
    out = _convert_subset(CORPORA["clinc150"], data, {"train", "oos_train"})
    train, oos = jsonl(out["train.jsonl"]), jsonl(out["oos_train.jsonl"])
    assert train[0] == {
        "text": "what expression would i use to say i love you if i were an italian",
        "intent": "translate",
        "domain": "travel",
    }
    assert {r["domain"] for r in oos} == {"oos"} and {r["intent"] for r in oos} == {"oos"}


def _convert_subset(corpus: CorpusSource, data: dict[str, bytes], splits: set[str]) -> dict[str, bytes]:
    """Run a corpus's converter on the splits present in ``data`` (the others get empty files)."""
    full = {f.path: b"" for f in corpus.files} | data
    out = corpus.convert(full)
    return {k: v for k, v in out.items() if k.removesuffix(".jsonl") in splits}


def test_banking77_oos_in_domain_oos_rows_are_oos() -> None:
    rows = sources.seq_in_rows(*fsid("BANKING77-OOS/id-oos/valid"), lambda i: "oos" if i == "oos" else "b", "x")
    assert rows[0] == {"text": "on what do you base your exchange rates?", "intent": "oos", "domain": "oos"}
    assert "  " in rows[1]["text"]  # inner double spaces are the source's and stay


def test_nlupp_rows_sort_intents_collapse_spaces_and_keep_no_intent_as_empty() -> None:
    rows = sources.nlupp_rows(excerpt(sources.POLYAI, "nlupp/data/banking/fold1.json"), "banking", 1)
    assert rows[0]["intents"] == ["how_long", "transfer_payment_deposit"] and rows[0]["fold"] == 1
    assert rows[1] == {"text": "ending at 22:35 night", "intents": [], "domain": "banking", "fold": 1}
    assert rows[2]["text"] == "How much higher was my total petrol this month?"


def test_sgd_keeps_user_turns_that_state_one_intent_once() -> None:
    raw = excerpt(sources.SGD, "train/dialogues_001.json")
    rows = sources.sgd_rows([raw])
    assert rows == [
        {
            "text": "I am feeling hungry so I would like to find a place to eat.",
            "intent": "FindRestaurants",
            "domain": "restaurants",
        },
        {
            "text": "Alright, that seems good. I would like to make a booking at this restaurant.",
            "intent": "ReserveRestaurant",
            "domain": "restaurants",
        },
    ]
    shouted = raw.replace(b"I am feeling hungry", b"i AM feeling hungry")
    assert sources.sgd_rows([raw, shouted]) == rows  # the same text again (any case) in the split is dropped


# --- the download pipeline -----------------------------------------------------------------------------------


@pytest.fixture
def tiny_corpus(monkeypatch: pytest.MonkeyPatch) -> CorpusSource:
    """A registered corpus built from the BANKING77 excerpt, pinned to the excerpt's hashes."""
    files, convert = sources._fsid_splits("BANKING77", {"train_5": "train_5"}, lambda i: "banking")
    corpus = CorpusSource("tiny", "BANKING77 excerpt", "CC BY 4.0", "test", files, convert)
    outputs = convert({f.path: excerpt(f.repo, f.path) for f in files})
    monkeypatch.setitem(dl.CORPORA, "tiny", corpus)
    monkeypatch.setitem(pins.OUTPUT_BYTES, "tiny", sum(len(v) for v in outputs.values()))
    monkeypatch.setitem(dl.OUTPUT_SHA256, "tiny", {k: hashlib.sha256(v).hexdigest() for k, v in outputs.items()})
    for f in files:
        monkeypatch.setitem(dl.SOURCE_SHA256, f.key, hashlib.sha256(excerpt(f.repo, f.path)).hexdigest())
    return corpus


def test_download_writes_a_verified_corpus_once_and_finds_it(isolated: Path, tiny_corpus: CorpusSource) -> None:
    result = runner.invoke(app, ["datasets", "download", "tiny", "--mirror", str(MIRROR)])
    assert result.exit_code == 0, result.output
    assert "licence CC BY 4.0" in result.output
    assert (isolated / "tiny" / "train_5.jsonl").read_text().splitlines()[0].startswith('{"text": "i\'m supposed')
    assert [p.name for p in isolated.iterdir()] == ["tiny"]  # no temporary folder left behind
    manifest = json.loads((isolated / "tiny" / dl.MANIFEST).read_text())
    assert manifest["sources"] == {sources.FSID: REPOS[sources.FSID].commit}
    assert find_corpus("tiny") == isolated / "tiny"
    # present and verified: not fetched again, even with no mirror at all
    again = runner.invoke(app, ["datasets", "download", "tiny", "--mirror", str(isolated / "nowhere")])
    assert again.exit_code == 0 and "present and verified" in again.output
    # a damaged copy is fetched again and replaced whole
    (isolated / "tiny" / "train_5.jsonl").write_text("damaged\n")
    assert dl.state("tiny").state == "changed"
    assert runner.invoke(app, ["datasets", "download", "tiny", "--mirror", str(MIRROR)]).exit_code == 0
    assert dl.state("tiny").state == "present"


def test_a_changed_source_file_is_one_error_and_nothing_is_written(
    isolated: Path, tiny_corpus: CorpusSource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = tiny_corpus.files[0].key
    monkeypatch.setitem(dl.SOURCE_SHA256, key, "0" * 64)
    result = runner.invoke(app, ["datasets", "download", "tiny", "--mirror", str(MIRROR)])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and "changed" in lines[-1] and "nothing written" in lines[-1]
    assert not isolated.exists() or list(isolated.iterdir()) == []


def test_a_conversion_that_does_not_reproduce_the_pins_writes_nothing(
    isolated: Path, tiny_corpus: CorpusSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(dl.OUTPUT_SHA256, "tiny", {"train_5.jsonl": "f" * 64})
    with pytest.raises(FewIntentError, match="does not reproduce"):
        dl.download(tiny_corpus, mirror=str(MIRROR))
    assert not (isolated / "tiny").exists()


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_download_answers_in_one_line_within_seconds(
    isolated: Path, tiny_corpus: CorpusSource, closed_port: int
) -> None:
    start = time.monotonic()
    result = runner.invoke(app, ["datasets", "download", "tiny", "--mirror", f"http://127.0.0.1:{closed_port}"])
    assert time.monotonic() - start < 10
    assert result.exit_code == 1
    assert result.output.strip().startswith("error: cannot reach 127.0.0.1")
    assert len(result.output.strip().splitlines()) == 1
    assert not isolated.exists() or list(isolated.iterdir()) == []


@pytest.fixture
def short_server() -> Iterator[str]:
    """An HTTP server that promises 1000 bytes and closes the connection after 10."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    stop = threading.Event()

    def serve() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    stop.set()
    thread.join()
    srv.close()


def test_a_partial_download_is_one_error(isolated: Path, tiny_corpus: CorpusSource, short_server: str) -> None:
    result = runner.invoke(app, ["datasets", "download", "tiny", "--mirror", short_server])
    assert result.exit_code == 1
    assert result.output.strip().startswith("error: partial download of")
    assert not isolated.exists() or list(isolated.iterdir()) == []


def test_cli_names_and_paths(isolated: Path) -> None:
    no_name = runner.invoke(app, ["datasets", "download"])
    assert no_name.exit_code == 1 and "--all" in no_name.output
    unknown = runner.invoke(app, ["datasets", "download", "bankin77"])
    assert unknown.exit_code == 1 and "unknown corpus 'bankin77'" in unknown.output
    assert runner.invoke(app, ["datasets", "path"]).output.strip() == str(isolated)
    listed = json.loads(runner.invoke(app, ["datasets", "list", "--json"]).output)
    assert [r["name"] for r in listed] == list(CORPORA)
    assert {r["downloaded"] for r in listed} == {"absent"} and all(r["licence"] for r in listed)


# --- one search order ----------------------------------------------------------------------------------------


def _corpus(root: Path, name: str, text: str) -> Path:
    (root / name).mkdir(parents=True)
    rows = [{"text": f"{text} {i}", "intent": f"i{i % 2}", "domain": "d"} for i in range(4)]
    (root / name / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / name


def test_search_order_is_data_dir_env_downloaded_then_shared(
    isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text("")
    monkeypatch.chdir(project)
    shared = _corpus(tmp_path / "shared" / "datasets", "banking77", "shared").parent
    assert find_corpus("banking77") == shared / "banking77"
    _corpus(isolated, "banking77", "downloaded")
    assert find_corpus("banking77") == isolated / "banking77"
    env = _corpus(tmp_path / "env", "banking77", "env").parent
    monkeypatch.setenv("FEWINTENT_DATASETS", str(env))
    assert find_corpus("banking77") == env / "banking77"
    given = _corpus(tmp_path / "given", "banking77", "given").parent
    assert find_corpus("banking77", given) == given / "banking77"
    assert search_path(given) == [given, env, isolated, shared]
    assert load_corpus("banking77", data_dir=given).by_intent["i0"][0] == "given 0"
    assert load_corpus("banking77").by_intent["i0"][0] == "env 0"


def test_a_known_corpus_never_goes_to_the_hub_and_the_message_names_the_download(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fewintent.data.corpus as corpus

    calls: list[str] = []
    monkeypatch.setattr(corpus, "_load_from_hub", lambda spec, *a: calls.append(spec.hf_id))
    with pytest.raises(FewIntentError, match="fewintent datasets download banking77"):
        load_corpus("banking77")
    assert calls == []
    load_corpus("PolyAI/banking77")  # a hub id asked for explicitly still goes there
    assert calls == ["PolyAI/banking77"]


def test_meta_train_and_benchmark_offline_with_nothing_answer_in_one_line(isolated: Path, tmp_path: Path) -> None:
    start = time.monotonic()
    meta = runner.invoke(app, ["meta-train", "-o", str(tmp_path / "a"), "--datasets", "banking77"])
    assert time.monotonic() - start < 10
    assert meta.exit_code == 1 and "fewintent datasets download banking77" in meta.output
    assert len(meta.output.strip().splitlines()) == 1


# --- CI: the pinned hashes are the reference corpora's, and (with a mirror) the full conversion reproduces them --


def test_pinned_output_hashes_are_the_reference_corpora(datasets_dir: Path) -> None:
    for name, files in pins.OUTPUT_SHA256.items():
        on_disk = sorted(p.name for p in (datasets_dir / name).glob("*.jsonl"))
        assert on_disk == sorted(files), name
        for fname, digest in files.items():
            assert hashlib.sha256((datasets_dir / name / fname).read_bytes()).hexdigest() == digest, f"{name}/{fname}"


@pytest.mark.parametrize("name", list(CORPORA))
def test_full_conversion_from_a_local_mirror_reproduces_the_pins(name: str, tmp_path: Path) -> None:
    """Runs where $FEWINTENT_DATASETS_MIRROR names a local copy (folder laid out like raw.githubusercontent.com)."""
    mirror = os.environ.get(dl.MIRROR_ENV, "")
    if not mirror or "://" in mirror and not mirror.startswith("file:"):
        pytest.skip(f"set {dl.MIRROR_ENV} to a local mirror of the source repositories to run the full conversion")
    base = Path(mirror.removeprefix("file://"))
    missing = [f for f in CORPORA[name].files if not (base / _rel(f)).is_file()]
    if missing:
        pytest.skip(f"{len(missing)} source files of {name} are not in the mirror (e.g. {missing[0].path})")
    state, fetched = dl.download(CORPORA[name], home=tmp_path, mirror=mirror)
    assert fetched and state.state == "present"


def _rel(f: SourceFile) -> str:
    r = REPOS[f.repo]
    return f"{r.owner}/{r.name}/{r.commit}/{f.path}"


def test_a_mirror_file_that_never_ends_is_one_error_not_a_full_memory(
    isolated: Path, tiny_corpus: CorpusSource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    mirror = tmp_path / "mirror"
    shutil.copytree(MIRROR, mirror)
    f = tiny_corpus.files[0]
    r = REPOS[f.repo]
    (mirror / r.owner / r.name / r.commit / f.path).unlink()
    (mirror / r.owner / r.name / r.commit / f.path).symlink_to("/dev/zero")
    monkeypatch.setattr(dl, "MAX_SOURCE_BYTES", 3 << 20)  # the real cap is 64 MiB: the same code path, faster
    result = runner.invoke(app, ["datasets", "download", "tiny", "--mirror", str(mirror)])
    assert result.exit_code == 1 and "larger than any pinned source file" in result.output, result.output
    assert not isolated.exists() or list(isolated.iterdir()) == []
