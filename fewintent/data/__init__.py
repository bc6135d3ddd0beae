"""Data layer: reading and validating intent files, the corpus registry, episode sampling."""

from fewintent.data.intentset import DEFAULT_OOS_LABEL, IntentSet
from fewintent.data.io import load_hf_intents, read_intent_file, read_intent_files

__all__ = ["DEFAULT_OOS_LABEL", "IntentSet", "load_hf_intents", "read_intent_file", "read_intent_files"]
