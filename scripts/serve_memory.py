"""Peak resident memory (VmHWM) of a real `fewintent serve` process, stage by stage, on loopback.

Starts the server on a copy of MODEL_DIR (edits are saved there) on a free 127.0.0.1 port, then reads
/proc/PID/status after each stage: started; 200 single messages (HTTP p50); 20 requests of 32 messages
(texts/s); a live edit (POST /intents, one predict, DELETE); one request of 64 messages of 2,000 characters; one of
256 (the server's --max-texts default, each at its --max-chars default); 60 single messages again. VmHWM is the
peak so far, so each stage's value includes the ones before it. Prints one JSON line:

    python scripts/serve_memory.py models/demo-int8 --threads 1
    python scripts/serve_memory.py models/demo-int8 --pythonpath /tmp/old-checkout   # another tree's code
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

WORDS = (
    "order refund card charged twice bike repair open tomorrow rental price person agent weather account "
    "password delivery late broken screen replace warranty store hours cancel subscription invoice"
).split()
SHORT = [
    "where is my order",
    "can I get a refund for this",
    "what time do you open tomorrow",
    "my card was charged twice",
    "I want to talk to a person",
    "how much does a rental cost for a day",
    "is my bike repaired yet",
    "what's the weather like in Paris",
]
EDIT = {"name": "lost_luggage", "examples": ["my suitcase did not arrive", "I lost my bag", "where is my luggage"]}


def memory(pid: int) -> dict[str, float]:
    """VmHWM and VmRSS of ``pid`` in MB."""
    text = Path(f"/proc/{pid}/status").read_text()
    found = {k: re.search(rf"{k}:\s+(\d+)", text) for k in ("VmHWM", "VmRSS")}
    return {k: round(int(m.group(1)) / 1024, 1) for k, m in found.items() if m}


def long_text(rng: random.Random, chars: int) -> str:
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < chars:
        words.append(rng.choice(WORDS))
    return " ".join(words)[:chars]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def predict(client: httpx.Client, texts: list[str]) -> None:
    r = client.post("/predict", json={"texts": texts})
    r.raise_for_status()


def stages(client: httpx.Client, pid: int, singles: int) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {"started": memory(pid)}
    lat = []
    for i in range(singles):
        t = time.perf_counter()
        predict(client, [SHORT[i % len(SHORT)]])
        lat.append(time.perf_counter() - t)
    rows["singles"] = {**memory(pid), "p50_ms": round(statistics.median(lat[10:]) * 1000, 2)}
    t = time.perf_counter()
    for i in range(20):
        predict(client, [f"{SHORT[(i + j) % len(SHORT)]} {j}" for j in range(32)])
    rows["batch32"] = {**memory(pid), "texts_per_s": round(20 * 32 / (time.perf_counter() - t), 1)}
    client.post("/intents", json=EDIT).raise_for_status()
    predict(client, ["where is my suitcase"])
    client.delete(f"/intents/{EDIT['name']}").raise_for_status()
    rows["edit"] = memory(pid)
    rng = random.Random(0)
    for n in (64, 256):
        t = time.perf_counter()
        predict(client, [long_text(rng, 2000) for _ in range(n)])
        rows[f"long{n}"] = {**memory(pid), "seconds": round(time.perf_counter() - t, 2)}
    lat = []
    for i in range(60):
        t = time.perf_counter()
        predict(client, [SHORT[i % len(SHORT)]])
        lat.append(time.perf_counter() - t)
    rows["singles_again"] = {**memory(pid), "p50_ms": round(statistics.median(lat) * 1000, 2)}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description="Peak memory of a `fewintent serve` process, stage by stage.")
    parser.add_argument("model_dir", type=Path, help="Model directory (copied: the live edit is saved in the copy).")
    parser.add_argument("--threads", type=int, default=1, help="The server's --threads (default 1).")
    parser.add_argument("--singles", type=int, default=200, help="Single-message requests for the p50 (default 200).")
    parser.add_argument("--pythonpath", help="Import fewintent from this tree instead (a baseline checkout).")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="serve-memory-"))
    model = work / "model"
    shutil.copytree(args.model_dir, model)
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    cmd = [sys.executable, "-c", "from fewintent.cli.main import app; app()"]
    if args.pythonpath:
        env["PYTHONPATH"] = args.pythonpath
    cmd += ["serve", str(model), "--port", str(port), "--threads", str(args.threads)]
    with open(work / "server.log", "w+") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
                while True:
                    if proc.poll() is not None:
                        log.seek(0)
                        raise SystemExit(f"the server exited:\n{log.read()}")
                    try:
                        if client.get("/health").status_code == 200:
                            break
                    except httpx.TransportError:
                        time.sleep(0.05)
                ready = time.perf_counter() - started
                rows = stages(client, proc.pid, args.singles)
        finally:
            proc.terminate()
            proc.wait(10)
            shutil.rmtree(work, ignore_errors=True)
    rows["started"]["seconds"] = round(ready, 2)
    print(json.dumps({"model": str(args.model_dir), "load_average": os.getloadavg()[0], **rows}))


if __name__ == "__main__":
    main()
