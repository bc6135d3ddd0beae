"""Bounded load test of ``fewintent serve`` on loopback, with the same work done in-process for comparison.

Starts its own server on 127.0.0.1 (a free port; no other address can be targeted), then for each scenario
sends a fixed number of requests or stops at a time limit, whichever comes first:

    single text at concurrency 1, 8 and 32; 32-text batches at concurrency 1 and 8.

Each scenario runs over HTTP, then in-process right away (the server idle), so that load from other
processes drifts less between the two. Reports requests/s, texts/s, p50/p99 latency, the server's mean requests
per encoder call (micro-batching), the server process RSS (current and peak), and the in-process numbers
(``IntentClassifier.predict`` at concurrency 1, ``MicroBatcher`` for concurrent users) with the HTTP/in-process
ratios. Writes JSON:

    python scripts/loadtest.py models/demo --out data/benchmarks/serve_load.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

HOST = "127.0.0.1"  # loopback only, by construction
ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = [("single", 1, 1), ("single", 8, 1), ("single", 32, 1), ("batch32", 1, 32), ("batch32", 8, 32)]
FALLBACK_TEXTS = [
    "where is my order",
    "can I get a refund for this",
    "what time do you open tomorrow",
    "my card was charged twice",
    "I want to talk to a person",
    "how much does a rental cost for a day",
    "is my bike repaired yet",
    "what's the weather like in Paris",
]


@dataclass
class Result:
    name: str
    mode: str
    concurrency: int
    texts_per_request: int
    requests: int
    errors: int
    seconds: float
    req_per_s: float
    texts_per_s: float
    p50_ms: float
    p99_ms: float
    mean_requests_per_encoder_call: float | None = None


def _percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))]


def _summary(name, mode, conc, per, latencies, errors, seconds, batching=None) -> Result:
    n = len(latencies)
    return Result(
        name=name,
        mode=mode,
        concurrency=conc,
        texts_per_request=per,
        requests=n,
        errors=errors,
        seconds=round(seconds, 3),
        req_per_s=round(n / seconds, 2) if seconds else 0.0,
        texts_per_s=round(n * per / seconds, 1) if seconds else 0.0,
        p50_ms=round(1000 * statistics.median(latencies), 2) if latencies else float("nan"),
        p99_ms=round(1000 * _percentile(latencies, 99), 2),
        mean_requests_per_encoder_call=batching,
    )


def _payloads(texts: list[str], per: int, count: int) -> list[list[str]]:
    return [[texts[(i * per + j) % len(texts)] for j in range(per)] for i in range(count)]


# ----------------------------------------------------------------- memory of the server process tree
def _rss_kb(pid: int, field: str = "VmRSS") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            out += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        pass
    return out


def tree_rss_mb(pid: int, field: str = "VmRSS") -> float:
    pids = [pid, *_children(pid)]
    return round(sum(_rss_kb(p, field) for p in pids) / 1024, 1)


class RssSampler:
    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, 0.0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.peak = max(self.peak, tree_rss_mb(self.pid))
            await asyncio.sleep(0.1)


# ----------------------------------------------------------------- HTTP
def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_server(args: argparse.Namespace, port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "fewintent.cli.main", "serve", str(args.model_dir), "--host", HOST]
    cmd += ["--port", str(port)]
    cmd += ["--workers", str(args.workers), "--max-wait-ms", str(args.max_wait_ms), "--log-level", "warning"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    env.pop("FEWINTENT_API_KEY", None)
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def wait_ready(client: httpx.AsyncClient, proc: subprocess.Popen[bytes], timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            r = await client.get("/health")
            if r.status_code == 200:
                return r.json()
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.2)
    raise SystemExit("server did not become ready")


async def http_scenario(client, name, conc, per, texts, n_requests, time_limit) -> Result:
    payloads = _payloads(texts, per, n_requests)
    for p in payloads[: max(4, conc)]:  # warm-up (tokenizer caches, connections)
        await client.post("/predict", json={"texts": p})
    before = (await client.get("/health")).json()["batching"]
    latencies: list[float] = []
    errors = 0
    next_i = 0
    deadline = time.perf_counter() + time_limit

    async def user() -> None:
        nonlocal next_i, errors
        while next_i < len(payloads) and time.perf_counter() < deadline:
            body = {"texts": payloads[next_i]}
            next_i += 1
            t0 = time.perf_counter()
            r = await client.post("/predict", json=body)
            if r.status_code == 200 and len(r.json()["predictions"]) == per:
                latencies.append(time.perf_counter() - t0)
            else:
                errors += 1

    start = time.perf_counter()
    await asyncio.gather(*(user() for _ in range(conc)))
    seconds = time.perf_counter() - start
    after = (await client.get("/health")).json()["batching"]
    calls = after["batches"] - before["batches"]
    per_call = round((after["requests"] - before["requests"]) / calls, 2) if calls else None
    return _summary(name, "http", conc, per, latencies, errors, seconds, per_call)


# ----------------------------------------------------------------- in-process
async def _concurrent_users(batcher: Any, payloads: list[list[str]], conc: int, deadline: float) -> list[float]:
    latencies: list[float] = []
    next_i = 0

    async def user() -> None:
        nonlocal next_i
        while next_i < len(payloads) and time.perf_counter() < deadline:
            p = payloads[next_i]
            next_i += 1
            t0 = time.perf_counter()
            await batcher.predict(p, top_k=5)
            latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(user() for _ in range(conc)))
    return latencies


def load_in_process(args: argparse.Namespace) -> Any:
    from fewintent import IntentClassifier

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)  # the same as the server, for a fair ratio
    return IntentClassifier.load(args.model_dir)


async def in_process_scenario(clf, args, name, conc, per, texts) -> Result:
    """The same requests without HTTP: ``predict`` one at a time, or a ``MicroBatcher`` for concurrent users."""
    from fewintent.serve import MicroBatcher

    payloads = _payloads(texts, per, args.requests)
    for p in payloads[:4]:
        clf.predict(p, top_k=5)
    latencies: list[float] = []
    deadline = time.perf_counter() + args.time_limit
    start = time.perf_counter()
    per_call = None
    if conc == 1:
        for p in payloads:
            if time.perf_counter() > deadline:
                break
            t0 = time.perf_counter()
            clf.predict(p, top_k=5)
            latencies.append(time.perf_counter() - t0)
    else:
        async with MicroBatcher(clf, max_wait_ms=args.max_wait_ms) as batcher:
            start = time.perf_counter()
            latencies = await _concurrent_users(batcher, payloads, conc, deadline)
            per_call = batcher.stats.to_dict()["mean_requests_per_batch"]
    return _summary(name, "in_process", conc, per, latencies, 0, time.perf_counter() - start, per_call)


async def run_all(args, texts) -> tuple[list[Result], list[Result], dict[str, Any]]:
    """Each scenario over HTTP, then in-process right after (server idle), so background load drifts less."""
    port = _free_port()
    proc = start_server(args, port)
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    http, in_process = [], []
    try:
        async with httpx.AsyncClient(
            base_url=f"http://{HOST}:{port}", timeout=60, limits=limits, trust_env=False
        ) as client:
            health = await wait_ready(client, proc)
            memory: dict[str, Any] = {"server_rss_mb_idle": tree_rss_mb(proc.pid)}
            clf = await asyncio.to_thread(load_in_process, args)
            stop = asyncio.Event()
            sampler = RssSampler(proc.pid)
            sampling = asyncio.create_task(sampler.run(stop))
            for name, conc, per in SCENARIOS:
                r = await http_scenario(client, name, conc, per, texts, args.requests, args.time_limit)
                print(_row(r), flush=True)
                http.append(r)
                r = await in_process_scenario(clf, args, name, conc, per, texts)
                print(_row(r), flush=True)
                in_process.append(r)
            stop.set()
            await sampling
            memory["server_rss_mb_after"] = tree_rss_mb(proc.pid)
            memory["server_rss_mb_peak_sampled"] = sampler.peak
            memory["server_vmhwm_mb"] = tree_rss_mb(proc.pid, "VmHWM")
            memory["server_processes"] = 1 + len(_children(proc.pid))
            memory["intents"] = health["intents"]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return http, in_process, memory


# ----------------------------------------------------------------- report
def _row(r: Result) -> str:
    batching = f"{r.mean_requests_per_encoder_call:5.2f}" if r.mean_requests_per_encoder_call else "    -"
    return (
        f"{r.mode:10} {r.name:8} c={r.concurrency:<3} n={r.requests:<5} err={r.errors:<3} "
        f"{r.req_per_s:8.1f} req/s {r.texts_per_s:8.1f} texts/s  p50 {r.p50_ms:7.2f} ms  p99 {r.p99_ms:7.2f} ms  "
        f"req/encoder-call {batching}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Bounded loopback load test of `fewintent serve`.")
    parser.add_argument("model_dir", type=Path, help="Model directory written by `fewintent adapt`.")
    parser.add_argument("--requests", type=int, default=400, help="Requests per scenario at most (default 400).")
    parser.add_argument("--time-limit", type=float, default=10.0, help="Seconds per scenario at most (default 10).")
    parser.add_argument("--texts", type=Path, help="Messages to send: an intent file (.jsonl/.csv/.yml).")
    parser.add_argument("--workers", type=int, default=1, help="Server processes (default 1).")
    parser.add_argument("--max-wait-ms", type=float, default=2.0, help="The server's micro-batching wait cap.")
    parser.add_argument("--threads", type=int, help="torch threads for the server and the in-process run.")
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "benchmarks" / "serve_load.json")
    args = parser.parse_args()
    if not 1 <= args.requests <= 100_000 or not 0 < args.time_limit <= 120:
        parser.error("--requests must be 1..100000 and --time-limit 0..120 s: this is a bounded test")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    texts = FALLBACK_TEXTS
    if args.texts:
        from fewintent.data import read_intent_file

        data = read_intent_file(args.texts, for_training=False)
        texts = data.texts + data.oos_texts

    load_before = os.getloadavg()
    http, in_process, memory = asyncio.run(run_all(args, texts))
    load_after = os.getloadavg()
    ratios = [
        {
            "scenario": f"{h.name} c={h.concurrency}",
            "p50_http_over_in_process": round(h.p50_ms / p.p50_ms, 2),
            "req_per_s_http_over_in_process": round(h.req_per_s / p.req_per_s, 2),
        }
        for h, p in zip(http, in_process)
    ]
    for r in ratios:
        print(r)
    print(memory)
    import torch

    from fewintent import __version__

    report = {
        "what": "fewintent serve load test on loopback (client and server on the same machine)",
        "model_dir": str(args.model_dir),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": {
            "platform": platform.platform(),
            "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "fewintent": __version__,
            "load_average_1m_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "http": [asdict(r) for r in http],
        "in_process": [asdict(r) for r in in_process],
        "ratios": ratios,
        "memory": memory,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
