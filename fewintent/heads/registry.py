"""The decision heads a classifier can rank intents with, by name (``--head``, ``ClassifierConfig.head``).

Adding a head: a :class:`~fewintent.heads.decision.DecisionHead` subclass in a module of its own, and one line here.
"""

from __future__ import annotations

from fewintent.errors import FewIntentError
from fewintent.heads.decision import DecisionHead
from fewintent.heads.logistic import LinearHead
from fewintent.heads.onevsrest import OneVsRestHead
from fewintent.heads.prototypes import PrototypeHead

HEADS: dict[str, type[DecisionHead]] = {
    LinearHead.name: LinearHead,
    PrototypeHead.name: PrototypeHead,
    OneVsRestHead.name: OneVsRestHead,
}
DEFAULT_HEAD = LinearHead.name
MULTI_LABEL_HEAD = OneVsRestHead.name
"""What multi-label data gets when no head is named (``adapt --multi-label``)."""


def head_class(name: str) -> type[DecisionHead]:
    """The head registered as ``name``; one line naming the registered ones otherwise."""
    try:
        return HEADS[name]
    except (KeyError, TypeError):
        raise FewIntentError(f"unknown head '{name}': use {', '.join(HEADS)}") from None
