"""Meta layer: episodic meta-training of LoRA adapters (ProtoNet, first-order Proto-MAML), checkpoints, resume."""

from fewintent.meta.args import Algorithm, MetaTrainingArguments
from fewintent.meta.fomaml import FOMAML
from fewintent.meta.inner import InnerLoopSettings, InnerOptimizer
from fewintent.meta.protonet import ProtoNet
from fewintent.meta.trainer import MetaTrainer

__all__ = [
    "FOMAML",
    "Algorithm",
    "InnerLoopSettings",
    "InnerOptimizer",
    "MetaTrainer",
    "MetaTrainingArguments",
    "ProtoNet",
]
