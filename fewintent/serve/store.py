"""The served model and its directory: edits are persisted before anyone sees them, other processes' saves reload.

Several server processes (``fewintent serve --workers N``) can serve one model directory. Each holds its own
classifier; an edit takes an exclusive ``flock`` on a lock file beside the directory, reloads first if another
process saved since, applies the change to a copy, saves it atomically and only then swaps the copy in. Every
request checks the ``config.json`` stamp (inode, mtime, size: one ``stat``) and reloads under a shared lock when
it changed, so an intent added through one worker is answered by all of them from the next request on. The same
check picks up a model re-adapted in place with ``fewintent adapt -o MODEL_DIR``.

Read-after-write: an edit swaps its copy in before it returns (so before its HTTP answer), and a request that
checks the stamp between that save and the swap waits on the edit's lock instead of reloading; so every request
sent after an edit answered is served by the edited model.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from fewintent.errors import FewIntentError
from fewintent.model.classifier import IntentClassifier
from fewintent.model.names import known_spelling
from fewintent.model.storage import CONFIG, StorageError, model_dir_lock

logger = logging.getLogger("fewintent.serve")

Stamp = tuple[int, int, int]


class PersistError(RuntimeError):
    """Saving the edited model failed; the previous model is still on disk and still served.

    ``status``: 507 when the disk is full, 503 when the directory cannot be written (read-only, no permission),
    500 for anything else."""

    def __init__(self, message: str, *, status: int = 500) -> None:
        super().__init__(message)
        self.status = status


class ModelStore:
    """Holds the classifier a server answers with; see the module docstring for the multi-process protocol.

    Example:
        >>> store = ModelStore("models/demo")  # doctest: +SKIP
        >>> clf = await store.current()  # doctest: +SKIP
        >>> await store.add_intent("cancel_order", ["cancel my order", "I want to cancel"])  # doctest: +SKIP
    """

    def __init__(
        self, model_dir: str | Path, classifier: IntentClassifier | None = None, *, device: str = "auto"
    ) -> None:
        self.model_dir = Path(model_dir).expanduser().absolute()
        self.device = device
        self._lock = threading.Lock()  # one reload or edit at a time in this process
        with model_dir_lock(self.model_dir, exclusive=False):
            self._stamp = self._read_stamp()  # before loading: a save racing the load triggers a second load
            self.classifier = classifier or IntentClassifier.load(self.model_dir, device=device)
        self.reloads = 0
        self.reload_error: str | None = None
        """Why the directory's current contents could not be loaded (the previous model is still served); None
        once a reload succeeds."""

    def _read_stamp(self) -> Stamp | None:
        try:
            st = os.stat(self.model_dir / CONFIG)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def is_stale(self) -> bool:
        stamp = self._read_stamp()
        return stamp is not None and stamp != self._stamp

    async def current(self) -> IntentClassifier:
        """The classifier to answer with, reloaded first if another process saved the directory since."""
        if self.is_stale():
            await asyncio.to_thread(self._reload_if_stale)
        return self.classifier

    def _reload_if_stale(self) -> None:
        with self._lock, model_dir_lock(self.model_dir, exclusive=False):
            self._reload_locked()

    def _reload_locked(self, *, retry: bool = False) -> None:
        """Load the directory again if it was saved since (or, with ``retry``, if the last reload failed)."""
        stamp = self._read_stamp()
        if stamp is None or (stamp == self._stamp and not (retry and self.reload_error)):
            return
        device = str(self.classifier.encoder.device) if self.device == "auto" else self.device
        try:
            clf = IntentClassifier.load(self.model_dir, device=device)
        except Exception as e:  # a broken directory must never take down the model being served
            # Keep answering with the model we have; a later save changes the stamp and is tried again.
            message = str(e) if isinstance(e, FewIntentError) else f"{type(e).__name__}: {e}"
            if isinstance(e, FewIntentError):
                logger.error("reload of %s failed, still serving the previous model: %s", self.model_dir, message)
            else:
                logger.exception("reload of %s failed, still serving the previous model", self.model_dir)
            self._stamp, self.reload_error = stamp, message
            return
        self.classifier, self._stamp, self.reload_error = clf, stamp, None
        self.reloads += 1
        logger.info("reloaded %s (%d intents): it was saved by another process", self.model_dir, len(clf.labels))

    # ----------------------------------------------------------------- edits
    async def add_intent(self, name: str, examples: Sequence[str]) -> tuple[IntentClassifier, bool]:
        """Add or replace one intent and persist it; returns the new classifier and whether the intent is new."""
        created: list[bool] = []

        def change(clf: IntentClassifier) -> None:
            created.append(name.strip() not in clf.labels)
            clf.add_intent(name, examples)

        clf = await asyncio.to_thread(self._edit, change)
        return clf, created[0]

    async def remove_intent(self, name: str) -> IntentClassifier:
        """Remove one intent and persist it; ``UnknownIntentError`` when the model has no such intent,
        ``EditConflictError`` when it is one of the last two."""
        return await asyncio.to_thread(self._edit, lambda clf: clf.remove_intent(known_spelling(name, clf.labels)))

    def _edit(self, change: Callable[[IntentClassifier], None]) -> IntentClassifier:
        with self._lock, model_dir_lock(self.model_dir, exclusive=True):
            self._reload_locked(retry=True)  # edit on top of what another process saved, never over it
            if self.reload_error is not None:  # saving the previous model would overwrite what is there now
                raise PersistError(
                    f"the model directory holds a model that cannot be loaded ({self.reload_error}); the previous "
                    "model is still served, and edits are refused until the directory is fixed",
                    status=503,
                )
            # A shallow copy shares the encoder (and its lock); the change swaps in a new table on the copy only,
            # so requests keep the old model until the new one is on disk.
            staged = copy.copy(self.classifier)
            staged.meta = dict(staged.meta)
            change(staged)
            try:
                staged.save(self.model_dir)
            except StorageError as e:  # understood: one log line, no traceback
                logger.error("saving %s failed, still serving the previous model: %s", self.model_dir, e)
                message = f"could not save the model, the previous one is still served: {e}"
                raise PersistError(message, status=507 if e.no_space else 503) from e
            except FewIntentError as e:
                logger.error("saving %s failed, still serving the previous model: %s", self.model_dir, e)
                raise PersistError(f"could not save the model: {e}; nothing was changed") from e
            except Exception as e:
                logger.exception("saving %s failed; the previous model is kept", self.model_dir)
                raise PersistError(f"could not save the model ({type(e).__name__}: {e}); nothing was changed") from e
            self.classifier, self._stamp, self.reload_error = staged, self._read_stamp(), None
        logger.info("saved %s (%d intents)", self.model_dir, len(staged.labels))
        return staged
