"""Bench layer: protocols (full-way K-shot, episodic held-out domains, OOS, speed), baselines, the report."""

from fewintent.bench.config import BenchConfig, parse_adapter_options
from fewintent.bench.episodes import BenchEpisode, EpisodeSpec, build_episodes, episodes_fingerprint
from fewintent.bench.metrics import auroc, mean_ci95
from fewintent.bench.report import write_report
from fewintent.bench.runner import run_benchmark

__all__ = [
    "BenchConfig",
    "BenchEpisode",
    "EpisodeSpec",
    "auroc",
    "build_episodes",
    "episodes_fingerprint",
    "mean_ci95",
    "parse_adapter_options",
    "run_benchmark",
    "write_report",
]
