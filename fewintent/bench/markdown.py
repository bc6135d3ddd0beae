"""Markdown helpers shared by the report's tables."""

from __future__ import annotations


def markdown_table(header: list[str], body: list[list[str]]) -> list[str]:
    """A GitHub-flavoured Markdown table, one line per row."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return out + ["| " + " | ".join(r) + " |" for r in body]


def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}"


def fixed(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def secs(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:.2f} s" if x < 100 else f"{x / 60:.1f} min"
