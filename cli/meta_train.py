"""``fewintent meta-train``: meta-train a LoRA adapter episodically; the result is usable as ``adapt --adapter``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from fewintent.cli._common import console, guarded, refuse_model_directory
from fewintent.errors import FewIntentError, training_parts

ALGORITHMS = "<protonet|fomaml|ridge>"
"""meta.args.Algorithm's values, written out: importing it here would load torch at CLI start (a test compares)."""


def _ints(value: str | None, what: str) -> int | list[int] | None:
    """``5`` -> 5; ``5-10`` or ``5..10`` -> [5, 10] (drawn per episode)."""
    if value is None:
        return None
    parts = value.replace("..", "-").split("-")
    try:
        nums = [int(p) for p in parts]
    except ValueError as e:
        raise FewIntentError(f"--{what} takes a number or a range like 5-10, got '{value}'") from e
    return nums[0] if len(nums) == 1 else [nums[0], nums[-1]]


def _csv(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


@guarded
def meta_train(
    output: Path = typer.Option(..., "--output", "-o", help="Adapter directory to write (usable as --adapter)."),
    config: Path = typer.Option(None, "--config", help="YAML file of MetaTrainingArguments; options below win."),
    data_dir: str = typer.Option(
        None,
        "--data-dir",
        help="Folder with <dataset>/<split>.jsonl, searched first; then $FEWINTENT_DATASETS, the downloaded corpora "
        "(`fewintent datasets download`), ../shared/datasets.",
    ),
    datasets: str = typer.Option(
        None,
        "--datasets",
        help="Comma-separated: banking77,clinc150,hwu64,snips,sgd (`fewintent datasets list`), intent files, or a "
        "hub id such as PolyAI/banking77.",
    ),
    exclude: str = typer.Option(None, "--exclude", help="Datasets left out entirely (comma-separated)."),
    exclude_domains: str = typer.Option(
        None, "--exclude-domains", help="Held-out domains, e.g. clinc150:banking,hwu64:alarm (never sampled)."
    ),
    algo: str = typer.Option(
        None, "--algo", metavar=ALGORITHMS, help="The meta-learning algorithm (default: the config's, else protonet)."
    ),
    episodes: int = typer.Option(None, "--episodes", min=1, help="Training episodes in all."),
    ways: str = typer.Option(None, "--ways", help="Intents per episode: N or a range lo-hi."),
    shots: str = typer.Option(None, "--shots", help="Support examples per intent: K or a range lo-hi."),
    queries: int = typer.Option(None, "--queries", min=1, help="Query examples per intent."),
    inner_steps: int = typer.Option(None, "--inner-steps", min=0, help="fomaml inner-loop steps."),
    inner_lr: float = typer.Option(None, "--inner-lr", help="fomaml inner-loop learning rate (LoRA)."),
    meta_batch: int = typer.Option(None, "--meta-batch", min=1, help="Tasks per outer update."),
    lr: float = typer.Option(None, "--lr", help="Outer learning rate (AdamW on the LoRA weights)."),
    seed: int = typer.Option(None, "--seed", help="Random seed (episodes, LoRA init, dropout)."),
    device: str = typer.Option(None, "--device", help="auto, cpu or cuda."),
    threads: int = typer.Option(None, "--threads", min=1, help="torch CPU threads."),
    eval_every: int = typer.Option(None, "--eval-every", min=0, help="Episodes between validation passes."),
    patience: int = typer.Option(None, "--patience", min=0, help="Validation passes without gain before stopping."),
    checkpoint_every: int = typer.Option(None, "--checkpoint-every", min=0, help="Episodes between checkpoints."),
    intent_names: bool = typer.Option(
        None,
        "--intent-names/--no-intent-names",
        help="Add each intent's name as one more support example in every episode (as adapt does).",
    ),
    max_time: float = typer.Option(
        None, "--max-time", min=1, help="Stop after this many seconds, keeping the best validated weights."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue the unfinished run in the output directory."),
    keep_checkpoint: bool = typer.Option(False, "--keep-checkpoint", help="Keep the last checkpoint at the end."),
    as_json: bool = typer.Option(False, "--json", help="Print the run summary as JSON."),
) -> None:
    """Meta-train a LoRA adapter on intent datasets (episodes by dataset and domain) and save it to OUTPUT.

    Validation episodes come from the `valid` split of the training datasets (never `test`); the adapter
    keeps the weights that scored best there. Runs under `accelerate launch` for several GPUs unchanged.
    """
    refuse_model_directory(output, "the adapter")
    with training_parts("`fewintent meta-train`"):
        from fewintent.meta.args import MetaTrainingArguments
        from fewintent.meta.trainer import MetaTrainer

    overrides: dict[str, Any] = {
        "data_dir": data_dir,
        "datasets": _csv(datasets),
        "exclude": _csv(exclude),
        "exclude_domains": _csv(exclude_domains),
        "algorithm": algo,
        "episodes": episodes,
        "ways": _ints(ways, "ways"),
        "shots": _ints(shots, "shots"),
        "queries": queries,
        "inner_steps": inner_steps,
        "inner_lr": inner_lr,
        "meta_batch": meta_batch,
        "lr": lr,
        "seed": seed,
        "device": device,
        "threads": threads,
        "eval_every": eval_every,
        "patience": patience,
        "checkpoint_every": checkpoint_every,
        "max_time_s": max_time,
        "intent_names": intent_names,
    }
    if config is not None:
        args = MetaTrainingArguments.from_yaml(config, **overrides)
    else:
        args = MetaTrainingArguments.from_dict({k: v for k, v in overrides.items() if v is not None})
    trainer = MetaTrainer(args, output, resume=resume, keep_checkpoint=keep_checkpoint)
    summary = trainer.train()
    if not trainer.dist.is_main:
        return
    if as_json:
        print(json.dumps(summary))
        return
    best = summary.get("valid_best") or {}
    initial = summary.get("valid_initial") or {}
    console.print(
        f"meta-trained {args.algorithm.value} for {summary['episodes_trained']} episodes "
        f"in {summary['wall_time_s']:.0f}s ({summary['episodes_per_s']} episodes/s)"
        + (
            f"; valid acc {initial.get('valid_acc', float('nan')):.4f} -> {best.get('valid_acc', float('nan')):.4f} "
            f"(best at episode {summary['best_episode']})"
            if best
            else ""
        )
        + f" -> {escape(str(output))}",
        highlight=False,
    )
