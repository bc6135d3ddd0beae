"""The meta-training loop: episodes -> algorithm -> outer optimiser, with validation, early stopping,
checkpoints, resume, JSON-lines metrics, and data parallelism under ``accelerate launch``.

Determinism: episode ``i`` depends only on the seed, the dropout generator is reseeded at every outer step, and a
checkpoint holds the optimiser state, so a resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import resource
import shutil
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fewintent.data.corpus import Corpus, load_corpora
from fewintent.data.episodes import Episode, EpisodeSampler
from fewintent.encoder.encoder import SentenceEncoder, resolve_device
from fewintent.encoder.lora import attach_lora, load_lora_state, lora_parameters, lora_state, save_adapter
from fewintent.errors import FewIntentError
from fewintent.heads.proto import class_means
from fewintent.meta import checkpoint as ckpt
from fewintent.meta.args import MetaTrainingArguments
from fewintent.meta.inner import prototype_accuracy
from fewintent.meta.registry import build_algorithm
from fewintent.progress import ProgressBar

METRICS_FILE = "metrics.jsonl"
ADAPTER_FORMAT = "fewintent-adapter"


class _Dist:
    """One process, or one rank of an ``accelerate launch`` / ``torchrun`` group (gloo on CPU, NCCL on GPU)."""

    def __init__(self, device: str) -> None:
        # torchrun / accelerate launch set WORLD_SIZE; MPI launchers (accelerate's multi-CPU) set their own.
        sizes = (os.environ.get(k, "1") for k in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"))
        self.world = max(int(v) for v in sizes)
        if self.world > 1:
            try:
                from accelerate import Accelerator
            except ImportError as e:
                raise FewIntentError("multi-process meta-training needs accelerate: pip install accelerate") from e
            want_cpu = device == "cpu" or not torch.cuda.is_available()
            self.accelerator: Any = Accelerator(cpu=want_cpu)
            self.rank = int(self.accelerator.process_index)
            self.world = int(self.accelerator.num_processes)
            self.device = torch.device(self.accelerator.device)
        else:
            self.accelerator, self.rank, self.device = None, 0, resolve_device(device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _flat_op(self, tensors: list[torch.Tensor], mean: bool) -> None:
        if self.world == 1 or not tensors:
            return
        import torch.distributed as td

        flat = torch.cat([t.reshape(-1) for t in tensors])
        td.all_reduce(flat, op=td.ReduceOp.SUM)
        if mean:
            flat /= self.world
        offset = 0
        for t in tensors:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()

    def all_reduce_mean(self, tensors: list[torch.Tensor]) -> None:
        self._flat_op(tensors, mean=True)

    def all_reduce_sum(self, tensors: list[torch.Tensor]) -> None:
        self._flat_op(tensors, mean=False)

    def broadcast(self, tensors: Sequence[torch.Tensor]) -> None:
        if self.world == 1:
            return
        import torch.distributed as td

        for t in tensors:
            td.broadcast(t.data, src=0)

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as td

            td.barrier()


def _step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step * 7919 + rank * 104_729) % (2**63 - 1)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class MetaTrainer:
    """Meta-trains LoRA adapters on an encoder and writes a ``--adapter``-ready directory.

    Example:
        >>> args = MetaTrainingArguments(data_dir="../shared/datasets", exclude=["banking77"], episodes=500)
        >>> MetaTrainer(args, "runs/no-banking77").train()  # doctest: +SKIP
    """

    def __init__(
        self,
        args: MetaTrainingArguments,
        output_dir: str | Path,
        *,
        resume: bool = False,
        progress: bool = True,
        on_step: Callable[[int], None] | None = None,
        keep_checkpoint: bool = False,
    ) -> None:
        self.args = args
        self.output_dir = Path(output_dir)
        self.resume = resume
        self.on_step = on_step
        self.keep_checkpoint = keep_checkpoint
        self.show_progress = progress
        if args.threads:
            torch.set_num_threads(args.threads)
        self.dist = _Dist(args.device)
        cuda = self.dist.device.type == "cuda"
        self.autocast: Callable[[], AbstractContextManager[Any]] = (
            (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda and args.bf16 else nullcontext
        )
        held_out = args.held_out_domains
        self.train_corpora = load_corpora(
            args.datasets, args.train_split, data_dir=args.data_dir, exclude=args.exclude, exclude_domains=held_out
        )
        self.valid_corpora: dict[str, Corpus] = {}
        # A user's intent file has no valid split: it takes part in training only.
        valid_names = [n for n in args.datasets if not Path(n).expanduser().is_file() and n not in args.exclude]
        if args.eval_every > 0 and valid_names:
            self.valid_corpora = load_corpora(
                valid_names, args.valid_split, data_dir=args.data_dir, exclude_domains=held_out
            )
        top = lambda v: v if isinstance(v, int) else max(v)  # noqa: E731
        self.sampler = EpisodeSampler(
            self.train_corpora,
            ways=_range(args.ways),
            shots=_range(args.shots),
            queries=args.queries,
            domain_prob=args.domain_prob,
            weighting=args.weighting,
            intent_names=args.intent_names,
            seed=args.seed,
        )
        self.valid: list[Episode] = []
        if self.valid_corpora:
            self.valid = EpisodeSampler(
                self.valid_corpora,
                ways=args.valid_ways or top(args.ways),
                shots=args.valid_shots or top(args.shots),
                queries=args.valid_queries or args.queries,
                domain_prob=args.domain_prob,
                weighting=args.weighting,
                intent_names=args.intent_names,
                seed=args.seed + 10_000,
            ).fixed(args.valid_episodes)

        torch.manual_seed(args.seed)  # the same LoRA initialisation on every rank
        self.encoder = SentenceEncoder(args.base, device=self.dist.device, max_length=args.max_length)
        self.lora = attach_lora(self.encoder, args.lora)  # the targets filled in from the base
        self.algo = build_algorithm(self.encoder, args, self.autocast)
        self.params = self.algo.parameters()
        self.dist.broadcast(self.params)
        lora = list(lora_parameters(self.encoder).values())
        extra = [p for p in self.params if all(p is not q for q in lora)]
        groups: list[dict[str, Any]] = [{"params": lora, "lr": args.lr, "weight_decay": args.weight_decay}]
        if extra:
            groups.append({"params": extra, "lr": args.temperature_lr, "weight_decay": 0.0})
        self.optimizer = torch.optim.AdamW(groups)
        self.per_step = args.meta_batch * self.dist.world
        self.total_steps = math.ceil(args.episodes / self.per_step)
        # run state (all of it goes into a checkpoint)
        self.step = 0
        self.best: dict[str, Any] = {"acc": None, "loss": None, "episode": 0}
        self.best_state: dict[str, torch.Tensor] | None = None
        self.initial_valid: dict[str, float] | None = None
        self.bad_evals = 0
        self.stopped_early = False
        self.out_of_time = False
        self.elapsed = 0.0
        self.window: deque[tuple[float, float]] = deque(maxlen=50)  # running loss/accuracy

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Nearest-prototype accuracy and cross-entropy (at the configured temperature) on the validation
        episodes, spread over the ranks; every rank gets the same numbers. The same measure for every algorithm
        (ridge too), so validation curves and early stopping compare across algorithms."""
        was_training = self.encoder.model.training
        self.encoder.model.eval()
        totals = torch.zeros(3, dtype=torch.float64)
        for ep in self.valid[self.dist.rank :: self.dist.world]:
            with self.autocast():
                emb = self.encoder(ep.support + ep.query).float().cpu()
            s, q = emb[: len(ep.support)], emb[len(ep.support) :]
            s_y, q_y = torch.tensor(ep.support_labels), torch.tensor(ep.query_labels)
            protos = nn.functional.normalize(class_means(s, s_y, ep.ways), dim=-1)
            logits = self.args.temperature * (nn.functional.normalize(q, dim=-1) @ protos.T)
            acc = prototype_accuracy(s, s_y, q, q_y)
            totals += torch.tensor(
                [acc * len(q_y), float(nn.functional.cross_entropy(logits, q_y, reduction="sum")), len(q_y)],
                dtype=torch.float64,
            )
        self.dist.all_reduce_sum([totals])
        self.encoder.model.train(was_training)
        n = max(float(totals[2]), 1.0)
        return {"valid_acc": float(totals[0]) / n, "valid_loss": float(totals[1]) / n}

    def _consider(self, result: dict[str, float], episodes: int) -> bool:
        """Track the best validation result; True when early stopping says stop."""
        acc, loss = result["valid_acc"], result["valid_loss"]
        best_acc, best_loss = self.best["acc"], self.best["loss"]
        better = best_acc is None or acc > best_acc + 1e-9 or (abs(acc - best_acc) <= 1e-9 and loss < best_loss)
        if better:
            self.best = {"acc": acc, "loss": loss, "episode": episodes}
            self.best_state = lora_state(self.encoder)
            self.bad_evals = 0
        else:
            self.bad_evals += 1
        return self.args.patience > 0 and self.bad_evals >= self.args.patience

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint_payload(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = {f"param.{i}": p.detach().cpu() for i, p in enumerate(self.params)}
        opt_tensors, opt_rest = ckpt.optimizer_to_flat(self.optimizer)
        tensors.update(opt_tensors)
        if self.best_state is not None:
            tensors.update({f"best.{k}": v for k, v in self.best_state.items()})
        state = {
            "step": self.step,
            "episodes": self.step * self.per_step,
            "world_size": self.dist.world,
            "best": self.best,
            "has_best_state": self.best_state is not None,
            "initial_valid": self.initial_valid,
            "bad_evals": self.bad_evals,
            "stopped_early": self.stopped_early,
            "elapsed": self.elapsed,
            "window": list(self.window),
            "optimizer": opt_rest,
            "args": self.args.to_dict(),
        }
        return tensors, state

    def _restore(self) -> None:
        tensors, state = ckpt.load_checkpoint(self.output_dir)
        try:
            self._restore_from(tensors, state)
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as e:  # parsed, but not what we wrote
            what = f"missing {e}" if isinstance(e, KeyError) else str(e).splitlines()[0][:120]
            raise ckpt.unreadable(self.output_dir / ckpt.CHECKPOINT_DIR, what) from e

    def _restore_from(self, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        saved = dict(state["args"])
        now = self.args.to_dict()
        ignore = {
            "episodes",
            "threads",
            "device",
            "patience",
            "checkpoint_every",
            "log_every",
            "data_dir",
            "max_time_s",
        }
        diff = sorted(k for k in now if k not in ignore and saved.get(k) != now[k])
        if diff:
            raise FewIntentError(
                f"--resume: the checkpoint in {self.output_dir} was made with different arguments "
                f"({', '.join(diff)}); use the same config, or another output directory"
            )
        if state["world_size"] != self.dist.world:
            raise FewIntentError(
                f"--resume: the checkpoint was made with {state['world_size']} process(es), this run has "
                f"{self.dist.world}; relaunch with the same number"
            )
        with torch.no_grad():
            for i, p in enumerate(self.params):
                p.copy_(tensors[f"param.{i}"].to(p.device))
        ckpt.optimizer_from_flat(self.optimizer, tensors, state["optimizer"])
        self.step = int(state["step"])
        self.best = state["best"]
        self.best_state = (
            {k[len("best.") :]: v for k, v in tensors.items() if k.startswith("best.")}
            if state["has_best_state"]
            else None
        )
        self.initial_valid = state["initial_valid"]
        self.bad_evals = int(state["bad_evals"])
        self.stopped_early = bool(state["stopped_early"])
        self.elapsed = float(state["elapsed"])
        self.window.extend(tuple(x) for x in state.get("window", []))
        self._truncate_metrics(self.step * self.per_step)

    def _truncate_metrics(self, episodes: int) -> None:
        """Drop metric lines written after the checkpoint, so a resumed log reads like an uninterrupted one."""
        path = self.output_dir / METRICS_FILE
        if not self.dist.is_main or not path.is_file():
            return
        keep = []
        for line in path.read_text().splitlines():
            try:
                if line and json.loads(line)["episode"] <= episodes:
                    keep.append(line)
            except (ValueError, KeyError, TypeError):  # a line cut off by the kill: written after the checkpoint
                continue
        path.write_text("".join(line + "\n" for line in keep))

    def _log(self, record: dict[str, Any]) -> None:
        if self.dist.is_main:
            with open(self.output_dir / METRICS_FILE, "a") as f:
                f.write(json.dumps(record) + "\n")

    # ------------------------------------------------------------------ training
    def train(self) -> dict[str, Any]:
        """Run (or resume) the meta-training and save the adapter; returns the summary written in its metadata."""
        created = not self.output_dir.exists()
        try:
            return self._train()
        except BaseException:
            # A run that dies before its first checkpoint leaves nothing to resume: a folder this run created is
            # removed, so no half-written output (metrics, weights without their config) is left behind.
            if created and self.dist.is_main and not ckpt.has_checkpoint(self.output_dir):
                shutil.rmtree(self.output_dir, ignore_errors=True)
            raise

    def _train(self) -> dict[str, Any]:
        args = self.args
        self.output_dir.mkdir(parents=True, exist_ok=True)
        # a bar with running loss/accuracy on a terminal; a plain line per log step otherwise
        shown = self.show_progress and self.dist.is_main
        reporter = ProgressBar("meta-training", args.episodes, enabled=shown, info=True, transient=False)
        try:  # the bar is stopped whatever happens below
            if ckpt.has_checkpoint(self.output_dir):
                if not self.resume:
                    raise FewIntentError(
                        f"{self.output_dir} holds a checkpoint of an unfinished run: pass --resume to continue it, "
                        "or choose another output directory"
                    )
                self._restore()
                reporter.print(f"resumed at episode {self.step * self.per_step}")
            else:
                if self.resume:
                    reporter.print(f"no checkpoint in {self.output_dir}: starting from scratch")
                metrics = self.output_dir / METRICS_FILE
                if self.dist.is_main and metrics.exists():
                    metrics.unlink()
                if self.valid:
                    self.initial_valid = self.evaluate()
                    self._consider(self.initial_valid, 0)
                    self._log({"episode": 0, **self.initial_valid, "best": True})
                    reporter.print(f"before training: valid acc {self.initial_valid['valid_acc']:.4f}")
            window = self.window
            run_start = time.perf_counter()
            started = run_start - self.elapsed
            episodes_at_start = self.step * self.per_step
            while self.step < self.total_steps and not self.stopped_early:
                episodes = self._train_step(window)
                self.elapsed = time.perf_counter() - started
                out_of_time = args.max_time_s is not None and self._all_out_of_time(self.elapsed >= args.max_time_s)
                log = self.step % args.log_every == 0 or self.step == self.total_steps
                loss = sum(x for x, _ in window) / len(window)
                acc = sum(y for _, y in window) / len(window)
                info = f"loss {loss:.3f} acc {acc:.3f}"
                if log:
                    record = {"episode": episodes, "step": self.step, "loss": loss, "acc": acc}
                    if self.algo.learned_temperature is not None:
                        record["temperature"] = self.algo.learned_temperature
                    self._log({**record, "elapsed_s": round(self.elapsed, 2)})
                before = (self.step - 1) * self.per_step
                due = args.eval_every and episodes // args.eval_every > before // args.eval_every
                if self.valid and (due or out_of_time):
                    result = self.evaluate()
                    self.stopped_early = self._consider(result, episodes)
                    self._log({"episode": episodes, **result, "best": self.best["episode"] == episodes})
                    reporter.print(
                        f"episode {episodes}: {info} | valid {result['valid_acc']:.4f} (best {self.best['acc']:.4f})"
                    )
                    info += f" val {result['valid_acc']:.3f}"
                reporter.update(episodes, info)
                if log and not reporter.live:
                    reporter.print(f"episode {episodes}: {info}")
                if args.checkpoint_every and (
                    episodes // args.checkpoint_every > before // args.checkpoint_every
                    or self.stopped_early
                    or out_of_time
                ):
                    self._save_checkpoint()
                if self.on_step is not None:
                    self.on_step(episodes)
                if out_of_time:
                    reporter.print(f"max_time_s {args.max_time_s:g} reached at episode {episodes}: stopping")
                    self.out_of_time = True
                    break
        finally:
            reporter.close()
        trained = self.step * self.per_step
        return self._finish(trained, episodes_at_start, time.perf_counter() - run_start)

    def _train_step(self, window: deque[tuple[float, float]]) -> int:
        args = self.args
        torch.manual_seed(_step_seed(args.seed, self.step, self.dist.rank))  # dropout: same on resume
        self.encoder.model.train(args.dropout)
        self.optimizer.zero_grad(set_to_none=False)
        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        losses, accs = [], []
        for j in range(args.meta_batch):
            index = (self.step * self.dist.world + self.dist.rank) * args.meta_batch + j
            m = self.algo.accumulate(self.sampler.episode(index), 1.0 / args.meta_batch)
            losses.append(m["loss"])
            accs.append(m["acc"])
        grads = [p.grad for p in self.params if p.grad is not None]
        stats = torch.tensor([sum(losses) / len(losses), sum(accs) / len(accs)], dtype=torch.float32)
        self.dist.all_reduce_mean([*grads, stats.to(grads[0].device)] if grads else [stats])
        if args.max_grad_norm > 0:
            nn.utils.clip_grad_norm_(self.params, args.max_grad_norm)
        if not math.isfinite(float(stats[0])):
            raise FewIntentError(
                f"meta-training diverged at episode {(self.step + 1) * self.per_step}: the loss is {float(stats[0])}; "
                f"lower lr (now {args.lr:g}) or max_grad_norm (now {args.max_grad_norm:g}, 0 = off)"
            )
        self.optimizer.step()
        self.encoder.model.eval()
        self.step += 1
        window.append((float(stats[0]), float(stats[1])))
        return self.step * self.per_step

    def _all_out_of_time(self, mine: bool) -> bool:
        """One decision for every rank (each has its own clock): stop when any rank's budget is spent."""
        flag = torch.tensor([float(mine)], device=self.dist.device)
        self.dist.all_reduce_sum([flag])
        return bool(flag.item() > 0)

    def _save_checkpoint(self) -> None:
        if self.dist.is_main:
            tensors, state = self._checkpoint_payload()
            ckpt.save_checkpoint(self.output_dir, tensors, state)
        self.dist.barrier()

    def _finish(self, trained: int, episodes_at_start: int, run_seconds: float) -> dict[str, Any]:
        args = self.args
        if self.best_state is not None:
            load_lora_state(self.encoder, self.best_state)
        final_valid = self.evaluate() if self.valid else None
        this_run = trained - episodes_at_start
        summary: dict[str, Any] = {
            "episodes_trained": trained,
            "best_episode": self.best["episode"] if self.valid else trained,
            "stopped_early": self.stopped_early,
            "stopped_for_time": self.out_of_time,
            "valid_initial": self.initial_valid,
            "valid_best": final_valid,
            "wall_time_s": round(self.elapsed, 1),
            "episodes_per_s": round(this_run / run_seconds, 3) if run_seconds > 0 and this_run else None,
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "world_size": self.dist.world,
            "device": str(self.dist.device),
            "torch_threads": torch.get_num_threads(),
        }
        if self.dist.device.type == "cuda":
            summary["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(self.dist.device) / 2**20, 1)
            summary["gpu"] = torch.cuda.get_device_name(self.dist.device)
        if self.dist.is_main:
            from fewintent.version import __version__

            meta: dict[str, Any] = {
                "format": ADAPTER_FORMAT,
                "format_version": 1,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "fewintent_version": __version__,
                "algorithm": args.algorithm.value,
                "distance": args.distance.value,
                "temperature": self.algo.learned_temperature or args.temperature,
                "reject_at": getattr(self.algo, "learned_reject_at", None),
                "ridge_lambda": getattr(self.algo, "learned_lambda", None),
                "inner_lr": args.inner_lr,
                "inner_steps": args.inner_steps,
                "inner": args.inner_settings().to_dict(),
                "training": args.to_dict(),
                "data": [c.summary() for c in self.train_corpora.values()],
                "valid_data": [c.summary() for c in self.valid_corpora.values()],
                "excluded_datasets": list(args.exclude),
                "excluded_domains": list(args.exclude_domains),
                "metrics": summary,
            }
            save_adapter(self.encoder, self.output_dir, self.lora, meta)
            self._log({"episode": trained, "final": True, **(final_valid or {})})
            if not self.keep_checkpoint:
                ckpt.remove_checkpoint(self.output_dir)
        self.dist.barrier()
        return summary


def _range(value: int | list[int]) -> int | tuple[int, int]:
    if isinstance(value, int):
        return value
    if len(value) not in (1, 2):
        raise FewIntentError(f"expected a number or [lo, hi], got {value}")
    return (int(value[0]), int(value[-1]))
