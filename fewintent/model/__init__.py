"""Model layer: IntentClassifier (adapt, calibrate, predict, edit, save/load) and evaluation metrics."""

from fewintent.model.classifier import AdaptArguments, IntentClassifier, IntentScore, Prediction
from fewintent.model.discovery import DiscoveryResult, discover
from fewintent.model.evaluation import EvaluationResult, evaluate

__all__ = [
    "AdaptArguments",
    "DiscoveryResult",
    "EvaluationResult",
    "IntentClassifier",
    "IntentScore",
    "Prediction",
    "discover",
    "evaluate",
]
