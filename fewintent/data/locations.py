"""Where corpora are found, in one order: ``--data-dir``, ``$FEWINTENT_DATASETS``, the downloaded ones
(``fewintent datasets download``: ``$FEWINTENT_DATA``, else the platform's user data folder), then
``../shared/datasets`` beside the project. The benchmark, meta-training and the tests all look here.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from fewintent.errors import FewIntentError

DATASETS_ENV = "FEWINTENT_DATASETS"
"""A folder of ``<dataset>/<split>.jsonl`` corpora the user already has."""
DATA_ENV = "FEWINTENT_DATA"
"""Where ``fewintent datasets download`` writes (and then finds) corpora."""
DOWNLOAD_COMMAND = "fewintent datasets download"


def data_home() -> Path:
    """The downloaded corpora: ``$FEWINTENT_DATA``, else the platform's user data folder + ``fewintent/datasets``
    (``~/.local/share`` or ``$XDG_DATA_HOME`` on Linux, ``~/Library/Application Support`` on macOS,
    ``%LOCALAPPDATA%`` on Windows)."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    if sys.platform == "win32":
        root = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        root = Path.home() / "Library" / "Application Support"
    else:
        root = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return root / "fewintent" / "datasets"


def shared_dir() -> Path:
    """``../shared/datasets`` beside the project root that holds the working directory (its ``pyproject.toml``)."""
    here = Path.cwd()
    for base in (here, *here.parents):
        candidate = base.parent / "shared" / "datasets"
        if (base / "pyproject.toml").is_file() and candidate.is_dir():
            return candidate
    return here.parent / "shared" / "datasets"


def search_path(data_dir: str | Path | None = None) -> list[Path]:
    """The folders searched for a corpus, first first. A ``data_dir`` the user names must exist."""
    roots: list[Path] = []
    if data_dir is not None:
        d = Path(data_dir).expanduser()
        if not d.is_dir():
            raise FewIntentError(f"data directory {d} does not exist (pass --data-dir with the dataset folders)")
        roots.append(d)
    if os.environ.get(DATASETS_ENV):
        roots.append(Path(os.environ[DATASETS_ENV]).expanduser())
    roots += [data_home(), shared_dir()]
    out: list[Path] = []
    for r in roots:
        if r not in out:
            out.append(r)
    return out


def find_corpus(name: str, data_dir: str | Path | None = None) -> Path | None:
    """The folder of corpus ``name``: the first ``ROOT/name`` on the search path, or None."""
    for root in search_path(data_dir):
        if (root / name).is_dir():
            return root / name
    return None


def first_root(data_dir: str | Path | None = None) -> Path:
    """The first folder of the search path that exists (the download folder when none does)."""
    roots = search_path(data_dir)
    return next((r for r in roots if r.is_dir()), data_home())


def not_found(name: str, data_dir: str | Path | None = None) -> FewIntentError:
    """The one message for a corpus that is nowhere: where it looked, and the command that gets it."""
    looked = ", ".join(str(r) for r in search_path(data_dir))
    return FewIntentError(
        f"corpus '{name}' not found (looked in {looked}); get it with `{DOWNLOAD_COMMAND} {name}` or pass --data-dir"
    )
