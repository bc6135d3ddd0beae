"""The `valid`-split measurement behind ``adapt --tune``'s recipe (``fewintent.model.tuning.DEFAULT_RECIPE``).

For each recipe (a name and JSON overrides of ``TuneRecipe``), each full-way corpus and each shot count, the
base's leave-one-out adapter (``minilm-meta-no-<dataset>``; ``--adapter none``: the frozen encoder) is tuned on
``train_K`` by ``tune_encoder``, the code ``fewintent adapt --tune`` runs, with every epoch kept. After each epoch
the product's head is fitted on the tuned embeddings (``IntentClassifier.fit_embeddings``, intent names, threshold
from the held-out fold) and scored top-1 on ``valid``; epoch 0 is the untuned model. The stopping rules are read
off these curves afterwards: a fixed number of epochs, or the epoch whose held-out-fold accuracy is best (what the
recipe's ``stopping="best"`` keeps). CLINC150 10-shot also scores ``oos_valid``: AUROC of the OOS score and the
rates at the support-calibrated threshold. Never reads a ``test`` split. One JSON line per (cell, epoch):

    python scripts/valid_tune.py --name ce --recipe '{"objective": "ce"}' --out tune_valid.jsonl --threads 2
    python scripts/valid_tune.py --summary tune_valid.jsonl

The top-layer cut (``TuneRecipe.layers``; the registered default is ``BaseSpec.tune_layers``) is screened the same way:

    python scripts/valid_tune.py --name layers=3 --recipe '{"layers": 3}' --out tune_valid.jsonl --threads 2

``--ensemble W`` also scores, after each epoch, the average of the untuned head's and the tuned head's
probabilities (the untuned one weighted ``W``): an ensemble that needs both encoders at inference.

The cross-corpus rule picks a recipe: the best mean over the six cells (BANKING77 / CLINC150 / HWU64 x 5 / 10 shots).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fewintent.bench.data import Corpora
from fewintent.data import IntentSet
from fewintent.data.intentset import name_example
from fewintent.encoder.encoder import SentenceEncoder
from fewintent.encoder.lora import LoraSettings, load_adapter, resolve_adapter, shipped_adapters
from fewintent.encoder.registry import constants_for, registered
from fewintent.model import IntentClassifier
from fewintent.model.evaluation import auroc
from fewintent.model.tuning import DEFAULT_RECIPE, TrainingStatus, TuneRecipe, held_out_fold, tune_encoder

DATASETS = ("banking77", "clinc150", "hwu64")


def _encoder(base: str, adapter: str, dataset: str) -> tuple[SentenceEncoder, LoraSettings | None, str]:
    """The encoder ``adapt`` would use for a dataset: the base with its leave-one-out adapter (LoRA live)."""
    encoder = SentenceEncoder(base, device="cpu")
    if adapter == "leave-out":
        spec = registered(base)
        template = spec.leave_out_adapter if spec is not None else None
        adapter = template.format(dataset=dataset) if template else "none"
        if adapter not in shipped_adapters():  # none ships with this corpus left out: frozen, as the benchmark does
            adapter = "none"
    path = resolve_adapter(adapter, encoder.name, encoder.sha256)
    if path is None:
        return encoder, None, "none"
    config = load_adapter(encoder, path)
    return encoder, LoraSettings.from_dict(config.get("lora", {})), adapter


def _embeddings(encoder: SentenceEncoder, support: IntentSet, valid: IntentSet) -> dict[str, np.ndarray]:
    """The encoder's embeddings, as it is now, of the support, the valid rows and the intents' names."""
    named = [t for label in support.labels if (t := name_example(label)) is not None]
    return {
        "support": encoder.encode(support.texts).numpy(),
        "valid": encoder.encode(valid.texts + valid.oos_texts).numpy(),
        "names": encoder.encode(named).numpy() if named else np.empty((0, encoder.dim), np.float32),
        "named": np.array(named, dtype=object),
    }


def _joined(now: dict[str, np.ndarray], beside: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Two encoders' :func:`_embeddings` side by side (each unit-length; the pair divided by sqrt 2)."""
    joined = {k: np.concatenate([now[k], beside[k]], axis=1) / np.sqrt(2) for k in ("support", "valid", "names")}
    return {**joined, "named": now["named"]}


def _score(
    encoder: SentenceEncoder,
    support: IntentSet,
    valid: IntentSet,
    tuned: torch.Tensor | None,
    embedded: dict[str, np.ndarray] | None = None,
    probs: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """The product's head on the encoder as it is now: valid top-1, and OOS numbers when valid has OOS rows.
    ``embedded``: the :func:`_embeddings` to score (the encoder's own when None; :func:`_joined` for one head over
    two encoders). With ``probs``, the head's softmax over the in-scope valid rows is stored there under "last"."""
    embedded = embedded if embedded is not None else _embeddings(encoder, support, valid)
    clf = IntentClassifier(encoder, head="linear", intent_names=True)  # fresh: no name embeddings from before
    clf._name_cache.update(zip(embedded["named"].tolist(), embedded["names"]))  # the names as ``embedded`` has them
    labels = tuple(support.labels)
    index = {label: i for i, label in enumerate(labels)}
    y = torch.tensor([index[i] for i in support.intents])
    clf.fit_embeddings(labels, embedded["support"], y, tuned=tuned)
    table = clf.table
    emb = embedded["valid"]
    sims = table.similarities(emb)
    n_in = len(valid.texts)
    gold = np.array([index[i] for i in valid.intents])
    logits = table.logits(emb, sims)
    pred = logits.argmax(-1)
    if probs is not None:
        z = np.exp(logits[:n_in] - logits[:n_in].max(-1, keepdims=True))
        probs["last"] = z / z.sum(-1, keepdims=True)
    out: dict[str, Any] = {"valid_top1": round(100 * float((pred[:n_in] == gold).mean()), 2)}
    if valid.oos_texts:
        scores = table.oos_scores(emb, sims)
        rejected = scores < table.threshold
        caught = int(rejected[n_in:].sum())
        recall, precision = caught / len(valid.oos_texts), caught / max(int(rejected.sum()), 1)
        out.update(
            auroc=round(100 * auroc(scores[:n_in], scores[n_in:]), 2),
            threshold=round(float(table.threshold), 4),
            in_scope_kept=round(100 * float(1 - rejected[:n_in].mean()), 2),
            oos_recall=round(100 * recall, 2),
            oos_f1=round(100 * 2 * recall * precision / max(recall + precision, 1e-9), 2),
        )
    return out


def _first_per_intent(valid: IntentSet, k: int | None) -> IntentSet:
    """The first ``k`` valid rows of each intent (a cheaper screen; OOS rows all kept); all rows when None."""
    if not k:
        return valid
    seen: dict[str, int] = defaultdict(int)
    keep = []
    for text, intent in zip(valid.texts, valid.intents):
        seen[intent] += 1
        if seen[intent] <= k:
            keep.append((text, intent))
    texts, intents = [t for t, _ in keep], [i for _, i in keep]
    return IntentSet(texts, intents, valid.oos_texts, valid.oos_label)


@contextmanager
def _scaled_lora(encoder: SentenceEncoder, alpha: float) -> Iterator[None]:
    """The live LoRA layers' update times ``alpha`` for a while (peft's per-layer scaling)."""
    layers = [m for m in encoder.model.modules() if isinstance(getattr(m, "scaling", None), dict)]
    for m in layers:
        m.scaling = {k: v * alpha for k, v in m.scaling.items()}
    try:
        yield
    finally:
        for m in layers:
            m.scaling = {k: v / alpha for k, v in m.scaling.items()}


def run_cell(
    corpora: Corpora, recipe: TuneRecipe, dataset: str, shots: int, args: argparse.Namespace
) -> list[dict[str, Any]]:
    support = corpora.support(dataset, f"train_{shots}")
    splits = ("valid", "oos_valid") if dataset == "clinc150" and shots == 10 else ("valid",)
    valid = _first_per_intent(corpora.labelled(dataset, *splits), args.valid_per_intent)
    encoder, below, adapter = _encoder(args.base, args.adapter, dataset)
    cell = {"base": args.base, "adapter": adapter, "dataset": dataset, "shots": shots}
    if args.valid_per_intent:
        cell["valid_per_intent"] = args.valid_per_intent
    cache = _baselines(args)
    key = json.dumps(cell, sort_keys=True)
    before: dict[str, np.ndarray] = {}  # the untuned encoder's embeddings, where the cell needs them
    untuned: dict[str, np.ndarray] = {}  # and its head's probabilities (--ensemble), for every epoch
    if key not in cache or args.ensemble or args.concat:
        before = _embeddings(encoder, support, valid)
        untuned_scores = _score(encoder, support, valid, None, before, untuned)
    if key not in cache:  # the untuned model: the same for every recipe
        cache[key] = untuned_scores
        if args.out:
            _baseline_file(args).write_text(json.dumps(cache, indent=1) + "\n")
    rows = [{**cell, "epoch": 0, "held_out_acc": None, "train_seconds": 0.0, **cache[key]}]
    print(json.dumps({"recipe": args.name, **rows[0]}), flush=True)
    index = {label: i for i, label in enumerate(support.labels)}
    labels = torch.tensor([index[i] for i in support.intents])
    tuned = ~held_out_fold(labels, recipe.holdout, torch.Generator().manual_seed(args.seed))
    clock = {"start": time.perf_counter(), "eval": 0.0}
    gold = np.array([index[i] for i in valid.intents])

    def on_status(status: TrainingStatus) -> None:
        if not status.epoch_end:
            return
        begin = time.perf_counter()
        now, probs = _embeddings(encoder, support, valid), {}  # encoded once, for every variant below
        scored = _score(encoder, support, valid, tuned, now, probs)
        for w in args.ensemble:  # untuned head's weight in a probability average with the tuned head's
            mixed = w * untuned["last"] + (1 - w) * probs["last"]
            scored[f"valid_top1_ens@{w:g}"] = round(100 * float((mixed.argmax(-1) == gold).mean()), 2)
        if args.concat:  # one head over the tuned and untuned encoders' embeddings, side by side
            joined = _joined(now, before)
            scored.update({f"{k}_concat": v for k, v in _score(encoder, support, valid, tuned, joined).items()})
        for alpha in args.scaled:  # the tuned layers' update shrunk (weight-space interpolation with the untuned)
            with _scaled_lora(encoder, alpha):
                scaled = _score(encoder, support, valid, tuned)
            scored[f"valid_top1@{alpha:g}"] = scaled["valid_top1"]
        row = {
            **cell,
            "epoch": status.epoch,
            "steps": status.step,
            "held_out_acc": None if status.held_out_accuracy is None else round(100 * status.held_out_accuracy, 2),
            "train_seconds": round(begin - clock["start"] - clock["eval"], 1),
            **scored,
        }
        clock["eval"] += time.perf_counter() - begin
        rows.append(row)
        print(json.dumps({"recipe": args.name, **row}), flush=True)

    head_c = constants_for(encoder.name, encoder.sha256).head_c
    result = tune_encoder(
        encoder, support, recipe, names=True, seed=args.seed, below=below, head_c=head_c, progress=on_status
    )
    first = result.held_out_accuracy[0]
    rows[0]["held_out_acc"] = None if first is None else round(100 * first, 2)
    return rows


def _baseline_file(args: argparse.Namespace) -> Path:
    return Path(str(args.out) + ".untuned.json")


def _baselines(args: argparse.Namespace) -> dict[str, Any]:
    if "cache" not in vars(args):
        f = _baseline_file(args) if args.out else None
        args.cache = json.loads(f.read_text()) if f is not None and f.is_file() else {}
    return args.cache  # type: ignore[no-any-return]


SCREEN_EPOCHS = 4
"""Epochs a screen runs unless its recipe names a number."""


VARIANTS = (
    ("valid_top1@", "update x{}"),
    ("valid_top1_ens@", "untuned head x{} in the average"),
    ("valid_top1_concat", "one head over [tuned; untuned]{}"),
)
"""Scored variants of an epoch in the rows (key prefix) and how the summary names them ({}: what follows @)."""


def summarise(path: Path) -> None:
    """Per recipe: the six-cell mean of valid top-1 for each fixed epoch count and for best-held-out stopping."""
    runs: dict[str, dict[tuple[str, int], dict[int, dict[str, Any]]]] = defaultdict(lambda: defaultdict(dict))
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            screen = f" (valid {r['valid_per_intent']}/intent)" if r.get("valid_per_intent") else ""
            seed = f" (seed {r['seed']})" if "seed" in r else ""  # rows before the seed was written: one run
            runs[r["recipe"] + screen + seed][(r["dataset"], r["shots"])][r["epoch"]] = r
    all_cells = [(d, k) for k in (5, 10) for d in DATASETS]
    head = "| recipe | " + " | ".join(f"{d[:5]}-{k}" for d, k in all_cells) + " | mean | stopping |"
    print(head)
    print("|" + "---|" * (len(all_cells) + 3))
    for name, by_cell in runs.items():
        cells = [c for c in all_cells if c in by_cell]  # a screen may cover some cells only: the mean says which
        epochs = min(max(by_cell[c]) for c in cells)

        def line(vals: dict[tuple[str, int], float], stop: str, name: str = name) -> str:
            shown = " | ".join(f"{vals[c]:.2f}" if c in vals else "" for c in all_cells)
            mean = np.mean(list(vals.values()))
            return f"| {name} | {shown} | {mean:.2f}{'' if len(vals) == 6 else f' ({len(vals)} cells)'} | {stop} |"

        for e in range(0, epochs + 1):
            print(line({c: by_cell[c][e]["valid_top1"] for c in cells}, f"epoch {e}"))
            for prefix, shown in VARIANTS:
                for key in sorted(k for k in by_cell[cells[0]][e] if k.startswith(prefix)):
                    vals = {c: by_cell[c][e][key] for c in cells if key in by_cell[c][e]}
                    print(line(vals, f"epoch {e}, " + shown.format(key.partition("@")[2])))
        for limit in sorted({epochs, *range(2, epochs, 2)}):
            vals, picked = {}, []
            for c in cells:
                curve = by_cell[c]
                best = max((e for e in curve if e <= limit), key=lambda e: (curve[e]["held_out_acc"] or -1, e))
                vals[c] = curve[best]["valid_top1"]
                picked.append(best)
            print(line(vals, f"best held-out <= {limit} (epochs {','.join(map(str, picked))})"))
        if ("clinc150", 10) not in by_cell:
            continue
        oos = by_cell[("clinc150", 10)]
        line = "; ".join(
            f"e{e}: auroc {r['auroc']} kept {r['in_scope_kept']} oos-recall {r['oos_recall']}"
            for e, r in sorted(oos.items())
            if "auroc" in r
        )
        print(f"|  | CLINC150-10 OOS (valid) | {line} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/datasets")
    parser.add_argument("--name", help="the recipe's name in the output")
    parser.add_argument("--recipe", default="{}", help="JSON overrides of TuneRecipe")
    parser.add_argument("--base", default="minilm")
    parser.add_argument("--adapter", default="leave-out", help="'leave-out' (the base's per-dataset adapter) or none")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--shots", default="5,10")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--scaled", type=float, action="append", default=[], help="also score the tuned update times this factor"
    )
    parser.add_argument(
        "--ensemble",
        type=float,
        action="append",
        default=[],
        help="also score the average of the untuned and tuned heads' probabilities, the untuned one weighted this",
    )
    parser.add_argument(
        "--concat",
        action="store_true",
        help="also score one head over the tuned and untuned encoders' embeddings concatenated",
    )
    parser.add_argument("--valid-per-intent", type=int, default=None, help="score the first N valid rows per intent")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, help="JSON lines to append to (also printed)")
    parser.add_argument("--summary", type=Path, help="print the table of a results file and exit")
    args = parser.parse_args()
    if args.summary:
        summarise(args.summary)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = json.loads(args.recipe)
    # every epoch up to 4 (or the recipe's) is scored: the curves give each fixed count and the held-out rule
    recipe = TuneRecipe(**{**DEFAULT_RECIPE.to_dict(), "epochs": SCREEN_EPOCHS, **overrides, "stopping": "last"})
    args.name = args.name or json.dumps(overrides, sort_keys=True)
    corpora = Corpora(args.data_dir)
    for shots in [int(k) for k in args.shots.split(",")]:
        for dataset in args.datasets.split(","):
            rows = run_cell(corpora, recipe, dataset, shots, args)
            if args.out:
                with args.out.open("a") as f:
                    for row in rows:
                        line = {"recipe": args.name, "seed": args.seed, "overrides": overrides, **row}
                        f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
