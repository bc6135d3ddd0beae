"""Model layer: IntentClassifier (adapt, calibrate, predict, edit, save/load) and evaluation metrics."""

from fewintent.model.classifier import IntentClassifier, IntentScore, Prediction
from fewintent.model.config import AdaptArguments, ClassifierConfig
from fewintent.model.discovery import DiscoveryResult, discover
from fewintent.model.evaluation import EvaluationResult, evaluate

__all__ = [
    "AdaptArguments",
    "ClassifierConfig",
    "DiscoveryResult",
    "EvaluationResult",
    "IntentClassifier",
    "IntentScore",
    "Prediction",
    "discover",
    "evaluate",
]
