"""What prediction reads and returns: the immutable scoring table and the prediction objects."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from fewintent.heads.decision import DecisionHead, HeadParams
from fewintent.model.oos import OosScorer

Rows = tuple[np.ndarray, np.ndarray]
"""Embeddings (float32) and their label indices (int64)."""
TableRows = tuple[
    tuple[str, ...], np.ndarray, np.ndarray, np.ndarray, "Rows | None", "np.ndarray | None", "np.ndarray | None"
]
"""What a table is fitted from: labels, example embeddings, their (first) label indices, out-of-scope examples,
the intents' name rows, the trained-on flags and the multi-label sets (what ``IntentClassifier._build_table``
takes)."""


@dataclass
class IntentScore:
    name: str
    confidence: float


@dataclass
class Prediction:
    """One classified text; ``to_dict()`` is one ``predict --json`` line (README, "Command line")."""

    text: str
    intent: IntentScore
    is_oos: bool
    intent_ranking: list[IntentScore] = field(default_factory=list)
    oos_score: float | None = None
    """How in-scope the text looks under the model's OOS score (higher = more); below the threshold = OOS."""
    intents: list[IntentScore] | None = None
    """A multi-label model's answer: every intent that passes, most confident first (empty: out of scope); None
    for a single-label model."""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.intents is None:  # single-label answers keep their shape
            del out["intents"]
        return out


@dataclass(frozen=True)
class ScoringTable:
    """Everything prediction reads, swapped as one object so concurrent readers never see half an update.

    It owns its arrays (numpy) and holds the head and the out-of-scope score as objects, whichever they are:
    :meth:`to_tensors` is what a model directory stores (the head adds its own), :meth:`from_tensors` reads it
    back (checking shapes), the head reads its own tensors and the OOS score is fitted again.
    """

    labels: tuple[str, ...]
    head: DecisionHead
    prototypes: np.ndarray  # (n_labels, dim), L2-normalised
    support: np.ndarray  # (n_examples, dim)
    support_labels: np.ndarray  # (n_examples,) int64 into labels
    oos: np.ndarray  # (n_oos, dim) out-of-scope examples, possibly empty
    threshold: float
    scorer: OosScorer  # the out-of-scope score the threshold cuts
    oos_temperature: float  # how fast OOS confidence moves away from 0.5 around the threshold
    # the intents' names as one more example each (``intent_names``): (n_names, dim) and their label indices
    name_support: np.ndarray | None = None
    name_labels: np.ndarray | None = None
    # (n_examples,) bool: the encoder was trained on this example (``tune``); None when it was not tuned
    tuned: np.ndarray | None = None
    # (n_examples, n_labels) bool: every intent of each example (multi-label); None for single-label examples
    sets: np.ndarray | None = None

    @classmethod
    def build(
        cls,
        labels: tuple[str, ...],
        head: DecisionHead,
        oos_score: type[OosScorer],
        prototypes: np.ndarray,
        examples: Rows,
        oos: np.ndarray,
        *,
        threshold: float,
        oos_temperature: float,
        names: Rows | None = None,
        tuned: np.ndarray | None = None,
        sets: np.ndarray | None = None,
    ) -> ScoringTable:
        """A table from its parts; the OOS score is fitted on the examples (names included) and the head."""
        if tuned is not None and tuned.shape != examples[1].shape:
            raise ValueError("is corrupt (trained-on flags do not match the examples)")
        if sets is not None and sets.shape != (len(examples[1]), len(labels)):
            raise ValueError("is corrupt (the examples' intent sets do not match the examples and labels)")
        if head.multi_label != (sets is not None):
            raise ValueError(
                f"does not fit its head ('{head.name}' {'needs' if head.multi_label else 'takes no'} intent sets)"
            )
        scorer = oos_score.fit(*plus(examples, names), len(labels), prototypes, head)
        name_support, name_labels = names or (None, None)
        return cls(
            labels,
            head,
            prototypes,
            examples[0],
            examples[1],
            oos,
            float(threshold),
            scorer,
            float(oos_temperature),
            name_support,
            name_labels,
            None if tuned is None else tuned.astype(bool),
            None if sets is None else sets.astype(bool),
        )

    def to_tensors(self) -> dict[str, np.ndarray]:
        """The table's tensors by name, as a model directory's ``model.safetensors`` holds them."""
        out = {
            "prototypes": self.prototypes,
            "support": self.support,
            "support_labels": self.support_labels,
            "oos": self.oos,
            **self.head.to_tensors(),
            "name_support": self.name_support,
            "name_labels": self.name_labels,
            "support_tuned": None if self.tuned is None else self.tuned.astype(np.uint8),
            "support_sets": None if self.sets is None else self.sets.astype(np.uint8),
        }
        return {k: np.ascontiguousarray(v) for k, v in out.items() if v is not None}

    @classmethod
    def from_tensors(
        cls,
        labels: tuple[str, ...],
        tensors: Mapping[str, Any],
        *,
        head: type[DecisionHead],
        params: HeadParams,
        oos_score: type[OosScorer],
        threshold: float,
        oos_temperature: float,
    ) -> ScoringTable:
        """The table :meth:`to_tensors` wrote (numpy arrays, or anything ``np.asarray`` takes); ``ValueError`` says
        what does not fit."""
        t = {k: np.asarray(v) for k, v in tensors.items()}
        needed = {"prototypes", "support", "support_labels", "oos"}
        if not needed <= set(t):
            raise ValueError(f"lacks {', '.join(sorted(needed - set(t)))}")
        protos, n = t["prototypes"], len(labels)
        if protos.ndim != 2 or protos.shape[0] != n:
            raise ValueError("does not match the labels (labels and prototypes differ)")
        for key in ("support", "oos", "name_support"):
            if key in t and (t[key].ndim != 2 or (t[key].size and t[key].shape[1] != protos.shape[1])):
                raise ValueError(f"is corrupt ({key} has shape {tuple(t[key].shape)})")
        for key in ("support_labels", "name_labels"):
            if key in t and t[key].size and not 0 <= int(t[key].min()) <= int(t[key].max()) < n:
                raise ValueError("does not match the labels (example labels out of range)")
        if len(t["support"]) != len(t["support_labels"]):
            raise ValueError("is corrupt (examples without their labels)")
        if ("name_support" in t) != ("name_labels" in t) or (
            "name_support" in t and len(t["name_support"]) != len(t["name_labels"])
        ):
            raise ValueError("is corrupt (intent-name examples without their labels)")
        names = (_floats(t["name_support"]), _ints(t["name_labels"])) if "name_support" in t else None
        tuned = t["support_tuned"].astype(bool) if "support_tuned" in t else None
        sets = t["support_sets"].astype(bool) if "support_sets" in t else None
        return cls.build(
            labels,
            head.from_tensors(t, _floats(protos), params),
            oos_score,
            _floats(protos),
            (_floats(t["support"]), _ints(t["support_labels"])),
            _floats(t["oos"]),
            threshold=threshold,
            oos_temperature=oos_temperature,
            names=names,
            tuned=tuned,
            sets=sets,
        )

    def oos_scores(self, emb: np.ndarray, sims: np.ndarray) -> np.ndarray:
        """How in-scope each embedding looks (higher = more); the threshold cuts this."""
        return self.scorer(emb, sims)

    def similarities(self, emb: np.ndarray) -> np.ndarray:
        """Cosine similarity of each embedding to each prototype: the out-of-scope score."""
        return emb @ self.prototypes.T

    def logits(self, emb: np.ndarray, sims: np.ndarray) -> np.ndarray:
        """The head's scores over intents (softmax gives confidences)."""
        return self.head.logits(emb, sims)

    def counts(self) -> dict[str, int]:
        """Examples per intent, in label order (a multi-label example counts for each of its intents)."""
        if self.sets is not None:
            return dict(zip(self.labels, self.sets.sum(axis=0).tolist()))
        c = np.bincount(self.support_labels, minlength=len(self.labels)).tolist()
        return dict(zip(self.labels, c))

    def tuned_intents(self) -> list[str]:
        """Labels with at least one example the encoder was trained on (none when it was not tuned)."""
        if self.tuned is None:
            return []
        seen = np.bincount(self.support_labels[self.tuned], minlength=len(self.labels)) > 0
        return [label for label, s in zip(self.labels, seen.tolist()) if s]

    def rows_without(self, name: str) -> TableRows:
        """The rows of every intent but ``name``, renumbered to close the gap (a multi-label example keeps its other
        intents)."""
        gone = self.labels.index(name)
        keep, y, sets = self._rows_kept(gone)
        labels = tuple(x for x in self.labels if x != name)
        names = _join(_without_label(self.names(), gone), None)
        return labels, self.support[keep], y, self.oos, names, self._flags(keep), sets

    def rows_with(self, name: str, emb: np.ndarray, name_row: Rows | None) -> TableRows:
        """The rows with intent ``name`` added last (its old rows, if any, replaced) with examples ``emb`` and its
        name row; the new examples were never trained on."""
        gone = self.labels.index(name) if name in self.labels else None
        old = [label for label in self.labels if label != name]
        keep, y, sets = self._rows_kept(gone)
        support = np.concatenate([self.support[keep], emb])
        y = np.concatenate([y, np.full(len(emb), len(old), dtype=np.int64)])
        tuned = self._flags(keep)
        if tuned is not None:
            tuned = np.concatenate([tuned, np.zeros(len(emb), dtype=bool)])
        if sets is not None:
            new = np.zeros((len(emb), len(old) + 1), dtype=bool)
            new[:, -1] = True
            sets = np.concatenate([np.pad(sets, ((0, 0), (0, 1))), new])
        if name_row is not None:
            name_row = name_row[0], np.full_like(name_row[1], len(old))
        return (*old, name), support, y, self.oos, _join(_without_label(self.names(), gone), name_row), tuned, sets

    def _rows_kept(self, gone: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Which examples stay without label ``gone`` (None: all), their label indices renumbered, and their sets."""
        if gone is None:
            return np.ones(len(self.support_labels), dtype=bool), self.support_labels, self.sets
        if self.sets is None:
            keep: np.ndarray = self.support_labels != gone
            return keep, self.support_labels[keep] - (self.support_labels[keep] > gone).astype(np.int64), None
        sets = np.delete(self.sets, gone, axis=1)
        keep = np.asarray(
            sets.any(axis=1), dtype=bool
        )  # an example of that intent alone goes; one with others keeps them
        sets = sets[keep]
        return keep, sets.argmax(axis=1).astype(np.int64), sets

    def _flags(self, keep: np.ndarray) -> np.ndarray | None:
        return None if self.tuned is None else self.tuned[keep]

    def names(self) -> Rows:
        """The intents' name rows (possibly none)."""
        if self.name_support is None or self.name_labels is None:
            return np.empty((0, self.support.shape[1]), np.float32), np.empty(0, np.int64)
        return self.name_support, self.name_labels


def head_rows(
    examples: Rows, names: Rows | None, sets: np.ndarray | None, n_labels: int, oos: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What a head is fitted on: the examples and the intents' names as rows, their targets (label indices, or
    multi-hot rows when ``sets`` are given: a name is one-hot) and which rows are examples rather than names.

    A multi-label head decides out of scope itself, so with ``sets`` the out-of-scope examples (``oos``, messages
    with no intent) are rows too, negatives for every intent; a single-label head leaves them to the threshold."""
    x, y = plus(examples, names)
    messages = np.arange(len(y)) < len(examples[1])
    if sets is None:
        return x, y, messages
    hot = np.zeros((len(y), n_labels), dtype=bool)
    hot[: len(sets)] = sets
    hot[np.arange(len(sets), len(y)), y[len(sets) :]] = True
    if oos is not None and len(oos):
        x = np.concatenate([x, oos])
        hot = np.concatenate([hot, np.zeros((len(oos), n_labels), dtype=bool)])
        messages = np.concatenate([messages, np.ones(len(oos), dtype=bool)])
    return x, hot, messages


def plus(rows: Rows, extra: Rows | None) -> Rows:
    """``rows`` followed by ``extra`` (the intents' name rows after the examples)."""
    return rows if extra is None else (np.concatenate([rows[0], extra[0]]), np.concatenate([rows[1], extra[1]]))


def _without_label(rows: Rows, gone: int | None) -> Rows:
    """The rows of every label but ``gone``, renumbered to close the gap (all of them when ``gone`` is None)."""
    emb, y = rows
    if gone is None:
        return emb, y
    keep = y != gone
    return emb[keep], y[keep] - (y[keep] > gone).astype(np.int64)


def _join(a: Rows, b: Rows | None) -> Rows | None:
    """``a`` and ``b`` together, or None when that is no row at all."""
    rows = plus(a, b)
    return rows if len(rows[1]) else None


def _floats(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


def _ints(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.int64)
