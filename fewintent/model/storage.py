"""Model directories on disk: the atomic swap a save makes, the lock that orders saves and loads, and recovery of a
save that was killed between its two renames. What goes into the directory is :mod:`fewintent.model.persistence`'s."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

from fewintent.errors import FewIntentError

FORMAT = "fewintent-model"
CONFIG = "config.json"
# One save at a time per process: two threads saving the same classifier must not race on the renames.
_SAVE_LOCK = threading.Lock()
_HELD = threading.local()  # the model-directory locks this thread holds: lock path -> exclusive?


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_model_dir(path: Path) -> bool:
    """Whether ``path`` holds a fewintent model's config (cheap: reads config.json only)."""
    try:
        return json.loads((path / CONFIG).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def check_model_path(path: Path) -> Path:
    """Fail early (before minutes of work) when ``path`` cannot become a model directory."""
    path = path.expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise FewIntentError(f"{path}: exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not is_model_dir(path):
        raise FewIntentError(f"{path}: a non-empty directory that is not a fewintent model; refusing to overwrite it")
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is None or not os.access(parent, os.W_OK):
        raise FewIntentError(f"{path}: cannot write there (parent directory {parent} is not writable)")
    return path


@contextlib.contextmanager
def model_dir_lock(model_dir: Path, *, exclusive: bool) -> Iterator[None]:
    """An advisory ``flock`` on ``.NAME.lock`` beside ``model_dir``, shared by every fewintent process.

    Saves take it exclusively and loads shared, so a load never meets the moment between a save's two renames;
    callers need it only to make several steps one transaction (a server's reload, edit and save). Re-entrant
    within a thread: inside a transaction, the save's and load's own locking is a no-op (a shared hold cannot
    become exclusive: take the exclusive lock first). A no-op where flock is missing or the parent directory does
    not exist yet / is read-only (no one can be saving there).
    """
    lock_path = model_dir.expanduser().absolute().parent / f".{model_dir.name}.lock"
    held: dict[str, bool] = _HELD.__dict__.setdefault("paths", {})
    key = str(lock_path)
    if key in held:
        if exclusive and not held[key]:
            raise RuntimeError(f"{model_dir}: this thread holds the shared lock; take the exclusive one first")
        yield
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: one process per model directory
        yield
        return
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        held[key] = exclusive
        yield
    finally:
        held.pop(key, None)
        os.close(fd)  # closing releases the lock


@contextlib.contextmanager
def atomic_directory(path: Path) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``path`` to write a model into, then swap it in with two renames.

    A failure (in the caller's writing or in the swap) removes the temporary folder and leaves the previous
    directory in place; a crash between the renames leaves a backup that :func:`recover` puts back. Call it under
    the exclusive :func:`model_dir_lock` and ``_SAVE_LOCK``.

    Example:
        with atomic_directory(Path("model")) as tmp:
            (tmp / "config.json").write_text("{}")
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700; a model should be readable like any other directory
    old = None
    try:
        yield tmp
        for f in tmp.iterdir():
            os.chmod(f, 0o666 & ~umask)  # safetensors writes 0600; a service account must read the model too
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if path.exists():
            old = path.parent / f".{path.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            os.rename(path, old)
        os.rename(tmp, path)
        _fsync_dir(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not path.exists():  # failed between the two renames: put the previous model back
            os.rename(old, path)
        raise


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temporaries(path: Path) -> None:
    """Delete ``.NAME.tmp-PID-*`` folders that a killed save left behind (their process is gone)."""
    for tmp in path.parent.glob(f".{path.name}.tmp-*"):
        pid = tmp.name[len(f".{path.name}.tmp-") :].split("-", 1)[0]
        if tmp.is_dir() and (not pid.isdigit() or not _pid_alive(int(pid))):
            shutil.rmtree(tmp, ignore_errors=True)


def _mtime_or_gone(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except FileNotFoundError:  # renamed away by another loader since the listing
        return float("-inf")


def recover(path: Path) -> Path:
    """A crash between the two renames of a save leaves only the backup: use it. Loaders share the lock, so
    another one may rename the backup first; then the model is back in place and that is fine."""
    if path.exists():
        return path
    backups = sorted(path.parent.glob(f".{path.name}.old-*"), key=_mtime_or_gone)
    for b in reversed(backups):
        if is_model_dir(b):
            try:
                os.rename(b, path)
            except OSError:
                if not path.exists():
                    raise
            return path
    return path
