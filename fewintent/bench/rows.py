"""Result rows as the report reads them: a protocol's measured rows, the method order, display names, and the
published reference numbers (``published.json``), shared by the report's tables, prose and plots."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fewintent.bench.methods import DEFAULT_METHODS
from fewintent.bench.results import DEFAULT_ROW_BASE

PUBLISHED_FILE = Path(__file__).with_name("published.json")


def published() -> dict[str, dict[tuple[str, int], float]]:
    """Published full-way accuracy (%) by method, ``(dataset, shots) -> value``, from ``published.json``."""
    methods = json.loads(PUBLISHED_FILE.read_text())["methods"]
    out = {}
    for method, cells in methods.items():
        out[method] = {(key.split("/")[0], int(key.split("/")[1])): float(v) for key, v in cells.items()}
    return out


PUBLISHED = published()
CELLS = [("banking77", 5), ("clinc150", 5), ("hwu64", 5), ("banking77", 10), ("clinc150", 10), ("hwu64", 10)]
NAMES = {"banking77": "BANKING77", "clinc150": "CLINC150", "hwu64": "HWU64", "banking77_oos": "BANKING77-OOS"}


def dataset_name(dataset: str) -> str:
    base, _, kind = dataset.partition(":")
    label = NAMES.get(base, base)
    return f"{label} ({'in-domain' if kind == 'id' else 'out-of-domain'} OOS)" if kind else label


def method_rank(method: str) -> tuple[str, int, str]:
    """Order in tables: the default base's rows first, then each other base's, each in the methods' order."""
    name, _, base = method.partition("@")
    order = ("raw-encoder", *DEFAULT_METHODS)
    return (base, order.index(name) if name in order else len(order), name)


def method_order(methods: Iterable[str]) -> list[str]:
    return sorted(set(methods), key=method_rank)


def ok_rows(rows: list[dict[str, Any]], protocol: str) -> list[dict[str, Any]]:
    """A protocol's measured rows; a row of a base other than the default is named ``method@base`` in tables."""
    return [
        {**r, "method": display_method(r)}
        for r in rows
        if r.get("protocol") == protocol and r.get("status") != "skipped"
    ]


def display_method(row: dict[str, Any]) -> str:
    base = row.get("base") or DEFAULT_ROW_BASE
    return row["method"] if base == DEFAULT_ROW_BASE else f"{row['method']}@{base}"
