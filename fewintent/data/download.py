"""``fewintent datasets download``: fetch a corpus's source files at their pinned commits over HTTPS, check every
file's hash, convert, and write the corpus folder atomically (a temporary sibling renamed in).

Files come from ``https://raw.githubusercontent.com/<owner>/<repo>/<commit>/<path>``. A mirror with the same
layout (another base URL, a ``file://`` URL or a local folder) can stand in: ``--mirror`` or
``$FEWINTENT_DATASETS_MIRROR``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http.client import HTTPException, IncompleteRead
from pathlib import Path

from fewintent.data.locations import DOWNLOAD_COMMAND, data_home
from fewintent.data.pins import OUTPUT_BYTES, OUTPUT_SHA256, SOURCE_BLOB, SOURCE_SHA256
from fewintent.data.sources import CORPORA, REPOS, CorpusSource, SourceFile
from fewintent.errors import FewIntentError

RAW_BASE = "https://raw.githubusercontent.com"
MIRROR_ENV = "FEWINTENT_DATASETS_MIRROR"
TIMEOUT_S = 5.0
"""Per request: offline, the first file fails within this, and nothing is retried."""
MAX_SOURCE_BYTES = 64 << 20
"""No pinned source file is near this size (the largest are a few MB): anything longer is not it."""
MANIFEST = "fewintent-corpus.json"


@dataclass(frozen=True)
class CorpusState:
    name: str
    path: Path
    state: str
    """``present`` (every file there with its pinned hash), ``changed`` (there, but not as pinned) or ``absent``."""


def known(names: Iterable[str]) -> list[CorpusSource]:
    """The registered corpora named, in the order given; an unknown name is an error listing the known ones."""
    out = []
    for name in names:
        if name not in CORPORA:
            raise FewIntentError(f"unknown corpus '{name}': known ones are {', '.join(CORPORA)}")
        out.append(CORPORA[name])
    return out


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def state(name: str, home: Path | None = None) -> CorpusState:
    """Whether corpus ``name`` is in ``home`` exactly as pinned (every file hashed)."""
    folder = (home or data_home()) / name
    if not folder.is_dir():
        return CorpusState(name, folder, "absent")
    for fname, digest in OUTPUT_SHA256[name].items():
        f = folder / fname
        if not f.is_file() or sha256(f.read_bytes()) != digest:
            return CorpusState(name, folder, "changed")
    return CorpusState(name, folder, "present")


def source_url(base: str, f: SourceFile) -> str:
    repo = REPOS[f.repo]
    return f"{base.rstrip('/')}/{repo.owner}/{repo.name}/{repo.commit}/{f.path}"


def _mirror_base(mirror: str | None) -> str:
    base = mirror or os.environ.get(MIRROR_ENV) or RAW_BASE
    if "://" not in base:  # a local folder laid out like raw.githubusercontent.com
        folder = Path(base).expanduser().resolve()
        if not folder.is_dir():
            raise FewIntentError(f"mirror folder {folder} does not exist")
        return folder.as_uri()
    return base


def fetch(url: str, timeout: float = TIMEOUT_S) -> bytes:
    """The bytes at ``url``; every failure is one ``FewIntentError`` line (no network, HTTP error, cut short)."""
    where = url.split("://", 1)[-1].split("/", 1)[0] or "the mirror"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            expected = response.headers.get("Content-Length")
            chunks: list[bytes] = []
            size = 0
            while chunk := response.read(1 << 20):
                size += len(chunk)
                if size > MAX_SOURCE_BYTES:  # a mirror serving /dev/zero or a wrong file must not fill the memory
                    raise FewIntentError(
                        f"{url}: more than {MAX_SOURCE_BYTES >> 20} MiB, larger than any pinned source file: "
                        f"not the file pinned (check the mirror, {MIRROR_ENV})"
                    )
                chunks.append(chunk)
            data = b"".join(chunks)
    except IncompleteRead as e:
        raise FewIntentError(f"partial download of {url} ({len(e.partial)} bytes arrived): try again") from e
    except urllib.error.HTTPError as e:
        raise FewIntentError(f"{url}: HTTP {e.code} {e.reason}") from e
    except urllib.error.URLError as e:
        if url.startswith("file:"):
            raise FewIntentError(f"{url}: not in the mirror") from e
        raise FewIntentError(
            f"cannot reach {where} ({e.reason}): no network? Connect, or set {MIRROR_ENV} to a local mirror"
        ) from e
    except (TimeoutError, OSError, HTTPException) as e:
        raise FewIntentError(f"cannot download from {where} ({e or type(e).__name__}): no network? try again") from e
    if expected is not None and expected.isdigit() and int(expected) != len(data):
        raise FewIntentError(f"partial download of {url} ({len(data)} of {expected} bytes): try again")
    return data


def check_source(f: SourceFile, data: bytes) -> None:
    """The file's pinned sha256 (or, where only that was pinned, its git blob id) must match."""
    if f.key in SOURCE_SHA256:
        want, got, kind = SOURCE_SHA256[f.key], sha256(data), "sha256"
    elif f.key in SOURCE_BLOB:
        want, got, kind = SOURCE_BLOB[f.key], git_blob_id(data), "git blob id"
    else:  # pragma: no cover - the pins are generated from the same registry
        raise FewIntentError(f"{f.key}: no pinned hash")
    if got != want:
        raise FewIntentError(
            f"{f.key} changed: {kind} {got[:12]}... is not the pinned {want[:12]}... (commit "
            f"{REPOS[f.repo].commit[:12]}); nothing written"
        )


def convert_checked(corpus: CorpusSource, data: dict[str, bytes]) -> dict[str, bytes]:
    """Convert and check every output file against its pinned sha256 (the reference corpora's)."""
    out = corpus.convert(data)
    pinned = OUTPUT_SHA256[corpus.name]
    if set(out) != set(pinned):
        raise FewIntentError(f"{corpus.name}: converted files {sorted(out)} are not the pinned {sorted(pinned)}")
    for fname, content in out.items():
        if sha256(content) != pinned[fname]:
            raise FewIntentError(f"{corpus.name}/{fname}: the conversion does not reproduce the pinned file")
    return out


def write_corpus(home: Path, name: str, files: dict[str, bytes], manifest: Mapping[str, object]) -> Path:
    """Write ``home/name`` atomically: into a temporary sibling, then renamed in (an old copy is moved aside first)."""
    home.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-{os.getpid()}-", dir=home))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the corpus is public data
        for fname, content in files.items():
            with open(tmp / fname, "wb") as fh:
                fh.write(content)
                fh.flush()
                os.fsync(fh.fileno())
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        target = home / name
        old = None
        if target.exists():
            old = home / f".{name}.old-{os.getpid()}"
            target.rename(old)
        tmp.rename(target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return target
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


Progress = Callable[[int], None]


def download(
    corpus: CorpusSource,
    *,
    home: Path | None = None,
    mirror: str | None = None,
    progress: Progress | None = None,
    force: bool = False,
) -> tuple[CorpusState, bool]:
    """Fetch, check, convert and write one corpus; returns its state and whether anything was fetched.

    A corpus already present as pinned is left as it is (unless ``force``). Any failure leaves ``home`` as it was.

    Example:
        >>> download(CORPORA["banking77"])  # doctest: +SKIP
        (CorpusState(name='banking77', path=..., state='present'), True)
    """
    home = home or data_home()
    before = state(corpus.name, home)
    if before.state == "present" and not force:
        return before, False
    base = _mirror_base(mirror)
    data: dict[str, bytes] = {}
    for f in corpus.files:
        content = fetch(source_url(base, f))
        check_source(f, content)
        data[f.path] = content
        if progress is not None:
            progress(1)
    files = convert_checked(corpus, data)
    manifest = {
        "name": corpus.name,
        "licence": corpus.licence,
        "citation": corpus.citation,
        "sources": {r: REPOS[r].commit for r in sorted({f.repo for f in corpus.files})},
        "sha256": OUTPUT_SHA256[corpus.name],
        "command": f"{DOWNLOAD_COMMAND} {corpus.name}",
    }
    write_corpus(home, corpus.name, files, manifest)
    return state(corpus.name, home), True


def size_mb(name: str) -> float:
    return OUTPUT_BYTES[name] / 1e6
