"""Markdown helpers shared by the report's tables."""

from __future__ import annotations


def markdown_table(header: list[str], body: list[list[str]]) -> list[str]:
    """A GitHub-flavoured Markdown table, one line per row."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return out + ["| " + " | ".join(r) + " |" for r in body]
