"""Adapt-time training: everything that changes the encoder on a company's own examples.

Two recipes, one path: both step with :class:`~fewintent.meta.inner.Updater`, make the LoRA parameters trainable
through :func:`trainable` and report through :class:`TrainingStatus` (the CLI draws it as one progress bar).

- ``adapt --steps N`` (:func:`adapt_on_support`): N steps of the meta-learned inner loop (:mod:`fewintent.meta.inner`,
  the one first-order MAML trains with) on the examples, in the adapter's own LoRA weights.
- ``adapt --tune`` (:func:`tune_encoder`): fresh LoRA layers on top of the base's adapter, trained for a few epochs
  together with a linear head on the examples and the intents' names. A fold of the examples is held out of
  training: it picks the epoch to keep (early stopping without test data) and, afterwards, calibrates the
  out-of-scope threshold on examples the encoder never saw.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

import torch
from torch import nn

from fewintent.data.intentset import IntentSet, name_example
from fewintent.encoder.encoder import SentenceEncoder
from fewintent.encoder.lora import LoraSettings, load_lora_state, lora_parameters, lora_state, merge_stack, stack_lora
from fewintent.errors import FewIntentError
from fewintent.heads.linear import PrototypeLinearHead
from fewintent.heads.logistic import fit_logistic
from fewintent.meta.inner import InnerLoopSettings, Updater, inner_loop


@dataclass(frozen=True)
class TrainingStatus:
    """Where adapt-time training is: what a progress bar shows."""

    step: int
    total: int
    epoch: int | None = None
    epochs: int | None = None
    loss: float | None = None
    held_out_accuracy: float | None = None
    """Accuracy on the held-out fold at the end of the last epoch (``--tune``)."""
    epoch_end: bool = False
    """True once per epoch, after the held-out fold was scored (the encoder is then in that epoch's state)."""

    def info(self) -> str:
        parts = []
        if self.epoch is not None and self.epochs is not None:
            parts.append(f"epoch {self.epoch}/{self.epochs}")
        if self.loss is not None:
            parts.append(f"loss {self.loss:.3f}")
        if self.held_out_accuracy is not None:
            parts.append(f"held-out acc {100 * self.held_out_accuracy:.1f}%")
        return "  ".join(parts)


TrainingProgress = Callable[[TrainingStatus], None]


@contextmanager
def trainable(encoder: SentenceEncoder, *, dropout: bool) -> Iterator[list[torch.Tensor]]:
    """The encoder's LoRA parameters with gradients on (dropout on or off), put back as they were afterwards."""
    params: list[torch.Tensor] = list(lora_parameters(encoder).values())
    if not params:
        raise FewIntentError("training at adapt time needs LoRA layers on the encoder (attach or load an adapter)")
    was_training = encoder.model.training
    flags = [p.requires_grad for p in params]
    encoder.model.train(dropout)
    try:
        for p in params:
            p.requires_grad_(True)
        yield params
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        encoder.model.train(was_training)


def _label_tensor(data: IntentSet) -> torch.Tensor:
    index = {label: i for i, label in enumerate(data.labels)}
    return torch.tensor([index[i] for i in data.intents], dtype=torch.long)


# --------------------------------------------------------------------------------------------- --steps
def adapt_on_support(
    encoder: SentenceEncoder,
    data: IntentSet,
    *,
    steps: int,
    lr: float,
    seed: int = 0,
    settings: InnerLoopSettings | None = None,
    progress: TrainingProgress | None = None,
) -> list[float]:
    """``--steps``: run the meta-learned inner loop on a company's examples, leaving the adapted LoRA weights in
    the encoder (the classifier then builds its head with them and saves them). Returns the support losses.

    Example:
        >>> adapt_on_support(encoder, read_intent_file("train_10.jsonl"), steps=5, lr=1e-3)  # doctest: +SKIP
    """
    if len(data.labels) < 2:
        raise FewIntentError("adapting with steps needs at least 2 intents")
    base = settings or InnerLoopSettings()
    settings = InnerLoopSettings(**{**base.to_dict(), "steps": steps, "lr": lr})
    generator = torch.Generator().manual_seed(seed)

    def on_step(step: int, loss: float) -> None:
        if progress is not None:
            progress(TrainingStatus(step, steps, loss=loss))

    # no dropout: a handful of steps on a small set should not depend on noise
    with trainable(encoder, dropout=False) as params:
        labels = _label_tensor(data)
        _, losses = inner_loop(
            encoder, params, data.texts, labels, len(data.labels), settings, generator=generator, on_step=on_step
        )
    return losses


# --------------------------------------------------------------------------------------------- --tune
class Objective(str, Enum):
    """What ``--tune`` minimises on a batch of examples."""

    CE = "ce"
    """Cross-entropy of the linear head over the embeddings (encoder and head trained together)."""
    SUPCON = "supcon"
    """Supervised contrastive loss on the embeddings (the head follows on detached embeddings)."""
    CE_SUPCON = "ce+supcon"
    """Both, summed (``supcon_weight`` on the contrastive term)."""
    RDROP = "rdrop"
    """Cross-entropy on two dropout passes plus their symmetric KL divergence (R-Drop consistency)."""
    PROTO = "proto"
    """Cross-entropy against leave-one-out prototypes of every training example (ProtoNet on the examples: each is
    scored as a new message would be); the head follows on detached embeddings."""


@dataclass(frozen=True)
class TuneRecipe:
    """How ``--tune`` trains; :data:`DEFAULT_RECIPE` is the one chosen on ``valid`` (README, "Accurate mode")."""

    # The defaults are the recipe chosen on valid (MiniLM, leave-one-out adapters, six cells, 10 valid messages per
    # intent; scripts/valid_tune.py): ProtoNet loss on the examples, lr 1e-3, rank 16, 4 epochs, the epoch the
    # held-out fold likes best: 87.96 against 87.21 untuned (+0.75), no cell below untuned by more than 0.14.
    # Cross-entropy (lr 3e-4 / 1e-3 / 3e-3), supervised contrastive (alone or with CE), label smoothing 0.1, R-Drop,
    # rank 8, no dropout, a linear decay and 6-8 epochs all did worse there (README, "Accurate mode").
    objective: Objective = Objective.PROTO
    epochs: int = 4
    lr: float = 1e-3
    """Learning rate of the LoRA parameters (Adam)."""
    head_lr: float = 1e-2
    """Learning rate of the linear head, started from the prototypes."""
    rank: int = 16
    alpha: int = 32
    lora_dropout: float = 0.1
    dropout: bool = True
    """Train with the encoder's dropout on."""
    label_smoothing: float = 0.0
    supcon_weight: float = 1.0
    supcon_temperature: float = 0.1
    rdrop_weight: float = 1.0
    temperature: float = 20.0
    """Scale of the head's logits at initialisation (cosine to the prototypes times this)."""
    batch_size: int = 32
    per_intent: int = 4
    """Examples of one intent kept next to each other in a batch (positives for the contrastive loss)."""
    holdout: float = 0.2
    """Share of each intent's examples held out of training (at least one where an intent has two or more)."""
    stopping: str = "best"
    """'best': keep the epoch with the best held-out accuracy (0 = untuned; ties: the later one); 'last': the
    last epoch."""
    schedule: str = "constant"
    """Learning rates: 'constant', or 'linear' (decayed to zero over the recipe's epochs)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "objective", Objective(self.objective))
        if self.stopping not in ("best", "last"):
            raise FewIntentError(f"unknown stopping rule '{self.stopping}': use best or last")
        if self.schedule not in ("constant", "linear"):
            raise FewIntentError(f"unknown schedule '{self.schedule}': use constant or linear")
        if not 0.0 <= self.holdout < 1.0:
            raise FewIntentError(f"holdout must be in [0, 1), got {self.holdout}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["objective"] = self.objective.value
        return d


DEFAULT_RECIPE = TuneRecipe()


@dataclass
class TuneResult:
    """What tuning did: the adapter the encoder now carries (merged), and what the model card reports."""

    lora: LoraSettings
    """The base's adapter and the tuned layers as one adapter (what the model directory saves)."""
    held_out: list[bool]
    """Per example of the data (in order): True when it was held out of training."""
    recipe: TuneRecipe
    held_out_accuracy: list[float | None] = field(default_factory=list)
    """Per epoch (index 0: before training), the held-out fold's accuracy under the deployed head (fitted on the
    training rows)."""
    epochs_run: int = 0
    kept_epoch: int = 0
    steps: int = 0
    seconds: float = 0.0
    stopped_by: str = "epochs"
    """'epochs' (the recipe's number ran) or 'time' (the time budget ran out first)."""

    def to_dict(self) -> dict[str, Any]:
        """What ``meta["tune"]`` records (config.json and the model card)."""
        return {
            "recipe": self.recipe.to_dict(),
            "lora": self.lora.to_dict(),
            "epochs_run": self.epochs_run,
            "kept_epoch": self.kept_epoch,
            "steps": self.steps,
            "seconds": round(self.seconds, 2),
            "stopped_by": self.stopped_by,
            "trained_examples": sum(not h for h in self.held_out),
            "held_out_examples": sum(self.held_out),
            "held_out_accuracy": [None if a is None else round(a, 4) for a in self.held_out_accuracy],
        }


def held_out_fold(labels: torch.Tensor, share: float, generator: torch.Generator) -> torch.Tensor:
    """Which examples to hold out of training: ``share`` of each intent's, rounded, at least one where an intent
    has two or more and never all of them (seeded)."""
    out = torch.zeros(len(labels), dtype=torch.bool)
    if share <= 0:
        return out
    for c in torch.unique(labels).tolist():
        rows = torch.nonzero(labels == c).flatten()
        n = len(rows)
        if n < 2:
            continue
        k = min(max(1, round(share * n)), n - 1)
        out[rows[torch.randperm(n, generator=generator)[:k]]] = True
    return out


def _batches(labels: torch.Tensor, recipe: TuneRecipe, generator: torch.Generator) -> list[torch.Tensor]:
    """One epoch's batches: each example once, an intent's examples in groups of ``per_intent``, groups shuffled."""
    groups: list[torch.Tensor] = []
    for c in torch.unique(labels).tolist():
        rows = torch.nonzero(labels == c).flatten()
        rows = rows[torch.randperm(len(rows), generator=generator)]
        groups += list(rows.split(recipe.per_intent))
    order = torch.randperm(len(groups), generator=generator).tolist()
    return list(torch.cat([groups[i] for i in order]).split(recipe.batch_size))


def supervised_contrastive(emb: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """SupCon (Khosla et al. 2020) on unit-norm embeddings: each example pulled toward the others of its intent;
    anchors without a positive in the batch are skipped."""
    n = len(labels)
    eye = torch.eye(n, dtype=torch.bool, device=emb.device)
    sims = (emb @ emb.T / temperature).masked_fill(eye, float("-inf"))
    log_prob = sims - sims.logsumexp(dim=1, keepdim=True)
    positive = (labels[:, None] == labels[None, :]) & ~eye
    has = positive.any(1)
    if not bool(has.any()):
        return emb.sum() * 0.0
    mean_pos = log_prob.masked_fill(~positive, 0.0).sum(1) / positive.sum(1).clamp(min=1)
    return -mean_pos[has].mean()


class _Bank:
    """The latest embedding of every training example (detached), for leave-one-out prototypes."""

    def __init__(self, emb: torch.Tensor, labels: torch.Tensor, n_classes: int) -> None:
        self.emb, self.labels, self.n = emb.detach().clone(), labels, n_classes

    def loss(self, emb: torch.Tensor, rows: torch.Tensor, recipe: TuneRecipe) -> torch.Tensor:
        """Cross-entropy of the batch against the prototypes, each example's own class without it."""
        y = self.labels[rows]
        sums = torch.zeros(self.n, self.emb.shape[1], device=emb.device).index_add(0, self.labels, self.emb)
        own = sums[y] - self.emb[rows]  # the own class without this example
        protos = nn.functional.normalize(sums, dim=-1)
        logits = emb @ protos.T
        loo = nn.functional.cosine_similarity(emb, own, dim=-1)
        logits = logits.scatter(1, y[:, None], loo[:, None]) * recipe.temperature
        alone = own.norm(dim=-1) < 1e-6  # no other example of its intent: nothing to be scored against
        self.emb[rows] = emb.detach()
        if bool(alone.all()):
            return emb.sum() * 0.0
        return nn.functional.cross_entropy(logits[~alone], y[~alone], label_smoothing=recipe.label_smoothing)


def _loss(
    encoder: SentenceEncoder,
    head: PrototypeLinearHead,
    texts: list[str],
    y: torch.Tensor,
    recipe: TuneRecipe,
    bank: _Bank,
    rows: torch.Tensor,
) -> torch.Tensor:
    emb = encoder(texts)
    obj = recipe.objective
    if obj in (Objective.SUPCON, Objective.PROTO):  # the head keeps up on detached embeddings
        ce = nn.functional.cross_entropy(head(emb.detach()), y, label_smoothing=recipe.label_smoothing)
        if obj is Objective.PROTO:
            return ce + bank.loss(emb, rows, recipe)
        return ce + supervised_contrastive(emb, y, recipe.supcon_temperature)
    logits = head(emb)
    loss = nn.functional.cross_entropy(logits, y, label_smoothing=recipe.label_smoothing)
    if obj is Objective.CE_SUPCON:
        loss = loss + recipe.supcon_weight * supervised_contrastive(emb, y, recipe.supcon_temperature)
    elif obj is Objective.RDROP:
        logits2 = head(encoder(texts))
        loss = 0.5 * (loss + nn.functional.cross_entropy(logits2, y, label_smoothing=recipe.label_smoothing))
        p, q = logits.log_softmax(-1), logits2.log_softmax(-1)
        kl = nn.functional.kl_div(p, q, log_target=True, reduction="batchmean")
        kl = kl + nn.functional.kl_div(q, p, log_target=True, reduction="batchmean")
        loss = loss + recipe.rdrop_weight * 0.5 * kl
    return loss


def _held_out_accuracy(
    encoder: SentenceEncoder,
    texts: list[str],
    y: torch.Tensor,
    held_texts: list[str],
    held_y: torch.Tensor,
    n_classes: int,
    head_c: float,
) -> float | None:
    """Accuracy on the held-out fold of the head as deployed (logistic regression, L-BFGS) fitted on the
    training rows' embeddings as the encoder is now: what the stopping rule compares between epochs."""
    if not held_texts:
        return None
    emb = encoder.encode(texts + held_texts).numpy()
    train, held = emb[: len(texts)], emb[len(texts) :]
    weight, bias = fit_logistic(train, y.cpu().numpy(), n_classes, c=head_c)  # started from 20 x the prototypes
    return float(((held @ weight.T + bias).argmax(-1) == held_y.cpu().numpy()).mean())


def tune_encoder(
    encoder: SentenceEncoder,
    data: IntentSet,
    recipe: TuneRecipe = DEFAULT_RECIPE,
    *,
    names: bool = True,
    seed: int = 0,
    below: LoraSettings | None = None,
    head_c: float = 30.0,
    time_budget: float | None = None,
    progress: TrainingProgress | None = None,
) -> TuneResult:
    """``--tune``: train fresh LoRA layers (on top of the encoder's adapter, described by ``below``) and a linear
    head on ``data`` and, with ``names``, each intent's name; keep the epoch the held-out fold likes best; leave
    the encoder merged (inference form). ``head_c`` is the deployed linear head's (the held-out fold is scored with
    it). ``time_budget`` (seconds) stops training early with the best state so far.

    Example:
        >>> result = tune_encoder(encoder, read_intent_file("train_10.jsonl"))  # doctest: +SKIP
        >>> result.kept_epoch, result.held_out_accuracy  # doctest: +SKIP
    """
    if len(data.labels) < 2:
        raise FewIntentError("tuning needs at least 2 intents")
    start = time.perf_counter()
    deadline = None if time_budget is None else start + time_budget
    torch.manual_seed(seed)  # dropout
    generator = torch.Generator().manual_seed(seed)
    labels = _label_tensor(data)
    held = held_out_fold(labels, recipe.holdout, generator)
    texts = [t for t, h in zip(data.texts, held.tolist()) if not h]
    y = labels[~held]
    if names:
        named = [(i, text) for i, label in enumerate(data.labels) if (text := name_example(label)) is not None]
        texts += [text for _, text in named]
        y = torch.cat([y, torch.tensor([i for i, _ in named], dtype=torch.long)])
    held_texts = [t for t, h in zip(data.texts, held.tolist()) if h]
    device = encoder.device
    y, held_y = y.to(device), labels[held].to(device)

    stack = stack_lora(encoder, LoraSettings(r=recipe.rank, alpha=recipe.alpha, dropout=recipe.lora_dropout), below)
    result = TuneResult(stack.top, held.tolist(), recipe)
    n = len(data.labels)
    per_epoch = len(_batches(y.cpu(), recipe, torch.Generator().manual_seed(seed)))
    total = recipe.epochs * per_epoch
    with trainable(encoder, dropout=recipe.dropout) as params:
        start_emb = encoder.encode(texts).to(device)
        head = PrototypeLinearHead.from_support(start_emb, y, n, temperature=recipe.temperature)
        bank = _Bank(start_emb, y, n)
        best_acc = _held_out_accuracy(encoder, texts, y, held_texts, held_y, n, head_c)
        result.held_out_accuracy.append(best_acc)
        best = (lora_state(encoder), 0)
        updater = Updater([*params, head.weight, head.bias], [recipe.lr] * len(params) + [recipe.head_lr] * 2, "adam")
        loss_value: float | None = None
        for epoch in range(1, recipe.epochs + 1):
            for batch in _batches(y.cpu(), recipe, generator):
                if deadline is not None and time.perf_counter() >= deadline:
                    result.stopped_by = "time"
                    break
                rows = batch.to(device)
                loss = _loss(encoder, head, [texts[int(i)] for i in batch], y[rows], recipe, bank, rows)
                grads = torch.autograd.grad(loss, [*params, head.weight, head.bias], allow_unused=True)
                progress_share = result.steps / total if total else 0.0
                updater.step(grads, 1.0 - progress_share if recipe.schedule == "linear" else 1.0)
                result.steps += 1
                loss_value = float(loss.detach())
                if progress is not None:
                    status = TrainingStatus(result.steps, total, epoch, recipe.epochs, loss_value, best_acc)
                    progress(status)
            if result.stopped_by == "time" and result.steps == (epoch - 1) * per_epoch:
                break  # nothing trained since the last evaluation
            acc = _held_out_accuracy(encoder, texts, y, held_texts, held_y, n, head_c)
            result.held_out_accuracy.append(acc)
            result.epochs_run = epoch
            if recipe.stopping == "last" or acc is None or best_acc is None or acc >= best_acc:
                best_acc, best = acc, (lora_state(encoder), epoch)
            if progress is not None:
                progress(TrainingStatus(result.steps, total, epoch, recipe.epochs, loss_value, acc, epoch_end=True))
            if result.stopped_by == "time":
                break
        load_lora_state(encoder, best[0])
        result.kept_epoch = best[1]
    result.lora = merge_stack(encoder, stack)
    result.seconds = time.perf_counter() - start
    return result
