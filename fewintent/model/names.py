"""Intent-name rules for edits of a fitted model (the server reaches the data layer's rules through here)."""

from __future__ import annotations

from fewintent.data.intentset import case_collision, check_intent_name, known_spelling

__all__ = ["case_collision", "check_intent_name", "known_spelling"]
