"""Serve layer: micro-batched async prediction and the FastAPI app behind ``fewintent serve``.

``MicroBatcher`` and ``ModelStore`` need nothing beyond the core install; ``create_app`` / ``run_server`` need the
``[serve]`` extra (FastAPI, uvicorn) and are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fewintent.serve.batching import BatchStats, MicroBatcher
from fewintent.serve.store import ModelStore

if TYPE_CHECKING:
    from fewintent.serve.app import ServeSettings, create_app, run_server

__all__ = ["BatchStats", "MicroBatcher", "ModelStore", "ServeSettings", "create_app", "run_server"]

_APP_NAMES = {"ServeSettings", "create_app", "run_server"}


def __getattr__(name: str) -> Any:
    if name in _APP_NAMES:
        try:
            from fewintent.serve import app
        except ImportError as e:  # pragma: no cover - depends on the install
            from fewintent.errors import FewIntentError, extra_install

            raise FewIntentError(
                f"the HTTP server needs the [serve] extra ({e.name} is missing): {extra_install('serve')}"
            ) from e
        return getattr(app, name)
    raise AttributeError(f"module 'fewintent.serve' has no attribute '{name}'")
