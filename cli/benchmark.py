"""``fewintent benchmark``: accuracy, OOS quality and speed against the baselines users would pick instead."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.markup import escape

from fewintent.cli._common import console, guarded, refuse_model_directory
from fewintent.errors import training_parts


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


QUICK_OUT = Path("runs/benchmark-quick")
"""Where ``--quick`` writes unless told otherwise: the committed data/benchmarks stays as it is."""


@guarded
def benchmark(
    data_dir: Path = typer.Option(
        None,
        "--data-dir",
        help="Datasets folder, searched first; then $FEWINTENT_DATASETS, the downloaded corpora (`fewintent datasets "
        "download`), ../shared/datasets.",
    ),
    protocols: str = typer.Option(
        "fullway,episodic,oos,speed",
        "--protocols",
        help="Comma list of fullway, episodic, oos, speed, onnx (torch vs ONNX fp32 vs int8), discovery (discover, "
        "to-label, --cv), multilabel (NLU++, every 20-fold and 10-fold split). The last three are not in the default.",
    ),
    methods: str = typer.Option(
        None,
        "--methods",
        help="Comma list (default: frozen-prototype, frozen-logreg, setfit, fewintent-linear (the product default), "
        "fewintent-protonet, fewintent-fomaml, fewintent-fomaml-steps5); also frozen-linear, "
        "fewintent-ALGO-linear-stepsN (ALGO: protonet, fomaml or ridge), a -oos-SCORE suffix, and a -tune suffix "
        "(accurate mode, adapt --tune: fewintent-linear-tune, frozen-linear-tune). The multilabel protocol's "
        "(default): frozen-onevsrest, frozen-ovr-logreg, setfit-onevsrest, fewintent-onevsrest.",
    ),
    datasets: str = typer.Option(None, "--datasets", help="Only these datasets (banking77, clinc150, hwu64, ...)."),
    shots: str = typer.Option("5,10", "--shots", help="Full-way shots (train_K files)."),
    episode_ways: str = typer.Option("5,all", "--episode-ways", help="Episodic ways: numbers and/or 'all'."),
    episode_shots: str = typer.Option("1,5", "--episode-shots", help="Episodic shots."),
    quick: bool = typer.Option(False, "--quick", help="Tiny smoke run: one dataset, few episodes, no SetFit."),
    out: Path = typer.Option(
        None,
        "--out",
        help="Where results.json, report.md, PNGs go. Default: data/benchmarks (runs/benchmark-quick with --quick, "
        "so a smoke run never replaces the committed results).",
    ),
    episodes: int = typer.Option(600, "--episodes", min=1, help="Episodes per episodic setting."),
    base: str = typer.Option(
        "minilm",
        "--base",
        help="Comma-separated registered encoder bases to measure (`fewintent bases`), e.g. minilm,mpnet; every "
        "row records its base.",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of episodes, samples and training."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda (speed adds GPU rows when CUDA exists)."),
    append: bool = typer.Option(
        False, "--append", help="Add/replace rows in the existing results.json instead of starting it anew."
    ),
    missing_only: bool = typer.Option(
        False, "--missing-only", help="With --append: run only cells with no measured row yet (resume, fill gaps)."
    ),
    adapter: list[str] = typer.Option(
        None,
        "--adapter",
        help="[PROTOCOL:]ALGO=NAME_OR_PATH, repeatable; {dataset} = the left-out corpus. Default: the base's "
        "leave-one-out adapters (minilm-meta-no-{dataset} for minilm), episodic:ALGO=runs/heldout-domains-ALGO.",
    ),
    setfit_iterations: int = typer.Option(
        None, "--setfit-iterations", help="SetFit num_iterations (default: the library's default recipe)."
    ),
    setfit_max_support: int = typer.Option(
        400, "--setfit-max-support", help="Skip SetFit where the support set has more texts (CPU budget)."
    ),
    setfit_episodes: int = typer.Option(
        20, "--setfit-episodes", min=0, help="Episodes SetFit runs (the first N of each setting; 0 = none)."
    ),
    threads: int = typer.Option(
        None, "--threads", min=1, help="torch CPU threads (default: torch's; 1 is steadier on a busy machine)."
    ),
    speed_queries: int = typer.Option(200, "--speed-queries", min=2, help="Single queries timed per method."),
    steps_episodes: int = typer.Option(
        None,
        "--steps-episodes",
        min=1,
        help="Episodes (or NLU++ splits) the fewintent-*-stepsN and *-tune methods run (first N; default all).",
    ),
    report_only: bool = typer.Option(
        False, "--report-only", help="Only regenerate report.md, plots and the README snippet from results.json."
    ),
    readme: Path = typer.Option(
        None, "--readme", help="Also replace the block between <!-- benchmark:start/end --> in this README."
    ),
) -> None:
    """Benchmark fewintent against frozen-embedding baselines and SetFit; writes JSON + Markdown + PNG."""
    if out is None:
        out = QUICK_OUT if quick else Path("data/benchmarks")
    refuse_model_directory(out, "the results")
    with training_parts("`fewintent benchmark`"):
        from fewintent.bench import BenchConfig, parse_adapter_options, run_benchmark, write_report
        from fewintent.bench.data import default_data_dir

    if report_only:
        snippet = write_report(out, readme=readme)
        console.print(escape(f"report regenerated in {out} (README snippet: {snippet})"), highlight=False)
        return
    config = BenchConfig(
        data_dir=data_dir or default_data_dir(),
        out=out,
        bases=_csv(base),
        protocols=_csv(protocols),
        methods=_csv(methods),
        datasets=_csv(datasets),
        shots=tuple(int(s) for s in _csv(shots)),
        episodes=episodes,
        episode_ways=tuple(w if w == "all" else int(w) for w in _csv(episode_ways)),
        episode_shots=tuple(int(k) for k in _csv(episode_shots)),
        seed=seed,
        device=device,
        append=append or missing_only,
        missing_only=missing_only,
        adapters=parse_adapter_options(adapter or []),
        setfit_iterations=setfit_iterations,
        setfit_max_support=setfit_max_support,
        setfit_episodes=setfit_episodes,
        steps_episodes=steps_episodes,
        threads=threads,
        speed_queries=speed_queries,
    )
    if quick:
        config.quick = True
    ctx = run_benchmark(config, argv=["fewintent", *sys.argv[1:]])
    if readme is not None:
        write_report(out, readme=readme)
    for note in ctx.notes:
        console.print(
            f"[yellow]skipped[/] {escape(str(note['method']))}: {escape(str(note['reason']))}",
            highlight=False,
            soft_wrap=True,
        )
    console.print(
        escape(f"results: {config.out / 'results.json'}, report: {config.out / 'report.md'}"), highlight=False
    )
