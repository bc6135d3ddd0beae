"""Model layer: IntentClassifier (decide, calibrate, predict, edit, save/load), the trainer beside it (Trainer: base,
adapter, --steps, --tune -> a fitted classifier) and evaluation metrics."""

from fewintent.model.adapting import LoadedEncoder, Trainer
from fewintent.model.classifier import IntentClassifier, IntentScore, Prediction
from fewintent.model.config import AdaptArguments, ClassifierConfig, TrainingArguments
from fewintent.model.discovery import DiscoveryResult, discover
from fewintent.model.evaluation import EvaluationResult, evaluate

__all__ = [
    "AdaptArguments",
    "ClassifierConfig",
    "DiscoveryResult",
    "EvaluationResult",
    "IntentClassifier",
    "IntentScore",
    "LoadedEncoder",
    "Prediction",
    "Trainer",
    "TrainingArguments",
    "discover",
    "evaluate",
]
