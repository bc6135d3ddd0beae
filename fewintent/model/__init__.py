"""Model layer: IntentClassifier (adapt, calibrate, predict, edit, save/load) and evaluation metrics."""

from fewintent.model.classifier import AdaptArguments, IntentClassifier, IntentScore, Prediction
from fewintent.model.evaluation import EvaluationResult, evaluate

__all__ = ["AdaptArguments", "EvaluationResult", "IntentClassifier", "IntentScore", "Prediction", "evaluate"]
