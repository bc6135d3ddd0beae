"""The report's PNG plots, drawn with matplotlib (the ``[bench]`` extra) from ``results.json`` rows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fewintent.bench.rows import PUBLISHED, dataset_name, method_order, ok_rows

PLOTS = {
    "shots": "accuracy_vs_shots.png",
    "time": "adapt_time_vs_accuracy.png",
    "pr": "oos_pr_curves.png",
    "episodic": "episodic.png",
}


def write_plots(rows: list[dict[str, Any]], out: Path) -> dict[str, bool] | None:
    """Draw every plot into ``out`` under its ``PLOTS`` name; returns which were drawn, None without matplotlib.

    A plot whose protocol has no rows is not drawn (False).
    """
    try:
        import matplotlib  # noqa: F401

        return {
            "shots": plot_accuracy_vs_shots(rows, out / PLOTS["shots"]),
            "time": plot_time_vs_accuracy(rows, out / PLOTS["time"]),
            "pr": plot_pr_curves(rows, out / PLOTS["pr"]),
            "episodic": plot_episodic(rows, out / PLOTS["episodic"]),
        }
    except ImportError:
        return None


# Twenty colours that stay apart on white (matplotlib's tab10, then ten more), eleven markers, and a line style per
# base: every series of a plot differs from every other in colour, and in marker or line style where colours must
# repeat (more than twenty methods).
_COLORS = (
    *(f"C{i}" for i in range(10)),
    "#000000",
    "#000075",
    "#800000",
    "#f032e6",
    "#469990",
    "#9a6324",
    "#4363d8",
    "#808000",
    "#e6194b",
    "#3cb44b",
)
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*", "h")
_LINESTYLES = ("-", "--", ":", "-.")


@dataclass(frozen=True)
class Style:
    color: str
    marker: str
    linestyle: str

    def line(self) -> dict[str, Any]:
        return {"color": self.color, "marker": self.marker, "linestyle": self.linestyle}


def styles(rows: list[dict[str, Any]]) -> dict[str, Style]:
    """One style per method (``method@base``) of every plotted protocol, the same in every plot: a method keeps
    its colour and marker when another is missing from a plot. A base other than the default draws dashed."""
    names = method_order(r["method"] for protocol in ("fullway", "oos", "episodic") for r in ok_rows(rows, protocol))
    bases: list[str] = []
    out: dict[str, Style] = {}
    for i, name in enumerate(names):
        base = name.partition("@")[2]
        if base not in bases:
            bases.append(base)
        out[name] = Style(
            _COLORS[i % len(_COLORS)], _MARKERS[i % len(_MARKERS)], _LINESTYLES[bases.index(base) % len(_LINESTYLES)]
        )
    return out


def _legend_below(fig: Any, handles: dict[str, Any], ncol: int) -> None:
    """The figure's legend under its panels, outside them (``savefig(bbox_inches="tight")`` makes room for it)."""
    fig.legend(
        list(handles.values()),
        list(handles),
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=min(ncol, max(len(handles), 1)),
        frameon=False,
        fontsize=9,
    )


def _handles(axes: Any) -> dict[str, Any]:
    """Every labelled series once, in drawing order, even one missing from the first panel."""
    out: dict[str, Any] = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            out.setdefault(label, h)
    return out


def _plt():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy_vs_shots(rows: list[dict[str, Any]], path: Path) -> bool:
    ok = ok_rows(rows, "fullway")
    if not ok:
        return False
    plt = _plt()
    style = styles(rows)
    datasets = [d for d in ("banking77", "clinc150", "hwu64") if any(r["dataset"] == d for r in ok)]
    fig, axes = plt.subplots(1, len(datasets), figsize=(3.7 * len(datasets), 3.9), squeeze=False)
    for ax, d in zip(axes[0], datasets):
        for m in method_order(r["method"] for r in ok if r["dataset"] == d):
            pts = sorted((r["shots"], 100 * r["accuracy"]) for r in ok if r["dataset"] == d and r["method"] == m)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=m, markersize=5, **style[m].line())
        ref = PUBLISHED["CPFT (RoBERTa-base, EMNLP 2021)"]
        ax.plot(
            [5, 10],
            [ref[(d, 5)], ref[(d, 10)]],
            color="0.45",
            linestyle=(0, (1, 1)),
            linewidth=2.2,
            label="CPFT (published)",
        )
        ax.set_title(dataset_name(d))
        ax.set_xlabel("examples per intent")
        ax.set_xticks([5, 10])
        ax.set_xlim(4.4, 10.6)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("top-1 accuracy (%)")
    handles = _handles(axes[0])
    handles["CPFT (published)"] = handles.pop("CPFT (published)")  # the reference last, after the methods
    _legend_below(fig, handles, ncol=3)
    fig.suptitle("Full-way few-shot accuracy (every intent at once)")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


def plot_time_vs_accuracy(rows: list[dict[str, Any]], path: Path) -> bool:
    ok = [r for r in ok_rows(rows, "fullway") if r.get("adapt_seconds")]
    if not ok:
        return False
    plt = _plt()
    style = styles(rows)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    markers = {"banking77": "o", "clinc150": "s", "hwu64": "^"}
    for m in method_order(r["method"] for r in ok):
        color = style[m].color if m in style else "0.5"
        for r in (r for r in ok if r["method"] == m):
            ax.scatter(
                r["adapt_seconds"],
                100 * r["accuracy"],
                color=color,
                marker=markers.get(r["dataset"], "o"),
                s=30 + 4 * r["shots"],
            )
        ax.scatter([], [], color=color, label=m)
    for d, mk in markers.items():
        ax.scatter([], [], color="gray", marker=mk, label=dataset_name(d))
    from matplotlib.ticker import FuncFormatter

    ax.set_xscale("log")
    seconds = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(seconds)
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.set_xlabel("adaptation wall time (s, log scale)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("Adaptation time vs accuracy (full-way; bigger marker = 10-shot)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)  # beside the axes
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


def plot_pr_curves(rows: list[dict[str, Any]], path: Path) -> bool:
    ok = [r for r in ok_rows(rows, "oos") if r.get("pr_curve")]
    if not ok:
        return False
    plt = _plt()
    style = styles(rows)
    datasets = sorted({r["dataset"] for r in ok})
    fig, axes = plt.subplots(1, len(datasets), figsize=(3.9 * len(datasets), 3.9), squeeze=False)
    points = {
        (r["dataset"], r["method"], r["threshold_source"]): r for r in ok_rows(rows, "oos") if r.oos_share is None
    }
    for ax, d in zip(axes[0], datasets):
        for m in method_order(r["method"] for r in ok if r["dataset"] == d):
            r = next(r for r in ok if r["dataset"] == d and r["method"] == m)
            st = style[m]
            ax.plot(
                r["pr_curve"]["recall"], r["pr_curve"]["precision"], color=st.color, linestyle=st.linestyle, label=m
            )
            for source, marker in (("valid", "o"), ("support", "x")):
                p = points.get((d, m, source))
                if p and p.get("oos_recall") is not None:
                    ax.scatter(p["oos_recall"], p["oos_precision"], color=st.color, marker=marker, zorder=3)
        ax.set_title(dataset_name(d), fontsize=10)
        ax.set_xlabel("OOS recall")
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("OOS precision")
    _legend_below(fig, _handles(axes[0]), ncol=3)
    fig.suptitle(
        "Out-of-scope detection: precision-recall (AUROC in the report's table)\n"
        "o = threshold from valid, x = from the support set",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


def plot_episodic(rows: list[dict[str, Any]], path: Path) -> bool:
    ok = ok_rows(rows, "episodic")
    if not ok:
        return False
    plt = _plt()
    style = styles(rows)
    settings = sorted({(r["dataset"], str(r["ways"]), r["shots"]) for r in ok})
    methods = method_order(r["method"] for r in ok)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(settings)), 4.4))
    width = 0.8 / max(len(methods), 1)
    cell = {(r["dataset"], str(r["ways"]), r["shots"], r["method"]): r for r in ok}
    for i, m in enumerate(methods):
        xs, ys, es = [], [], []  # i: the bar's slot in its group
        for j, s in enumerate(settings):
            r = cell.get((*s, m))
            if r:
                xs.append(j + (i - (len(methods) - 1) / 2) * width)
                ys.append(100 * r["accuracy"])
                es.append(100 * r["ci95"])
        st = style[m]
        hatch = None if st.linestyle == "-" else "//"  # another base: hatched, as its lines are dashed elsewhere
        ax.bar(xs, ys, width, yerr=es, capsize=2, label=m, color=st.color, hatch=hatch, edgecolor="white")
    ax.set_xticks(range(len(settings)))
    ax.set_xticklabels([f"{dataset_name(d)}\n{w}-way {k}-shot" for d, w, k in settings], fontsize=8)
    ax.set_ylabel("accuracy (%) ± 95% CI")
    ax.set_title("Episodic accuracy on held-out domains")
    ax.grid(alpha=0.3, axis="y")
    _legend_below(fig, _handles([ax]), ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True
