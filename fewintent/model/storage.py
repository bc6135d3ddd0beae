"""Model directories on disk: the atomic swap a save makes, the lock that orders saves and loads, and recovery of a
save that was killed between its two renames. What goes into the directory is :mod:`fewintent.model.persistence`'s."""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from fewintent.errors import CorruptModelError, FewIntentError

FORMAT = "fewintent-model"
CONFIG = "config.json"
# One save at a time per process: two threads saving the same classifier must not race on the renames.
_SAVE_LOCK = threading.Lock()
MAX_NAME_BYTES = 255 - len(".tmp-4194304-12345678.")
"""Longest model directory name whose temporary folder, backup and lock file still fit in a file name."""
_HELD = threading.local()  # the model-directory locks this thread holds: lock path -> exclusive?


class StorageError(FewIntentError):
    """A model directory cannot be written: the disk is full (``no_space``), or the place is read-only or not
    writable. Nothing was changed; the server answers 507 or 503."""

    def __init__(self, message: str, *, no_space: bool = False) -> None:
        super().__init__(message)
        self.no_space = no_space


def real_path(path: Path) -> Path:
    """``path`` made absolute with every symbolic link followed: a symlinked model directory is read, locked and
    written through at its target (the link itself is kept)."""
    path = path.expanduser().absolute()
    try:
        return path.resolve()
    except (RuntimeError, OSError) as e:  # RuntimeError: a symlink loop (Python < 3.13)
        raise FewIntentError(f"{path}: cannot follow its symbolic links ({e}); point the link at a directory") from e


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
    """Fail early (before minutes of work) when ``path`` cannot become a model directory. A save replaces the
    directory whole, so it is never inside another model directory, nor holds one.

    Returns ``path`` absolute; a symbolic link is checked at its target, where the model will be written."""
    path = path.expanduser().absolute()
    target = real_path(path)
    shown = str(path) if target == path else f"{path} (a link to {target})"
    if target.exists() and not target.is_dir():
        raise FewIntentError(f"{shown}: exists and is not a directory")
    if target.is_dir() and any(target.iterdir()) and not is_model_dir(target):
        raise FewIntentError(f"{shown}: a non-empty directory that is not a fewintent model; refusing to overwrite it")
    outer = next((p for p in target.parents if is_model_dir(p)), None)
    if outer is not None:
        raise FewIntentError(
            f"{shown}: inside the model directory {outer}, which is replaced whole (everything in it) on its next "
            "save; write the model beside it instead"
        )
    inner = next((p for p in target.iterdir() if p.is_dir() and is_model_dir(p)), None) if target.is_dir() else None
    if inner is not None:
        raise FewIntentError(
            f"{shown}: holds another model, {inner}, and a model directory is replaced whole on save, which would "
            "delete it; move that model out first"
        )
    if len(os.fsencode(target.name)) > MAX_NAME_BYTES:
        raise FewIntentError(
            f"{shown}: the name is {len(os.fsencode(target.name))} bytes long; a model directory's name can have "
            f"at most {MAX_NAME_BYTES} (its save writes .NAME.tmp-... beside it, and file names stop at 255)"
        )
    parent = next((p for p in target.parents if p.exists()), None)
    if parent is None or not os.access(parent, os.W_OK):
        raise StorageError(f"{shown}: cannot write there (parent directory {parent} is not writable)")
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
    target = real_path(model_dir)  # a link and its target share one lock
    lock_path = target.parent / f".{target.name}.lock"
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

    A symbolic link is written through: the swap happens at its target and the link stays. A failure (in the
    caller's writing or in the swap) removes the temporary folder and leaves the previous directory in place;
    a full disk or a read-only place becomes a one-line :class:`StorageError`. A crash between the two renames
    leaves the backup and the temporary folder as a pair, which :func:`recover` puts back. Call it under the
    exclusive :func:`model_dir_lock` and ``_SAVE_LOCK``.

    Example:
        with atomic_directory(Path("model")) as tmp:
            (tmp / "config.json").write_text("{}")
    """
    target = real_path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _revive(target)  # an earlier crash's backup back in place first: this save may fail too
        _remove_leftovers(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
    except OSError as e:
        raise _storage_error(e, target, 0) from e
    # The backup is named after the temporary folder: together they prove a crash between the renames.
    old = target.parent / f".{target.name}.old-{tmp.name[len(f'.{target.name}.tmp-') :]}"
    moved = False
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700; a model should be readable like any other directory
        yield tmp
        for f in tmp.iterdir():
            os.chmod(f, 0o666 & ~umask)  # safetensors writes 0600; a service account must read the model too
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if target.exists():
            os.rename(target, old)
            moved = True
        os.rename(tmp, target)
        _fsync_dir(target.parent)
        if moved:
            _remove_tree(old)
    except BaseException as e:
        written = _tree_size(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        if moved and not target.exists():  # failed between the two renames: put the previous model back
            os.rename(old, target)
        translated = _storage_error(e, target, written)
        if translated is e:
            raise
        raise translated from e


def _storage_error(e: BaseException, target: Path, written: int) -> BaseException:
    """A full disk or a read-only place as one line naming the directory (and the space needed); else ``e``."""
    text = str(e)
    no_space = (isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)) or any(
        marker in text for marker in ("No space left on device", "StorageFull", "Disk quota exceeded")
    )
    kept = "the previous model is unchanged" if target.exists() else "nothing was written"
    if no_space:
        previous = _tree_size(target)  # the new model is about as large as the one it replaces
        needed = f"about {_size(max(written, previous))}" if previous else f"at least {_size(written)}"
        try:
            free = f"{_size(shutil.disk_usage(target.parent).free)} free there"
        except OSError:
            free = "free space unknown"
        return StorageError(
            f"{target}: cannot save the model: No space left on device (it needs {needed}, {free}); {kept}",
            no_space=True,
        )
    if isinstance(e, OSError) and e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        where = f" ({e.filename})" if e.filename else ""
        return StorageError(f"{target}: cannot save the model: {e.strerror}{where}; {kept}")
    return e


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _tree_size(path: Path) -> int:
    """Bytes of the files directly in ``path`` (a model directory is flat); 0 when it is gone."""
    try:
        return sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    except OSError:
        return 0


def _remove_tree(path: Path) -> None:
    """Delete a folder, or only the link when it is a symbolic link (``rmtree`` refuses those, silently here)."""
    if path.is_symlink():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_leftovers(path: Path) -> None:
    """Delete the ``.NAME.tmp-PID-*`` and ``.NAME.old-PID-*`` entries that killed saves left behind (their process
    is gone). Runs under the exclusive lock after :func:`recover`, so no backup here is still needed."""
    for kind in ("tmp", "old"):
        prefix = f".{path.name}.{kind}-"
        for leftover in path.parent.glob(f"{glob.escape(prefix)}*"):
            pid = leftover.name[len(prefix) :].split("-", 1)[0]
            if not pid.isdigit() or not _pid_alive(int(pid)):
                _remove_tree(leftover)


def _mtime_or_gone(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except FileNotFoundError:  # renamed away by another loader since the listing
        return float("-inf")


def recover(path: Path) -> Path:
    """Put back the model a save killed between its two renames left as a backup; returns ``path``.

    Only a backup whose temporary folder is still beside it is restored: that pair exists only in that window, so
    a backup left behind for any other reason (a failed cleanup, a model the user deleted since) is never revived.
    Loaders share the lock, so another one may restore the backup first; then the model is back and that is fine.
    """
    target = real_path(path)
    stale = _revive(target)
    if stale and not target.exists():
        raise CorruptModelError(
            f"{path}: no such model directory; {stale[0]} beside it is a backup left by an earlier save, not "
            f"restored automatically: rename it to {target.name} if it holds the model you want"
        )
    return path


def _revive(target: Path) -> list[str]:
    """Restore the newest backup that has its temporary folder beside it; the names of the backups left."""
    if target.exists():
        return []
    prefix = f".{target.name}.old-"
    backups = [b for b in target.parent.glob(f"{glob.escape(prefix)}*") if not b.is_symlink()]
    for b in sorted(backups, key=_mtime_or_gone, reverse=True):
        tmp = target.parent / f".{target.name}.tmp-{b.name[len(prefix) :]}"
        if not (tmp.is_dir() and not tmp.is_symlink() and is_model_dir(b)):
            continue
        try:
            os.rename(b, target)
        except OSError:
            if not target.exists():
                raise
            return []
        shutil.rmtree(tmp, ignore_errors=True)
        return []
    return [b.name for b in backups if b.exists()]
