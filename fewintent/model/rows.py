"""An intent set's labels as arrays: what fitting a classifier, cross-validating it and the benchmark start from."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from fewintent.data.intentset import IntentSet


def intent_rows(data: IntentSet, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Each example's (first) intent as an index into ``labels``, and all its intents as a bool row over them."""
    index = {label: i for i, label in enumerate(labels)}
    y = np.array([index[i] for i in data.intents], dtype=np.int64)
    sets = np.zeros((len(y), len(labels)), dtype=bool)
    for row, names in enumerate(data.sets()):
        sets[row, [index[x] for x in names]] = True
    return y, sets
