"""Offline sources of registered bases: a model zip split across installed part packages (joined, verified, cached
once, safe against concurrent processes) and a verified hub download. A few-KB fake zip stands in for the 400 MB one:
real ``.dist-info`` metadata in a temporary site directory, found through importlib.metadata like the real parts."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import multiprocessing
import os
import random
import time
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import fewintent
import fewintent.encoder
from fewintent.encoder import sources
from fewintent.encoder.sources import PartsSource, _JoinedParts, hub_snapshot
from fewintent.errors import FewIntentError

FOLDER = "fake-model"
CONTENTS = {
    "model.safetensors": random.Random(0).randbytes(6000),
    "config.json": b'{"hidden_size": 8}\n',
    "tokenizer.json": b'{"model": {"vocab": {"hello": 0}}}\n',
    "1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}\n',
}
FILES = {name: hashlib.sha256(data).hexdigest() for name, data in CONTENTS.items()}


def _zip_bytes(contents: Mapping[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        extra = {"desktop.ini": b"[.ShellClassInfo]\n", "README.md": b"# not upstream\n"}  # ignored
        for name, data in {**contents, **extra}.items():
            zf.writestr(zipfile.ZipInfo(f"{FOLDER}/{name}", date_time=(2024, 1, 1, 0, 0, 0)), data)
    return buf.getvalue()


def _install_parts(site: Path, blob: bytes, n: int) -> tuple[str, ...]:
    """Lay out ``n`` installed distributions as pip would (data file + dist-info with RECORD), one slice each."""
    size = -(-len(blob) // n)
    names = []
    for i in range(1, n + 1):
        dist, pkg = f"fake-model-part-{i:03d}", f"fake_model_part_{i:03d}"
        data = site / pkg / "input" / f"fake.zip.{i:03d}"
        data.parent.mkdir(parents=True)
        data.write_bytes(blob[(i - 1) * size : i * size])
        info = site / f"{pkg}-0.0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.0.1\n")
        (info / "RECORD").write_text(f"{pkg}/input/fake.zip.{i:03d},,\n{info.name}/METADATA,,\n{info.name}/RECORD,,\n")
        names.append(dist)
    return tuple(names)


@pytest.fixture
def source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PartsSource:
    blob = _zip_bytes(CONTENTS)
    site = tmp_path / "site"
    distributions = _install_parts(site, blob, 3)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("FEWINTENT_CACHE", str(tmp_path / "cache"))
    return PartsSource(
        distributions=distributions,
        part_file="fake.zip.{index:03d}",
        zip_sha256=hashlib.sha256(blob).hexdigest(),
        folder=FOLDER,
        cache_name="fake-model-0123456789ab",
        extra="fake",
        version="0.0.1",
    )


def _flip_byte(path: Path, offset: int = 100) -> None:
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 1]))
    # a corruption found later than the build: on a coarse-mtime filesystem the edit could otherwise share its tick
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


def _siblings(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.parent.iterdir() if p.name != f".{cache.name}.lock")


def test_locate_joins_verifies_and_extracts_only_the_listed_files(source: PartsSource) -> None:
    cache = source.cache_dir()
    assert source.installed() and not cache.exists()
    assert source.locate(FILES) == cache
    for name, data in CONTENTS.items():
        assert (cache / name).read_bytes() == data
    assert not (cache / "desktop.ini").exists() and not (cache / "README.md").exists()
    assert _siblings(cache) == [cache.name]  # no temporary directory left beside it
    built = (cache / "model.safetensors").stat()
    assert source.locate(FILES) == cache  # the verified cache, not a rebuild
    assert (cache / "model.safetensors").stat().st_ino == built.st_ino


def test_a_cache_with_a_changed_byte_is_rebuilt_from_the_parts(source: PartsSource) -> None:
    cache = source.locate(FILES)
    assert cache is not None
    _flip_byte(cache / "model.safetensors")
    assert source.locate(FILES) == cache
    assert (cache / "model.safetensors").read_bytes() == CONTENTS["model.safetensors"]
    assert _siblings(cache) == [cache.name]


def test_without_the_parts_a_changed_cache_is_refused_in_one_line(source: PartsSource) -> None:
    cache = source.locate(FILES)
    assert cache is not None
    gone = dataclasses.replace(source, distributions=("not-installed-001", "not-installed-002"))
    assert gone.locate(FILES) == cache and gone.installed()  # a good cache needs no parts
    _flip_byte(cache / "model.safetensors")
    with pytest.raises(FewIntentError) as e:
        gone.locate(FILES)
    message = str(e.value)
    assert "\n" not in message and "model.safetensors (sha256 differs)" in message
    assert "fewintent bases install fake" in message  # the one install route (issue 34)
    assert not gone.installed()


def test_nothing_installed_is_none_and_some_parts_missing_is_an_error(source: PartsSource) -> None:
    absent = dataclasses.replace(source, distributions=("not-installed-001", "not-installed-002"))
    assert absent.locate(FILES) is None and not absent.installed()
    partial = dataclasses.replace(source, distributions=(*source.distributions, "not-installed-004"))
    assert not partial.installed()
    with pytest.raises(FewIntentError, match=r"missing \(not-installed-004\); fewintent bases install fake"):
        partial.locate(FILES)


def test_a_zip_or_a_file_whose_sha256_differs_is_refused(source: PartsSource) -> None:
    with pytest.raises(FewIntentError, match="joined part packages' sha256 .* --force-reinstall --no-deps") as e:
        dataclasses.replace(source, zip_sha256="0" * 64).locate(FILES)
    assert "\n" not in str(e.value)
    wrong = {**FILES, "config.json": "1" * 64}
    with pytest.raises(FewIntentError, match="fake-model/config.json in the joined parts has sha256"):
        source.locate(wrong)
    with pytest.raises(FewIntentError, match="have no fake-model/vocab.txt"):
        source.locate({**FILES, "vocab.txt": "2" * 64})
    cache = source.cache_dir()
    assert not cache.exists() and _siblings(cache) == []  # nothing half-built left behind


def test_joined_parts_read_and_seek_across_part_boundaries(tmp_path: Path) -> None:
    blob = random.Random(1).randbytes(1000)
    cuts = [0, 10, 10, 400, 1000]  # an empty part included
    paths = []
    for i, (a, b) in enumerate(zip(cuts, cuts[1:])):
        paths.append(tmp_path / f"p{i}")
        paths[-1].write_bytes(blob[a:b])
    with _JoinedParts(paths) as f:
        assert f.read() == blob
        for pos, n in [(5, 10), (399, 3), (990, 50), (0, 1000)]:
            f.seek(pos)
            assert f.read(n) == blob[pos : pos + n]
        assert f.seek(-4, io.SEEK_END) == 996 and f.read() == blob[996:]


# Both processes build slowly (0.3 s inside the lock), so without the lock their builds would overlap.
_SLOW_BUILD = """
import time
from fewintent.encoder.sources import PartsSource
_build = PartsSource._build
def slow_build(self, *args):
    time.sleep(0.3)
    _build(self, *args)
PartsSource._build = slow_build
"""
# What the other process runs. It imports sources.py (and errors.py) alone: empty package modules stand in for
# fewintent and fewintent.encoder, whose __init__ would load torch (seconds per process on 2 cores).
_CHILD = """
import sys, types
for name, path in packages.items():
    sys.modules[name] = types.ModuleType(name)
    sys.modules[name].__path__ = [path]
exec(slow_build)
source = PartsSource(**fields)
barrier.wait()
results.put(str(source.locate(files)))
"""


def test_two_processes_resolving_at_once_both_succeed(source: PartsSource, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PartsSource, "_build", PartsSource._build)  # undone after the test
    exec(_SLOW_BUILD, {})
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    packages = {m.__name__: m.__path__[0] for m in (fewintent, fewintent.encoder)}
    scope = {"packages": packages, "slow_build": _SLOW_BUILD, "fields": dataclasses.asdict(source), "files": FILES}
    child = ctx.Process(target=exec, args=(_CHILD, {**scope, "barrier": barrier, "results": results}))
    child.start()
    barrier.wait(timeout=60)
    here = source.locate(FILES)  # one of the two builds; the other waits for the lock and uses that build
    there = results.get(timeout=60)
    child.join(timeout=60)
    assert child.exitcode == 0
    assert str(here) == there == str(source.cache_dir())
    cache = source.cache_dir()
    assert _siblings(cache) == [cache.name]
    assert not sources.mismatched_files(cache, FILES)


@pytest.fixture
def fake_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """``snapshot_download`` replaced: a hub snapshot holding ``state['download']`` contents, a local cache holding
    ``state['cached']`` (None: nothing cached), and every call recorded."""
    import huggingface_hub

    state: dict[str, Any] = {"calls": [], "cached": None, "download": CONTENTS, "error": None}

    def snapshot_download(repo_id: str, *, revision: str, allow_patterns: list[str], local_files_only: bool = False):
        state["calls"].append((repo_id, revision, allow_patterns, local_files_only))
        contents = state["cached"] if local_files_only else state["download"]
        if contents is None:
            raise huggingface_hub.errors.LocalEntryNotFoundError("not in the cache")
        if not local_files_only and state["error"]:
            raise state["error"]
        snap = tmp_path / ("cached" if local_files_only else "downloaded")
        for name, data in contents.items():
            (snap / name).parent.mkdir(parents=True, exist_ok=True)
            (snap / name).write_bytes(data)
        return str(snap)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(sources, "check_hub_reachable", lambda where: None)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return state


def test_hub_snapshot_downloads_the_pinned_revision_and_verifies_it(fake_hub: dict[str, Any]) -> None:
    path = hub_snapshot("org/fake", "abcdef0123456789", FILES)
    assert (path / "model.safetensors").read_bytes() == CONTENTS["model.safetensors"]
    assert fake_hub["calls"][-1] == ("org/fake", "abcdef0123456789", list(FILES), False)


def test_hub_snapshot_refuses_a_mismatched_download(fake_hub: dict[str, Any]) -> None:
    fake_hub["download"] = {**CONTENTS, "model.safetensors": b"something else"}
    with pytest.raises(FewIntentError, match=r"model.safetensors \(sha256 differs\)") as e:
        hub_snapshot("org/fake", "abcdef0123456789", FILES)
    assert "\n" not in str(e.value)


def test_hub_snapshot_network_errors_are_one_line(fake_hub: dict[str, Any]) -> None:
    fake_hub["error"] = OSError("Connection refused\n  (while fetching the tree)")
    with pytest.raises(FewIntentError, match="could not download org/fake at revision abcdef012345") as e:
        hub_snapshot("org/fake", "abcdef0123456789", FILES)
    assert "\n" not in str(e.value) and "Connection refused" in str(e.value)


def test_hub_snapshot_offline_uses_only_the_local_cache(fake_hub: dict[str, Any], monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(sources, "check_hub_reachable", lambda where: pytest.fail("offline must not connect"))
    start = time.perf_counter()
    with pytest.raises(FewIntentError, match="not in the Hugging Face cache and HF_HUB_OFFLINE is set"):
        hub_snapshot("org/fake", "abcdef0123456789", FILES)
    assert time.perf_counter() - start < 1
    fake_hub["cached"] = CONTENTS
    assert (hub_snapshot("org/fake", "abcdef0123456789", FILES) / "config.json").is_file()
    assert all(local for *_, local in fake_hub["calls"])
