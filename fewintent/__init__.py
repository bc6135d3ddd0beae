"""fewintent: few-shot intent adaptation for chatbots, with an out-of-scope fallback you can trust."""

from __future__ import annotations

__version__ = "0.1.0"

from fewintent.data import IntentSet, load_hf_intents, read_intent_file  # noqa: E402
from fewintent.encoder import SentenceEncoder  # noqa: E402
from fewintent.errors import FewIntentError  # noqa: E402
from fewintent.heads import Distance, PrototypicalHead  # noqa: E402
from fewintent.model import (  # noqa: E402
    AdaptArguments,
    EvaluationResult,
    IntentClassifier,
    IntentScore,
    Prediction,
    evaluate,
)

__all__ = [
    "AdaptArguments",
    "Distance",
    "EvaluationResult",
    "FewIntentError",
    "IntentClassifier",
    "IntentScore",
    "IntentSet",
    "Prediction",
    "PrototypicalHead",
    "SentenceEncoder",
    "__version__",
    "evaluate",
    "load_hf_intents",
    "read_intent_file",
]
