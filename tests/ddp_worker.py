"""One rank of the 2-process (gloo) meta-training test; run by tests/test_meta.py through torch.distributed.run.

Usage: python -m torch.distributed.run --nproc_per_node 2 tests/ddp_worker.py ARGS.json OUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from fewintent.encoder.lora import lora_state
from fewintent.meta.args import MetaTrainingArguments
from fewintent.meta.trainer import MetaTrainer


def main() -> None:
    torch.set_num_threads(1)
    args = MetaTrainingArguments.from_dict(json.loads(Path(sys.argv[1]).read_text()))
    out = Path(sys.argv[2])
    trainer = MetaTrainer(args, out / "adapter", progress=False)
    summary = trainer.train()
    rank = trainer.dist.rank
    save_file(
        {k: v.contiguous() for k, v in lora_state(trainer.encoder).items()}, str(out / f"rank{rank}.safetensors")
    )
    (out / f"rank{rank}.json").write_text(json.dumps({"world_size": summary["world_size"], "rank": rank}))


if __name__ == "__main__":
    main()
