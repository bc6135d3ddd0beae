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
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from typing import Any

import numpy as np
import torch
from torch import nn

from fewintent.data.intentset import IntentSet, name_example
from fewintent.encoder.cut import (
    MAX_TRAIN_TOKENS,
    PASS_TOKENS,
    RUN_OVERHEAD_TOKENS,
    layer_cut,
    layer_of,
    low_padding_runs,
    token_capped,
    token_lengths,
)
from fewintent.encoder.encoder import SentenceEncoder
from fewintent.encoder.lora import LoraSettings, load_lora_state, lora_parameters, lora_state, merge_stack, stack_lora
from fewintent.encoder.registry import tune_defaults_for
from fewintent.errors import FewIntentError
from fewintent.heads.linear import PrototypeLinearHead
from fewintent.heads.logistic import fit_logistic
from fewintent.heads.onevsrest import fit_one_vs_rest
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
    """Held-out fold's score at the end of the last epoch (``--tune``): accuracy, or micro-F1 on multi-label data."""
    epoch_end: bool = False
    """True once per epoch, after the held-out fold was scored (the encoder is then in that epoch's state)."""
    seconds: float | None = None
    """Time since training began (the one-off pass through the frozen lower layers included)."""
    epoch_seconds: float | None = None
    """Mean time of a finished epoch (its steps and its held-out scoring); None before the first ends."""
    remaining: float | None = None
    """Estimated seconds left (steps at the measured rate, the evaluations still to come, within any time budget)."""
    metric: str = "acc"
    """What ``held_out_accuracy`` is: 'acc' or 'micro-F1'."""

    def info(self) -> str:
        parts = []
        if self.epoch is not None and self.epochs is not None:
            parts.append(f"epoch {self.epoch}/{self.epochs}")
        if self.epoch_seconds is not None:
            parts.append(f"{self.epoch_seconds:.1f} s/epoch")
        if self.remaining is not None:
            parts.append(f"~{self.remaining:.0f} s left")
        if self.loss is not None:
            parts.append(f"loss {self.loss:.3f}")
        if self.held_out_accuracy is not None:
            parts.append(f"held-out {self.metric} {100 * self.held_out_accuracy:.1f}%")
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
    BCE = "bce"
    """A sigmoid per intent over the head's logits against each example's set of intents (binary cross-entropy):
    what multi-label data trains with, whatever the recipe names."""


@dataclass(frozen=True)
class TuneRecipe:
    """How ``--tune`` trains; :data:`DEFAULT_RECIPE` is the one chosen on ``valid`` (README, "Accurate mode")."""

    # The defaults are the recipe chosen on valid (MiniLM, leave-one-out adapters, six cells, 10 valid messages per
    # intent; scripts/valid_tune.py): ProtoNet loss on the examples, lr 1e-3, rank 16, 4 epochs, the epoch the
    # held-out fold likes best: 87.96 against 87.21 untuned (+0.75), no cell below untuned by more than 0.14. The
    # epochs, the stopping rule and the layer cut are the base's (BaseSpec.tune_*: mpnet keeps its last epoch).
    # Cross-entropy (lr 3e-4 / 1e-3 / 3e-3), supervised contrastive (alone or with CE), label smoothing 0.1, R-Drop,
    # rank 8, no dropout, a linear decay and 6-8 epochs all did worse there (README, "Accurate mode").
    objective: Objective = Objective.PROTO
    epochs: int | None = None
    """Epochs to run. None: the base's (``BaseSpec.tune_epochs``)."""
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
    layers: int | None = None
    """How many top layers are tuned: the lower ones run once per example and their output is cached, so an epoch
    costs only the top layers' forward and backward. None: the base's registered cut (``BaseSpec.tune_layers``);
    0: every layer."""
    per_intent: int = 4
    """Examples of one intent kept next to each other in a batch (positives for the contrastive loss)."""
    holdout: float = 0.2
    """Share of each intent's examples held out of training (at least one where an intent has two or more)."""
    stopping: str | None = None
    """'best': keep the epoch with the best held-out accuracy (0 = untuned; ties: the later one); 'last': the
    last epoch. None: the base's (``BaseSpec.tune_stopping``)."""
    schedule: str = "constant"
    """Learning rates: 'constant', or 'linear' (decayed to zero over the recipe's epochs)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "objective", Objective(self.objective))
        if self.stopping not in (None, "best", "last"):
            raise FewIntentError(f"unknown stopping rule '{self.stopping}': use best or last")
        if self.schedule not in ("constant", "linear"):
            raise FewIntentError(f"unknown schedule '{self.schedule}': use constant or linear")
        if not 0.0 <= self.holdout < 1.0:
            raise FewIntentError(f"holdout must be in [0, 1), got {self.holdout}")
        if self.layers is not None and (isinstance(self.layers, bool) or not isinstance(self.layers, int)):
            raise FewIntentError(f"layers must be a whole number (0: every layer), got {self.layers!r:.30}")
        if self.epochs is not None and (isinstance(self.epochs, bool) or not isinstance(self.epochs, int)):
            raise FewIntentError(f"epochs must be a whole number, got {self.epochs!r:.30}")
        if self.epochs is not None and self.epochs < 1:
            raise FewIntentError(f"epochs must be 1 or more, got {self.epochs}")
        if self.layers is not None and self.layers < 0:
            raise FewIntentError(f"layers must be 0 (every layer) or more, got {self.layers}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["objective"] = self.objective.value
        return d


DEFAULT_RECIPE = TuneRecipe()
MULTI_LABEL_C = 10.0
"""The one-vs-rest head's C when a multi-label held-out fold is scored between epochs (the middle of its grid)."""


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
    embeddings: dict[str, np.ndarray] | None = None
    """Text -> embedding under the kept state, of every text the kept epoch's scoring encoded (the examples and the
    intents' names; None when that epoch was not scored): the merged encoder gives the same to float rounding
    (~1e-7), so the classifier's fit takes them instead of encoding everything again. Not recorded."""

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


def _batches(
    labels: torch.Tensor,
    lengths: list[int],
    recipe: TuneRecipe,
    generator: torch.Generator,
    max_tokens: int = MAX_TRAIN_TOKENS,
) -> list[list[int]]:
    """One epoch's batches: each example once, an intent's examples in groups of ``per_intent``, groups shuffled;
    within every window of four batches the groups are sorted by length (little padding), a batch holds at most
    ``batch_size`` examples and ``max_tokens`` padded tokens, and the batches are shuffled."""
    groups: list[list[int]] = []
    for c in torch.unique(labels).tolist():
        rows = torch.nonzero(labels == c).flatten()
        rows = rows[torch.randperm(len(rows), generator=generator)]
        groups += [g.tolist() for g in rows.split(recipe.per_intent)]
    groups = [groups[i] for i in torch.randperm(len(groups), generator=generator).tolist()]
    window = max(1, 4 * recipe.batch_size // max(1, recipe.per_intent))
    ordered: list[int] = []
    for w in range(0, len(groups), window):
        for g in sorted(groups[w : w + window], key=lambda g: max(lengths[i] for i in g)):
            ordered += g
    batches: list[list[int]] = []
    for chunk in (ordered[i : i + recipe.batch_size] for i in range(0, len(ordered), recipe.batch_size)):
        batches += token_capped(chunk, lengths, max_tokens)
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def _in_runs(
    rows: list[int], lengths: list[int], run: Callable[[list[int]], torch.Tensor], overhead: int | None
) -> torch.Tensor:
    """``run`` (embeddings of a batch of rows) on a batch as a few passes of similar lengths
    (:func:`~fewintent.encoder.cut.low_padding_runs`, ``overhead`` tokens a pass; None: one pass), the embeddings
    back in the batch's order: the same as one padded pass, with less padding to compute (a batch groups intents,
    not lengths)."""
    runs = [rows] if overhead is None else low_padding_runs([lengths[r] for r in rows], overhead)
    if len(runs) == 1:
        return run(rows)
    out = torch.cat([run([rows[k] for k in part]) for part in runs])
    where = torch.empty(len(rows), dtype=torch.long)
    where[[k for part in runs for k in part]] = torch.arange(len(rows))
    return out[where.to(out.device)]


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
    embed: Callable[[list[int]], torch.Tensor],
    head: PrototypeLinearHead,
    rows: list[int],
    y: torch.Tensor,
    recipe: TuneRecipe,
    bank: _Bank,
) -> torch.Tensor:
    """The recipe's loss on one batch (``rows`` of the training examples; ``embed`` runs the encoder on them)."""
    emb = embed(rows)
    index = torch.tensor(rows, dtype=torch.long, device=emb.device)
    obj = recipe.objective
    if obj is Objective.BCE:  # y: multi-hot (rows, intents)
        return nn.functional.binary_cross_entropy_with_logits(head(emb), y[index])
    yb = y[index]
    if obj in (Objective.SUPCON, Objective.PROTO):  # the head keeps up on detached embeddings
        ce = nn.functional.cross_entropy(head(emb.detach()), yb, label_smoothing=recipe.label_smoothing)
        if obj is Objective.PROTO:
            return ce + bank.loss(emb, index, recipe)
        return ce + supervised_contrastive(emb, yb, recipe.supcon_temperature)
    logits = head(emb)
    loss = nn.functional.cross_entropy(logits, yb, label_smoothing=recipe.label_smoothing)
    if obj is Objective.CE_SUPCON:
        loss = loss + recipe.supcon_weight * supervised_contrastive(emb, yb, recipe.supcon_temperature)
    elif obj is Objective.RDROP:
        logits2 = head(embed(rows))
        loss = 0.5 * (loss + nn.functional.cross_entropy(logits2, yb, label_smoothing=recipe.label_smoothing))
        p, q = logits.log_softmax(-1), logits2.log_softmax(-1)
        kl = nn.functional.kl_div(p, q, log_target=True, reduction="batchmean")
        kl = kl + nn.functional.kl_div(q, p, log_target=True, reduction="batchmean")
        loss = loss + recipe.rdrop_weight * 0.5 * kl
    return loss


def _held_out_score(
    emb: np.ndarray, n_train: int, y: torch.Tensor, held_y: torch.Tensor, n_classes: int, head_c: float
) -> float:
    """The held-out fold's score under the head as deployed, fitted on the training rows' embeddings as the encoder
    is now (what the stopping rule compares between epochs): accuracy of the linear head (logistic regression,
    L-BFGS); on multi-label data (multi-hot ``y``), micro-F1 of one-vs-rest logistic regressions at probability 0.5."""
    train, held = emb[:n_train], emb[n_train:]
    if y.ndim == 2:
        weight, bias = fit_one_vs_rest(train, y.cpu().numpy(), c=MULTI_LABEL_C)
        passed, truth = (held @ weight.T + bias) >= 0, held_y.cpu().numpy().astype(bool)
        tp, wrong = int((passed & truth).sum()), int((passed != truth).sum())
        return 2 * tp / max(2 * tp + wrong, 1)
    weight, bias = fit_logistic(train, y.cpu().numpy(), n_classes, c=head_c)
    return float(((held @ weight.T + bias).argmax(-1) == held_y.cpu().numpy()).mean())


def _targets(data: IntentSet) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per example: its (first) intent's index, and on multi-label data its multi-hot set of intents."""
    labels = _label_tensor(data)
    if not data.is_multi_label:
        return labels, None
    index = {label: i for i, label in enumerate(data.labels)}
    hot = torch.zeros(len(data.texts), len(data.labels))
    for row, intents in enumerate(data.sets()):
        hot[row, [index[i] for i in intents]] = 1.0
    return labels, hot


def _start_head(emb: torch.Tensor, y: torch.Tensor, n: int, recipe: TuneRecipe) -> PrototypeLinearHead:
    """The head tuning starts from: the prototypes' cosine times the temperature; for the per-intent sigmoid, each
    intent's bias set halfway between its examples' and the others' mean logit, so each starts near a fair cut."""
    if y.ndim == 1:
        return PrototypeLinearHead.from_support(emb, y, n, temperature=recipe.temperature)
    protos = (y.T @ emb) / y.sum(0).clamp(min=1)[:, None]
    head = PrototypeLinearHead.from_prototypes(protos, temperature=recipe.temperature)
    with torch.no_grad():
        logits = emb @ head.weight.T
        pos = (logits * y).sum(0) / y.sum(0).clamp(min=1)
        neg = (logits * (1 - y)).sum(0) / (1 - y).sum(0).clamp(min=1)
        head.bias.copy_(-(pos + neg) / 2)
    return head


class _Clock:
    """Where the time goes (steps, held-out scoring) and what is left of it: the progress display's estimates."""

    def __init__(self, total_steps: int, epochs: int, deadline: float | None) -> None:
        self.start = time.perf_counter()
        self.total, self.epochs, self.deadline = total_steps, epochs, deadline
        self.step_time, self.steps, self.eval_time, self.evals = 0.0, 0, 0.0, 0
        self.epoch_times: list[float] = []

    def remaining(self, steps_done: int, evals_done: int) -> float:
        rate = self.step_time / self.steps if self.steps else 0.0
        per_eval = self.eval_time / self.evals if self.evals else 0.0
        left = rate * (self.total - steps_done) + per_eval * max(0, self.epochs + 1 - evals_done)
        if self.deadline is not None:  # the budget stops the steps; the last evaluation still runs
            left = min(left, max(0.0, self.deadline - time.perf_counter()) + per_eval)
        return left

    def status(self, steps: int, epoch: int, loss: float | None, score: float | None, **kw: Any) -> TrainingStatus:
        mean = sum(self.epoch_times) / len(self.epoch_times) if self.epoch_times else None
        return TrainingStatus(
            steps,
            self.total,
            epoch,
            self.epochs,
            loss,
            score,
            seconds=time.perf_counter() - self.start,
            epoch_seconds=mean,
            remaining=self.remaining(steps, len(self.epoch_times) + 1),
            **kw,
        )


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
    max_tokens: int = MAX_TRAIN_TOKENS,
) -> TuneResult:
    """``--tune``: train fresh LoRA layers (on top of the encoder's adapter, described by ``below``) and a linear
    head on ``data`` and, with ``names``, each intent's name; keep the epoch the stopping rule picks (the base's
    unless the recipe names one: the held-out fold's best, or the last); leave the encoder merged (inference form).
    Only the top ``recipe.layers`` layers train (the base's registered cut when None): the lower layers' output is
    computed once per example and cached. Multi-label data trains a sigmoid per intent (:attr:`Objective.BCE`) and
    scores the held-out fold by micro-F1. ``head_c`` is the deployed linear head's (the held-out fold is scored with
    it). ``time_budget`` (seconds) stops training early with the state the stopping rule keeps so far. No forward
    pass holds more than ``max_tokens`` padded tokens.

    Example:
        >>> result = tune_encoder(encoder, read_intent_file("train_10.jsonl"))  # doctest: +SKIP
        >>> result.kept_epoch, result.held_out_accuracy  # doctest: +SKIP
    """
    if len(data.labels) < 2:
        raise FewIntentError("tuning needs at least 2 intents")
    start = time.perf_counter()
    deadline = None if time_budget is None else start + time_budget
    defaults = tune_defaults_for(encoder.name, encoder.sha256)
    recipe = replace(recipe, **{k: v for k, v in defaults.items() if getattr(recipe, k) is None})
    if data.is_multi_label:
        recipe = replace(recipe, objective=Objective.BCE)
    torch.manual_seed(seed)  # dropout
    generator = torch.Generator().manual_seed(seed)
    labels, hot = _targets(data)
    held = held_out_fold(labels, recipe.holdout, generator)
    keep = (~held).tolist()
    texts = [t for t, k in zip(data.texts, keep) if k]
    target = labels if hot is None else hot
    y, held_y = target[~held], target[held]
    n = len(data.labels)
    if names:
        named = [(i, text) for i, label in enumerate(data.labels) if (text := name_example(label)) is not None]
        texts += [text for _, text in named]
        name_y = torch.tensor([i for i, _ in named], dtype=torch.long)
        y = torch.cat([y, name_y if hot is None else nn.functional.one_hot(name_y, n).float()])
    if hot is not None and data.oos_texts:  # messages with no intent train too: negatives for every intent
        texts += list(data.oos_texts)
        y = torch.cat([y, torch.zeros(len(data.oos_texts), n)])
    held_texts = [t for t, h in zip(data.texts, held.tolist()) if h]
    device = encoder.device
    y, held_y = y.to(device), held_y.to(device)
    group = y if y.ndim == 1 else y.argmax(1)  # an example's first intent: how batches group examples

    stack = stack_lora(encoder, LoraSettings(r=recipe.rank, alpha=recipe.alpha, dropout=recipe.lora_dropout), below)
    cut = layer_cut(encoder, int(recipe.layers or 0), texts, max_tokens)
    if cut is None:
        recipe = replace(recipe, layers=0)  # this encoder cannot run in two parts: every layer, every step
    else:
        recipe = replace(recipe, layers=cut.layers if cut.start > 0 else 0)
    result = TuneResult(stack.top, held.tolist(), recipe)
    lengths = token_lengths(encoder, texts)
    per_epoch = len(_batches(group.cpu(), lengths, recipe, torch.Generator().manual_seed(seed), max_tokens))
    epochs = recipe.epochs
    assert epochs is not None  # resolved above: the base's when the recipe names none
    clock = _Clock(epochs * per_epoch, epochs, deadline)
    metric = "micro-F1" if hot is not None else "acc"
    on_cpu = device.type == "cpu"  # a GPU runs big batches best and pays per pass: one padded pass, max_tokens
    pass_tokens = min(max_tokens, PASS_TOKENS) if on_cpu else max_tokens
    overhead = RUN_OVERHEAD_TOKENS if on_cpu else None
    with trainable(encoder, dropout=recipe.dropout) as lora:
        if cut is not None:
            states = cut.lower(texts + held_texts, pass_tokens)
            params: list[torch.Tensor] = [
                p for name, p in lora_parameters(encoder).items() if (layer_of(name) or 0) >= cut.start
            ]
            train_states = states[: len(texts)]

            def embed(rows: list[int]) -> torch.Tensor:
                return _in_runs(rows, lengths, lambda part: cut.upper([train_states[i] for i in part]), overhead)

            @torch.no_grad()
            def encode_all() -> np.ndarray:
                was = encoder.model.training
                encoder.model.eval()
                try:
                    out = np.empty((len(states), encoder.dim), dtype=np.float32)
                    order = sorted(range(len(states)), key=lambda i: len(states[i]))
                    for rows in token_capped(order, [len(s) for s in states], pass_tokens):
                        out[rows] = cut.upper([states[i] for i in rows]).cpu().numpy()
                    return out
                finally:
                    encoder.model.train(was)

        else:
            params = lora
            every_len = lengths + token_lengths(encoder, held_texts)

            def embed(rows: list[int]) -> torch.Tensor:
                return _in_runs(rows, lengths, lambda part: encoder([texts[i] for i in part]), overhead)

            def encode_all() -> np.ndarray:
                every = texts + held_texts
                out = np.empty((len(every), encoder.dim), dtype=np.float32)
                order = sorted(range(len(every)), key=lambda i: every_len[i])
                for rows in token_capped(order, every_len, pass_tokens):
                    out[rows] = np.asarray(encoder.encode([every[i] for i in rows], batch_size=len(rows)))
                return out

        def score(emb: np.ndarray | None = None, begin: float | None = None) -> tuple[float | None, np.ndarray | None]:
            """The held-out fold's score with the encoder as it is now, and the embeddings of every text it was
            computed on; ``emb``: those, already encoded in this state (encoding started at ``begin``). Without a
            held-out fold nothing is scored or encoded: (None, ``emb``)."""
            if not held_texts:
                return None, emb
            begin = time.perf_counter() if begin is None else begin
            emb = encode_all() if emb is None else emb
            value = _held_out_score(emb, len(texts), y, held_y, n, head_c)
            clock.eval_time += time.perf_counter() - begin
            clock.evals += 1
            return value, emb

        begin = time.perf_counter()
        untuned = encode_all()  # the head's start and epoch 0's score: one pass
        start_emb = torch.from_numpy(untuned[: len(texts)]).to(device)
        head = _start_head(start_emb, y, n, recipe)
        bank = _Bank(start_emb, group, n)
        best_acc, emb = score(untuned, begin)
        result.held_out_accuracy.append(best_acc)
        best = (lora_state(encoder), 0, emb)
        weights = [*params, head.weight, head.bias]
        updater = Updater(weights, [recipe.lr] * len(params) + [recipe.head_lr] * 2, "adam")
        loss_value: float | None = None
        for epoch in range(1, epochs + 1):
            epoch_start = time.perf_counter()
            for batch in _batches(group.cpu(), lengths, recipe, generator, max_tokens):
                if deadline is not None and time.perf_counter() >= deadline:
                    result.stopped_by = "time"
                    break
                begin = time.perf_counter()
                loss = _loss(embed, head, batch, y, recipe, bank)
                grads = torch.autograd.grad(loss, weights, allow_unused=True)
                progress_share = result.steps / clock.total if clock.total else 0.0
                updater.step(grads, 1.0 - progress_share if recipe.schedule == "linear" else 1.0)
                result.steps += 1
                clock.step_time += time.perf_counter() - begin
                clock.steps += 1
                loss_value = float(loss.detach())
                if progress is not None:
                    progress(clock.status(result.steps, epoch, loss_value, best_acc, metric=metric))
            if result.stopped_by == "time" and result.steps == (epoch - 1) * per_epoch:
                break  # nothing trained since the last evaluation
            acc, emb = score()
            clock.epoch_times.append(time.perf_counter() - epoch_start)
            result.held_out_accuracy.append(acc)
            result.epochs_run = epoch
            if recipe.stopping == "last" or acc is None or best_acc is None or acc >= best_acc:
                best_acc, best = acc, (lora_state(encoder), epoch, emb)
            if progress is not None:
                progress(clock.status(result.steps, epoch, loss_value, acc, epoch_end=True, metric=metric))
            if result.stopped_by == "time":
                break
        load_lora_state(encoder, best[0])
        result.kept_epoch = best[1]
        if best[2] is not None:
            result.embeddings = dict(zip(texts + held_texts, best[2]))
    result.lora = merge_stack(encoder, stack)
    result.seconds = time.perf_counter() - start
    return result
