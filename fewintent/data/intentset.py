"""One validated, in-memory set of intent examples, whatever file format it came from."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from fewintent.errors import FewIntentError

DEFAULT_OOS_LABEL = "oos"
# Longer texts are cut: the encoder reads 128 tokens at most, and a runaway row should not cost minutes.
MAX_TEXT_CHARS = 2000


@dataclass
class IntentSet:
    """Validated examples: in-scope ``(text, intent)`` pairs plus out-of-scope texts.

    Example:
        >>> s = IntentSet.from_pairs([("hi", "greet"), ("hello", "greet"), ("bye", "leave")])
        >>> s.labels
        ['greet', 'leave']
    """

    texts: list[str]
    intents: list[str]
    oos_texts: list[str] = field(default_factory=list)
    oos_label: str = DEFAULT_OOS_LABEL
    warnings: list[str] = field(default_factory=list)
    source: str = "<memory>"

    @property
    def labels(self) -> list[str]:
        """Intent names in order of first appearance."""
        return list(dict.fromkeys(self.intents))

    def counts(self) -> dict[str, int]:
        c = Counter(self.intents)
        return {label: c[label] for label in self.labels}

    def by_intent(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {label: [] for label in self.labels}
        for text, intent in zip(self.texts, self.intents):
            out[intent].append(text)
        return out

    def __len__(self) -> int:
        return len(self.texts) + len(self.oos_texts)

    @classmethod
    def from_pairs(
        cls,
        pairs: Iterable[tuple[str, str]],
        *,
        oos_label: str = DEFAULT_OOS_LABEL,
        source: str = "<memory>",
        for_training: bool = True,
    ) -> IntentSet:
        """Clean and validate ``(text, intent)`` pairs; rows labelled ``oos_label`` become out-of-scope texts.

        For training data, duplicates are dropped, at least two intents are required and single-example
        intents are reported; test data keeps every row and only needs one usable row.
        """
        warnings: list[str] = []
        texts: list[str] = []
        intents: list[str] = []
        oos: list[str] = []
        seen: dict[str, str] = {}
        n_empty = n_dup = n_conflict = n_long = 0
        for raw_text, raw_intent in pairs:
            text = " ".join(str(raw_text).split()) if raw_text is not None else ""
            intent = str(raw_intent).strip() if raw_intent is not None else ""
            check_intent_name(intent)
            if intent != oos_label and intent.casefold() == oos_label.casefold():
                raise FewIntentError(
                    f"{source}: intent '{intent}' differs from the out-of-scope label '{oos_label}' only by case; "
                    f"write '{oos_label}' for out-of-scope rows, or give the intent another name"
                )
            if not text or not intent:
                n_empty += 1
                continue
            if len(text) > MAX_TEXT_CHARS:
                text = text[:MAX_TEXT_CHARS]
                n_long += 1
            if text in seen and for_training:
                if seen[text] == intent:
                    n_dup += 1
                else:
                    n_conflict += 1
                    if n_conflict <= 3:
                        warnings.append(
                            f"'{shorten(text)}' is labelled both '{seen[text]}' and '{intent}'; kept '{seen[text]}'"
                        )
                continue
            seen[text] = intent
            if intent == oos_label:
                oos.append(text)
            else:
                texts.append(text)
                intents.append(intent)
        if n_empty:
            warnings.append(f"dropped {n_empty} row(s) with an empty text or intent")
        if n_dup:
            warnings.append(f"dropped {n_dup} duplicate row(s)")
        if n_conflict > 3:
            warnings.append(f"{n_conflict} texts in all carried two different intents; the first label was kept")
        if n_long:
            warnings.append(f"cut {n_long} text(s) longer than {MAX_TEXT_CHARS} characters")
        result = cls(texts, intents, oos, oos_label=oos_label, warnings=warnings, source=source)
        result._check(for_training)
        return result

    def _check(self, for_training: bool) -> None:
        if not self.texts and not self.oos_texts:
            raise FewIntentError(f"{self.source}: no usable rows (every row had an empty text or intent)")
        if not for_training:
            return
        labels = self.labels
        if len(labels) < 2:
            found = f"only '{labels[0]}'" if labels else "none"
            raise FewIntentError(
                f"{self.source}: at least 2 in-scope intents are needed to build a classifier, found {found}"
            )
        singles = [label for label, n in self.counts().items() if n == 1]
        if singles:
            shown = ", ".join(singles[:5]) + (" ..." if len(singles) > 5 else "")
            self.warnings.append(
                f"{len(singles)} intent(s) have a single example ({shown}); they work (1-shot) but the "
                "out-of-scope threshold is calibrated less reliably: add a second example where you can"
            )

    def subset(self, labels: Sequence[str]) -> IntentSet:
        keep = set(labels)
        pairs = [(t, i) for t, i in zip(self.texts, self.intents) if i in keep]
        return IntentSet(
            [t for t, _ in pairs], [i for _, i in pairs], list(self.oos_texts), self.oos_label, [], self.source
        )


def shorten(text: str, limit: int = 80) -> str:
    """A text as a warning shows it: long ones cut, so one message stays one line."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_intent_name(name: str) -> str:
    """Intent names are one line of printable text: a newline or NUL would break tables, URLs and logs."""
    bad = next((ch for ch in name if ord(ch) < 32 or ord(ch) == 127), None)
    if bad is not None:
        raise FewIntentError(f"intent name {name!r:.60} contains the control character {bad!r}; use one line of text")
    return name


_NAME_WORDS = re.compile(r"[\s_\-./:]+|(?<=[a-z])(?=[A-Z])")
_GENERIC_WORDS = frozenset({"intent", "label", "class", "category", "other", "misc"})


def name_example(label: str) -> str | None:
    """An intent's name as an example message: ``card_arrival`` / ``cardArrival`` -> ``card arrival``. None for a
    name that says nothing (no word of three letters or more besides intent / label / class ...: ``intent_17``)."""
    words = [w.lower() for w in _NAME_WORDS.split(label) if w]
    if not any(len(w) >= 3 and w.isalpha() and w not in _GENERIC_WORDS for w in words):
        return None
    return " ".join(words)
