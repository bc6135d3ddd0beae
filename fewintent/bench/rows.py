"""Result rows as the report reads them: a protocol's measured rows, the method order, display names, and the
published reference numbers (``published.json``), shared by the report's tables, prose and plots."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fewintent.bench.methods import DEFAULT_METHODS, METHODS, MULTILABEL_METHODS
from fewintent.bench.results import DEFAULT_ROW_BASE, ResultRow

PUBLISHED_FILE = Path(__file__).with_name("published.json")
Rows = Sequence[ResultRow | Mapping[str, Any]]
"""Rows as the tables take them: read from results.json, or their JSON objects."""


def published() -> dict[str, dict[tuple[str, int], float]]:
    """Published full-way accuracy (%) by method, ``(dataset, shots) -> value``, from ``published.json``."""
    methods = json.loads(PUBLISHED_FILE.read_text())["methods"]
    out = {}
    for method, cells in methods.items():
        out[method] = {(key.split("/")[0], int(key.split("/")[1])): float(v) for key, v in cells.items()}
    return out


PUBLISHED = published()
RAW = "raw-encoder"
"""The speed protocol's floor row: the raw encoder forward pass, not a method."""
CELLS = [("banking77", 5), ("clinc150", 5), ("hwu64", 5), ("banking77", 10), ("clinc150", 10), ("hwu64", 10)]
NAMES = {"banking77": "BANKING77", "clinc150": "CLINC150", "hwu64": "HWU64", "banking77_oos": "BANKING77-OOS"}


def dataset_name(dataset: str) -> str:
    base, _, kind = dataset.partition(":")
    label = NAMES.get(base, base)
    return f"{label} ({'in-domain' if kind == 'id' else 'out-of-domain'} OOS)" if kind else label


def method_rank(method: str) -> tuple[str, int, str]:
    """Order in tables: the default base's rows first, then each other base's, each in the methods' order."""
    name, _, base = method.partition("@")
    order = (RAW, *DEFAULT_METHODS, *MULTILABEL_METHODS)
    return (base, order.index(name) if name in order else len(order), name)


def method_order(methods: Iterable[str]) -> list[str]:
    return sorted(set(methods), key=method_rank)


def ok_rows(rows: Rows, protocol: str) -> list[ResultRow]:
    """A protocol's measured rows; a row of a base other than the default is named ``method@base`` in tables."""
    measured = [r for r in map(ResultRow.of, rows) if r.protocol == protocol and not r.skipped]
    return [
        r if (r.base or DEFAULT_ROW_BASE) == DEFAULT_ROW_BASE else r.but(method=f"{r.method}@{r.base}")
        for r in measured
    ]


def time_reference(rows: Iterable[ResultRow]) -> list[ResultRow]:
    """The rows of the method whose adaptation time the others are compared with (SetFit), on any base."""
    return [r for r in rows if getattr(METHODS.get(r.method.partition("@")[0]), "time_reference", False)]
