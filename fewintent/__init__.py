"""fewintent: few-shot intent adaptation for chatbots, with an out-of-scope fallback you can trust."""

from __future__ import annotations

# In a source checkout the CLI lives in the top-level cli/ folder (installed as fewintent.cli); make
# `fewintent.cli` importable from the checkout too, e.g. when Python runs with the repo root on sys.path.
import pathlib as _pathlib  # noqa: E402

from fewintent.version import __version__

_root = _pathlib.Path(__file__).resolve().parent.parent
if (
    not (_root / "fewintent" / "cli").exists()
    and (_root / "cli" / "main.py").is_file()
    and (_root / "pyproject.toml").is_file()
):
    __path__.append(str(_root))  # type: ignore[name-defined]

from typing import TYPE_CHECKING, Any  # noqa: E402

from fewintent.data import IntentSet, load_hf_intents, read_intent_file  # noqa: E402
from fewintent.errors import FewIntentError  # noqa: E402
from fewintent.model import (  # noqa: E402
    AdaptArguments,
    ClassifierConfig,
    EvaluationResult,
    IntentClassifier,
    IntentScore,
    Prediction,
    Trainer,
    TrainingArguments,
    evaluate,
)

if TYPE_CHECKING:
    from fewintent.encoder import SentenceEncoder
    from fewintent.heads import Distance, PrototypicalHead

__all__ = [
    "AdaptArguments",
    "ClassifierConfig",
    "Distance",
    "EvaluationResult",
    "FewIntentError",
    "IntentClassifier",
    "IntentScore",
    "IntentSet",
    "Prediction",
    "PrototypicalHead",
    "SentenceEncoder",
    "Trainer",
    "TrainingArguments",
    "__version__",
    "evaluate",
    "load_hf_intents",
    "read_intent_file",
]

# The torch parts are imported on first use: serving an exported ONNX model never loads torch.
_TORCH = {"SentenceEncoder": "fewintent.encoder", "Distance": "fewintent.heads", "PrototypicalHead": "fewintent.heads"}


def __getattr__(name: str) -> Any:
    if name in _TORCH:
        import importlib

        return getattr(importlib.import_module(_TORCH[name]), name)
    raise AttributeError(f"module 'fewintent' has no attribute '{name}'")
