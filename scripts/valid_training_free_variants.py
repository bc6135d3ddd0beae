"""Training-free ways to get more out of the encoder, measured on `valid` against the product default; none kept.

Everything is compared with the product's own configuration (leave-one-out adapter ``minilm-meta-no-<dataset>``,
intents' names as examples, ``fit_logistic`` with the default C), scored top-1 on ``valid`` after adapting on
``train_5`` / ``train_10``, and for the out-of-scope side as AUROC of the best cosine to a prototype on CLINC150
``valid`` + ``oos_valid`` and BANKING77-OOS ``valid`` + ``{id,ood}_oos_valid`` (10 per intent, seed 0). Never
reads a ``test`` split. One JSON line per (variant, measurement):

    python scripts/valid_training_free_variants.py --data-dir ../shared/datasets > variants_valid.jsonl

Variants:
- ``adapter_scale``: the LoRA update times 0 (frozen), 0.5, 1 (the product), 1.5 or 2 (weight-space interpolation
  and extrapolation between the frozen and the meta-trained encoder).
- ``whiten``: embeddings centred and multiplied by ``cov^-p`` (p = 0.1 / 0.25 / 0.5), with ``cov`` the pooled
  within-intent covariance of the *other* corpora's ``train`` (up to 30 per intent) or the total covariance of
  the corpus's own ``train`` texts without labels (unlabelled in-domain traffic).
- ``eda``: each example copied with words dropped (p 0.15) and two words swapped, encoded, added to the fit.
- ``lda``: Gaussian discriminant with the support's pooled covariance, shrunk towards its mean variance.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable

import numpy as np
import torch
from torch.nn.functional import normalize

from fewintent.bench.data import Corpora
from fewintent.data import IntentSet
from fewintent.data.intentset import name_example
from fewintent.encoder import SentenceEncoder
from fewintent.encoder.lora import load_adapter, resolve_adapter
from fewintent.encoder.registry import MINILM
from fewintent.heads import class_means, fit_logistic, pooled_covariance  # numpy, as the classifier fits them
from fewintent.model.evaluation import auroc

DATASETS = ("banking77", "clinc150", "hwu64")
OTHERS = ("banking77", "clinc150", "hwu64", "snips", "sgd")
Transform = Callable[[torch.Tensor], torch.Tensor]


def scaled_encoder(adapter: str, scale: float) -> SentenceEncoder:
    encoder = SentenceEncoder(None, device="cpu")
    if scale:
        adapter_dir = resolve_adapter(adapter, encoder.name, encoder.sha256)
        assert adapter_dir is not None
        load_adapter(encoder, adapter_dir)
        with torch.no_grad():
            for name, p in encoder.model.named_parameters():
                if "lora_B" in name:  # the update is B @ A: scaling B scales it
                    p.mul_(scale)
    return encoder


class Embedder:
    def __init__(self, encoder: SentenceEncoder) -> None:
        self.encoder = encoder

    def __call__(self, texts: list[str]) -> torch.Tensor:
        return normalize(self.encoder.encode(texts).float(), dim=-1)

    def labelled(
        self, data: IntentSet, labels: tuple[str, ...], names: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        index = {label: i for i, label in enumerate(labels)}
        x, y = self(data.texts), torch.tensor([index[i] for i in data.intents])
        if names:
            rows = [(i, t) for i, t in ((i, name_example(label)) for i, label in enumerate(labels)) if t]
            x = torch.cat([x, self([t for _, t in rows])])
            y = torch.cat([y, torch.tensor([i for i, _ in rows])])
        return x, y


def whitener(x: torch.Tensor, cov: torch.Tensor, p: float) -> Transform:
    values, vectors = torch.linalg.eigh(cov.double())
    w = (vectors * values.clamp_min(1e-8).pow(-p)) @ vectors.T
    mean = x.mean(0)
    return lambda e: normalize(((e - mean).double() @ w).float(), dim=-1)


def top1(x: torch.Tensor, y: torch.Tensor, n: int, q: torch.Tensor, qy: torch.Tensor, f: Transform) -> float:
    x, q = f(x), f(q)
    w, b = fit_logistic(x.numpy(), y.numpy(), n, c=MINILM.constants.head_c)  # started from 20 x the prototypes
    return round(100 * float(((q.numpy() @ w.T + b).argmax(-1) == qy.numpy()).mean()), 2)


def lda_top1(x: torch.Tensor, y: torch.Tensor, n: int, q: torch.Tensor, qy: torch.Tensor, shrink: float) -> float:
    means = class_means(x.numpy(), y.numpy(), n)
    cov = pooled_covariance(x.numpy(), y.numpy(), means)
    dim = cov.shape[0]
    precision = np.linalg.inv((1 - shrink) * cov + shrink * np.trace(cov) / dim * np.eye(dim))
    w = means @ precision
    return round(100 * float(((q.numpy() @ w.T - 0.5 * (w * means).sum(1)).argmax(-1) == qy.numpy()).mean()), 2)


def proto_auroc(x: torch.Tensor, y: torch.Tensor, n: int, ins: torch.Tensor, oos: torch.Tensor, f: Transform) -> float:
    protos = normalize(torch.from_numpy(class_means(f(x).numpy(), y.numpy(), n)), dim=-1)
    best = lambda e: (f(e) @ protos.T).max(1).values.numpy()  # noqa: E731
    return round(100 * auroc(best(ins), best(oos)), 2)


def eda(text: str, rng: random.Random) -> str:
    words = text.split()
    if len(words) < 3:
        return text
    kept = [w for w in words if rng.random() > 0.15] or [rng.choice(words)]
    if len(kept) >= 2:
        i, j = rng.sample(range(len(kept)), 2)
        kept[i], kept[j] = kept[j], kept[i]
    return " ".join(kept)


def other_corpora(corpora: Corpora, dataset: str, embed: Embedder) -> tuple[torch.Tensor, torch.Tensor]:
    rng = random.Random(0)
    texts, labels = [], []
    for other in (o for o in OTHERS if o != dataset):
        by_intent: dict[str, set[str]] = {}
        for r in corpora.rows(other, "train"):
            by_intent.setdefault(r.intent, set()).add(r.text)
        for intent, pool in sorted(by_intent.items()):
            picked = rng.sample(sorted(pool), min(30, len(pool)))
            texts += picked
            labels += [f"{other}/{intent}"] * len(picked)
    index = {label: i for i, label in enumerate(sorted(set(labels)))}
    return embed(texts), torch.tensor([index[label] for label in labels])


def traffic(corpora: Corpora, dataset: str, embed: Embedder) -> torch.Tensor:
    texts = sorted({r.text for r in corpora.rows(dataset, "train")})
    random.Random(0).shuffle(texts)
    return embed(texts[:8000])


def emit(row: dict[str, object]) -> None:
    print(json.dumps(row), flush=True)


def oos_sets(corpora: Corpora, dataset: str) -> list[tuple[str, IntentSet, IntentSet]]:
    """(name, support, valid with OOS rows) for the OOS sets a dataset's adapter is scored on."""
    if dataset == "clinc150":
        return [("clinc150", corpora.support(dataset, "train_10"), corpora.labelled(dataset, "valid", "oos_valid"))]
    if dataset == "banking77":
        support = corpora.sample_per_intent("banking77_oos", "train", 10, 0)
        return [
            (f"banking77_oos:{kind}", support, corpora.labelled("banking77_oos", "valid", f"{kind}_oos_valid"))
            for kind in ("id", "ood")
        ]
    return []


def measure(corpora: Corpora, dataset: str, embed: Embedder, variants: dict[str, Transform], tag: str) -> None:
    labels = tuple(corpora.support(dataset, "train_10").labels)
    n = len(labels)
    q, qy = embed.labelled(corpora.labelled(dataset, "valid"), labels, names=False)
    for k in (5, 10):
        x, y = embed.labelled(corpora.support(dataset, f"train_{k}"), labels)
        for name, f in variants.items():
            emit({"dataset": dataset, "shots": k, "variant": f"{tag}{name}", "valid_top1": top1(x, y, n, q, qy, f)})
    for name, support, valid in oos_sets(corpora, dataset):
        own = tuple(support.labels)
        x, y = embed.labelled(support, own)
        ins, oos = embed(valid.texts), embed(valid.oos_texts)
        for vname, f in variants.items():
            emit({"set": name, "variant": f"{tag}{vname}", "auroc": proto_auroc(x, y, len(own), ins, oos, f)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/datasets")
    args = parser.parse_args()
    corpora = Corpora(args.data_dir)
    identity: Transform = lambda e: e  # noqa: E731
    for dataset in DATASETS:
        adapter = f"minilm-meta-no-{dataset}"
        for scale in (0.0, 0.5, 1.5, 2.0):
            measure(
                corpora, dataset, Embedder(scaled_encoder(adapter, scale)), {"": identity}, f"adapter_scale={scale}"
            )
        embed = Embedder(scaled_encoder(adapter, 1.0))
        base, base_y = other_corpora(corpora, dataset, embed)
        b, b_y = base.numpy(), base_y.numpy()
        base_cov = torch.from_numpy(pooled_covariance(b, b_y, class_means(b, b_y, int(b_y.max()) + 1)))
        own = traffic(corpora, dataset, embed)
        variants = {"product": identity}
        for p in (0.1, 0.25, 0.5):
            variants[f"whiten_other_corpora_p={p}"] = whitener(base, base_cov, p)
            variants[f"whiten_own_traffic_p={p}"] = whitener(own, torch.cov(own.T), p)
        measure(corpora, dataset, embed, variants, "")
        labels = tuple(corpora.support(dataset, "train_10").labels)
        n = len(labels)
        q, qy = embed.labelled(corpora.labelled(dataset, "valid"), labels, names=False)
        rng = random.Random(0)
        for k in (5, 10):
            support = corpora.support(dataset, f"train_{k}")
            x, y = embed.labelled(support, labels)
            copies = IntentSet.from_pairs([(eda(t, rng), i) for t, i in zip(support.texts, support.intents)])
            ax, ay = embed.labelled(copies, labels, names=False)
            aug = top1(torch.cat([x, ax]), torch.cat([y, ay]), n, q, qy, identity)
            emit({"dataset": dataset, "shots": k, "variant": "eda_one_copy", "valid_top1": aug})
            for shrink in (0.3, 0.6, 0.9):
                acc = lda_top1(x, y, n, q, qy, shrink)
                emit({"dataset": dataset, "shots": k, "variant": f"lda_shrink={shrink}", "valid_top1": acc})


if __name__ == "__main__":
    main()
