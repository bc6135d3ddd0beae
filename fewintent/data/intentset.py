"""One validated, in-memory set of intent examples, whatever file format it came from."""

from __future__ import annotations

import re
import unicodedata
import warnings as _warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from fewintent.errors import FewIntentError, FewIntentWarning

DEFAULT_OOS_LABEL = "oos"
# Longer texts are cut: the encoder reads 128 tokens at most, and a runaway row should not cost minutes.
MAX_TEXT_CHARS = 2000
MAX_INTENT_NAME_CHARS = 200
"""An intent name is a label shown in tables, URLs and logs, not a sentence (the HTTP API's limit too)."""


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
    label_sets: list[tuple[str, ...]] | None = None
    """Multi-label data: every intent of each in-scope text (``intents`` holds the first of them); None when each
    text has one intent."""

    @property
    def is_multi_label(self) -> bool:
        return self.label_sets is not None

    def sets(self) -> list[tuple[str, ...]]:
        """Each in-scope text's intents (one each for single-label data)."""
        return self.label_sets if self.label_sets is not None else [(i,) for i in self.intents]

    @property
    def labels(self) -> list[str]:
        """Intent names in order of first appearance."""
        return list(dict.fromkeys(label for labels in self.sets() for label in labels))

    def counts(self) -> dict[str, int]:
        """Examples per intent (a multi-label text counts for each of its intents)."""
        c = Counter(label for labels in self.sets() for label in labels)
        return {label: c[label] for label in self.labels}

    def by_intent(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {label: [] for label in self.labels}
        for text, labels in zip(self.texts, self.sets()):
            for label in labels:
                out[label].append(text)
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

        An intent given as a list of names, or as names joined by ``+`` (Rasa's ``a+b``), makes the set
        multi-label (an empty list is out of scope, as in NLU++). For training data, duplicates are dropped, at
        least two intents are required and single-example intents are reported; test data keeps every row and
        only needs one usable row.
        """
        if isinstance(pairs, (str, bytes)):
            raise FewIntentError(f"{source}: pass (text, intent) pairs, not a single string")
        pairs = list(pairs)
        if any(isinstance(p, (tuple, list)) and len(p) == 2 and _is_combination(p[1], oos_label) for p in pairs):
            return _multi_label(pairs, oos_label=oos_label, source=source, for_training=for_training)
        warnings: list[str] = []
        texts: list[str] = []
        intents: list[str] = []
        oos: list[str] = []
        seen: dict[str, str] = {}
        n_empty = n_dup = n_conflict = n_long = n_default_oos = 0
        if isinstance(pairs, (str, bytes)):
            raise FewIntentError(f"{source}: pass (text, intent) pairs, not a single string")
        for pair in pairs:
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise FewIntentError(f"{source}: each example is a (text, intent) pair, got {pair!r:.60}")
            raw_text, raw_intent = pair
            # NFC: "café" typed on a Mac (NFD) and elsewhere (NFC) is one intent and one text, not two
            text = unicodedata.normalize("NFC", " ".join(str(raw_text).split())) if raw_text is not None else ""
            intent = check_intent_name(str(raw_intent).strip(), source) if raw_intent is not None else ""
            if intent != oos_label and intent.casefold() == DEFAULT_OOS_LABEL:
                n_default_oos += 1
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
        if n_default_oos:
            warnings.append(
                f"{n_default_oos} row(s) are labelled '{DEFAULT_OOS_LABEL}' but the out-of-scope label is "
                f"'{oos_label}': they make an intent named '{DEFAULT_OOS_LABEL}'; keep the default label, or "
                f"relabel those rows '{oos_label}' if they are out of scope"
            )
        warnings += case_collisions(list(dict.fromkeys(intents)))
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
            why = (
                "one example is little to learn a yes/no decision from"
                if self.label_sets is not None
                else "the out-of-scope threshold is calibrated less reliably"
            )
            self.warnings.append(
                f"{len(singles)} intent(s) have a single example ({shown}); they work (1-shot) but {why}: add a "
                "second example where you can"
            )

        if self.label_sets is not None:
            self.warnings += _inseparable(self.sets())

    def subset(self, labels: Sequence[str]) -> IntentSet:
        keep = set(labels)
        rows = [(t, tuple(x for x in s if x in keep)) for t, s in zip(self.texts, self.sets())]
        rows = [(t, s) for t, s in rows if s]
        sets = [s for _, s in rows] if self.label_sets is not None else None
        return IntentSet(
            [t for t, _ in rows], [s[0] for _, s in rows], list(self.oos_texts), self.oos_label, [], self.source, sets
        )


def _inseparable(sets: Sequence[tuple[str, ...]]) -> list[str]:
    """One warning per group of intents that only ever come together (the same examples carry all of them, none
    carries one without the others): the model cannot learn one apart from the rest."""
    rows: dict[str, list[int]] = {}
    for k, intents in enumerate(sets):
        for intent in intents:
            rows.setdefault(intent, []).append(k)
    groups: dict[tuple[int, ...], list[str]] = {}
    for intent, where in rows.items():
        groups.setdefault(tuple(where), []).append(intent)
    return [
        f"intents {', '.join(repr(x) for x in group)} only ever come together ({len(where)} example(s), none "
        "without the others): only their names can tell them apart; add examples that carry one without the others"
        for where, group in groups.items()
        if len(group) > 1
    ]


def _is_combination(intent: object, oos_label: str) -> bool:
    """A multi-label row: a list of intents, or intents joined by ``+``."""
    if isinstance(intent, (list, tuple)):
        return True
    return isinstance(intent, str) and "+" in intent and intent.strip() != oos_label


def _label_set(intent: object, source: str, oos_label: str) -> tuple[str, ...]:
    """A row's intents: a list of names, or names joined by ``+``; () is out of scope."""
    if isinstance(intent, (list, tuple)):
        names = list(intent)
        if not all(isinstance(n, str) and n.strip() for n in names):
            raise FewIntentError(f"{source}: 'intents' must be a list of intent names (strings), got {names!r:.60}")
        joined = next((n for n in names if "+" in n), None)
        if joined is not None:
            raise FewIntentError(
                f"{source}: intent '{shorten(joined, 40)}' in an intents list contains '+', which joins intents "
                "in CSV and Rasa files; rename it"
            )
    elif intent is None:
        return ()
    else:
        names = str(intent).split("+")
        if any(not n.strip() for n in names):
            raise FewIntentError(
                f"{source}: '{shorten(str(intent), 40)}' is not a combination of intents: write 'a+b' with a name "
                "on each side of every '+'"
            )
    labels = tuple(dict.fromkeys(check_intent_name(n.strip(), source) for n in names))
    return () if labels == (oos_label,) else labels


def _multi_label(pairs: list, *, oos_label: str, source: str, for_training: bool) -> IntentSet:
    """:meth:`IntentSet.from_pairs` for multi-label rows (and single-label ones mixed in)."""
    warnings: list[str] = []
    texts: list[str] = []
    sets: list[tuple[str, ...]] = []
    oos: list[str] = []
    seen: dict[str, tuple[str, ...]] = {}
    n_empty = n_dup = n_conflict = 0
    for pair in pairs:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise FewIntentError(f"{source}: each example is a (text, intents) pair, got {pair!r:.60}")
        raw_text, raw_intent = pair
        text = unicodedata.normalize("NFC", " ".join(str(raw_text).split()))[:MAX_TEXT_CHARS] if raw_text else ""
        labels = _label_set(raw_intent, source, oos_label)
        if oos_label in labels:
            raise FewIntentError(f"{source}: '{oos_label}' (out of scope) cannot be combined with intents")
        if not text:
            n_empty += 1
            continue
        if text in seen and for_training:
            n_dup += seen[text] == labels
            n_conflict += seen[text] != labels
            continue
        seen[text] = labels
        if labels:
            texts.append(text)
            sets.append(labels)
        else:
            oos.append(text)
    if n_empty:
        warnings.append(f"dropped {n_empty} row(s) with an empty text")
    if n_dup:
        warnings.append(f"dropped {n_dup} duplicate row(s)")
    if n_conflict:
        warnings.append(f"{n_conflict} text(s) appeared again with other intents; the first row was kept")
    intents = [s[0] for s in sets]
    result = IntentSet(texts, intents, oos, oos_label, warnings, source, sets)
    warnings += case_collisions(result.labels)
    result._check(for_training)
    return result


def shorten(text: str, limit: int = 80) -> str:
    """A text as a warning shows it: long ones cut, so one message stays one line."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_intent_name(name: str, source: str | None = None, *, known: Sequence[str] = ()) -> str:
    """An intent name in its canonical form (Unicode NFC), refused when it is not one short line of printable
    text: a newline or NUL would break tables, URLs and logs. Warns (``FewIntentWarning``) when it differs only
    by case from one of the ``known`` names."""
    where = f"{source}: " if source else ""
    name = unicodedata.normalize("NFC", name)
    bad = next((ch for ch in name if _invisible(ch)), None)
    if bad is not None:
        raise FewIntentError(
            f"{where}intent name {name!r:.60} contains the invisible or control character {bad!r}; "
            "use one line of text"
        )
    if len(name) > MAX_INTENT_NAME_CHARS:
        raise FewIntentError(
            f"{where}intent name '{shorten(name, 40)}' has {len(name)} characters; the limit is "
            f"{MAX_INTENT_NAME_CHARS} (is the text in the intent column?)"
        )
    message = case_collision(name, known)
    if message:
        _warnings.warn(message, FewIntentWarning, stacklevel=2)
    return name


# Besides control characters: those that reorder or hide text on screen (bidirectional overrides, zero-width
# space, word joiner, BOM) would let two names look alike, and line separators end the line a name must stay on.
_INVISIBLE = frozenset("\u200b\u2060\ufeff\u2028\u2029") | frozenset(
    map(chr, [*range(0x202A, 0x202F), *range(0x2066, 0x206A)])
)


def _invisible(ch: str) -> bool:
    return unicodedata.category(ch) == "Cc" or ch in _INVISIBLE


def case_collision(name: str, known: Sequence[str]) -> str | None:
    """The warning for a new intent ``name`` that differs only by case from a known one (None when it does not)."""
    twin = next((k for k in known if k != name and k.casefold() == name.casefold()), None)
    if twin is None:
        return None
    return (
        f"intent '{name}' differs from '{twin}' only by case: they are two separate intents; "
        "use one spelling if they mean the same"
    )


def known_spelling(name: str, labels: Sequence[str]) -> str:
    """``name`` as ``labels`` spell it: stripped, and in NFC when only that form is known (a name typed on a
    system that writes "café" decomposed still finds the intent)."""
    name = name.strip()
    if name in labels:
        return name
    nfc = unicodedata.normalize("NFC", name)
    return nfc if nfc in labels else name


def case_collisions(labels: Sequence[str]) -> list[str]:
    """One warning per group of intent names that differ only by case."""
    groups: dict[str, list[str]] = {}
    for label in labels:
        groups.setdefault(label.casefold(), []).append(label)
    return [
        "intents " + " and ".join(f"'{g}'" for g in group) + " differ only by case: they are "
        f"{len(group)} separate intents; use one spelling if they mean the same"
        for group in groups.values()
        if len(group) > 1
    ]


_NAME_WORDS = re.compile(r"[\s_\-./:]+|(?<=[a-z])(?=[A-Z])")
_GENERIC_WORDS = frozenset({"intent", "label", "class", "category", "other", "misc"})


def name_example(label: str) -> str | None:
    """An intent's name as an example message: ``card_arrival`` / ``cardArrival`` -> ``card arrival``. None for a
    name that says nothing (no word of three letters or more besides intent / label / class ...: ``intent_17``)."""
    words = [w.lower() for w in _NAME_WORDS.split(label) if w]
    if not any(len(w) >= 3 and w.isalpha() and w not in _GENERIC_WORDS for w in words):
        return None
    return " ".join(words)


def check_texts(texts: Sequence[str]) -> list[str]:
    """Messages as a list of strings, each cut to :data:`MAX_TEXT_CHARS` and made encodable; one line for a
    bare string (not split into characters), a mapping, bytes or a non-string item."""
    if isinstance(texts, str):
        raise FewIntentError("pass a list of texts, not a single string")
    if texts is None or not hasattr(texts, "__iter__") or isinstance(texts, (Mapping, bytes)):
        raise FewIntentError(f"pass a list of texts, got {type(texts).__name__}")
    out = []
    for t in texts:
        if not isinstance(t, str):
            raise FewIntentError(f"texts must be strings, got {type(t).__name__}")
        out.append(_valid_unicode(t[:MAX_TEXT_CHARS]))
    return out


def _valid_unicode(text: str) -> str:
    """Lone surrogates (undecodable bytes from a terminal, ``"\\ud800"`` in JSON) cannot be tokenized: '?'."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text
