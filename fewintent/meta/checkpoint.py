"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON, swapped in atomically."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from fewintent.errors import FewIntentError

CHECKPOINT_DIR = "checkpoint"
TENSORS = "state.safetensors"
STATE = "trainer_state.json"


def optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimiser's state dict into named tensors and a JSON-able rest."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_flat(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], rest: dict[str, Any]
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for idx, scalars in rest.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(scalars)
    optimizer.load_state_dict({"state": state, "param_groups": rest["param_groups"]})


def save_checkpoint(directory: Path, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    """Write ``directory/checkpoint`` through a temporary sibling and renames: a kill mid-write keeps the old one."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / CHECKPOINT_DIR
    tmp = Path(tempfile.mkdtemp(prefix=".checkpoint.tmp-", dir=directory))
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / TENSORS))
        (tmp / STATE).write_text(json.dumps(state, indent=1) + "\n")
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        old = directory / f".checkpoint.old-{os.getpid()}"
        if final.exists():
            os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _recover(directory: Path) -> Path:
    final = directory / CHECKPOINT_DIR
    if not final.exists():  # killed between the two renames: the previous checkpoint is the .old one
        for old in sorted(directory.glob(".checkpoint.old-*"), key=lambda p: p.stat().st_mtime, reverse=True):
            if (old / STATE).is_file() and (old / TENSORS).is_file():
                os.rename(old, final)
                break
    return final


def has_checkpoint(directory: Path) -> bool:
    final = _recover(directory)
    return (final / STATE).is_file() and (final / TENSORS).is_file()


def load_checkpoint(directory: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The checkpoint's tensors and state; a truncated or garbled one is refused in one line."""
    from safetensors import SafetensorError

    final = _recover(directory)
    try:
        state = json.loads((final / STATE).read_text())
        tensors = load_file(str(final / TENSORS))
    except (OSError, ValueError, SafetensorError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise unreadable(final, reason) from e
    if not isinstance(state, dict):
        raise unreadable(final, f"{STATE} is not a JSON object")
    return tensors, state


def unreadable(final: Path, reason: str) -> FewIntentError:
    """The one error for a checkpoint that cannot be resumed from."""
    return FewIntentError(f"{final}: checkpoint is unreadable ({reason}); delete that folder to start the run over")


def remove_checkpoint(directory: Path) -> None:
    shutil.rmtree(directory / CHECKPOINT_DIR, ignore_errors=True)
    for stale in directory.glob(".checkpoint.*"):
        shutil.rmtree(stale, ignore_errors=True)
