"""``fewintent serve``: the HTTP API over a model directory (FastAPI + uvicorn, the ``[serve]`` extra)."""

from __future__ import annotations

import errno
import ipaddress
import socket
from pathlib import Path

import typer
from rich.markup import escape

from fewintent.cli._common import check_threads, err_console, guarded, set_threads
from fewintent.errors import FewIntentError, extra_install
from fewintent.model.persistence import is_model_dir


def check_address(host: str, port: int) -> None:
    """Fail in one line, before the model loads, when ``host:port`` cannot be bound (unknown host, port in use)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as e:
        raise FewIntentError(f"--host {host}: not an address of this machine ({e})") from e
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            sock.bind(address)
        except OSError as e:
            hint = "; pick another with --port" if e.errno == errno.EADDRINUSE else ""
            raise FewIntentError(f"cannot listen on {host}:{port} ({e.strerror}){hint}") from e


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@guarded
def serve(
    model_dir: Path = typer.Argument(..., help="Model directory written by `fewintent adapt`; edits are saved here."),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to bind. Anything but loopback exposes the model to your network."
    ),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="TCP port."),
    workers: int = typer.Option(
        1,
        "--workers",
        min=1,
        max=64,
        help="Server processes, each with its own model copy (~0.4-0.7 GB); an edit in one is reloaded by the others.",
    ),
    api_key: str = typer.Option(
        None,
        "--api-key",
        envvar="FEWINTENT_API_KEY",
        show_envvar=True,
        help="Key that POST/DELETE /intents need as 'Authorization: Bearer KEY'. Prefer the environment variable.",
    ),
    max_texts: int = typer.Option(256, "--max-texts", min=1, help="Texts per request (more answers 413)."),
    max_chars: int = typer.Option(2000, "--max-chars", min=1, help="Characters per text (more answers 413)."),
    max_wait_ms: float = typer.Option(
        2.0, "--max-wait-ms", min=0.0, max=100.0, help="Longest wait to batch concurrent requests together."
    ),
    threads: int = typer.Option(
        None,
        "--threads",
        min=1,
        help="Encoder CPU threads per worker (default: all CPUs, shared out with --workers). Use 1-2 on a busy host.",
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    log_level: str = typer.Option("info", "--log-level", help="critical, error, warning, info or debug."),
) -> None:
    """Serve MODEL_DIR over HTTP: POST /predict, GET/POST/DELETE /intents, GET /health; API docs at /docs."""
    try:
        from fewintent.serve.app import ServeSettings, run_server
        from fewintent.serve.memory import return_freed_memory
    except ImportError as e:
        raise FewIntentError(
            f"`fewintent serve` needs the [serve] extra ({e.name} is missing): {extra_install('serve')}"
        ) from e
    if log_level.lower() not in ("critical", "error", "warning", "info", "debug"):
        raise FewIntentError(f"unknown --log-level '{log_level}': use critical, error, warning, info or debug")
    check_threads(threads)
    check_address(host, port)
    settings = ServeSettings(
        model_dir=str(model_dir.expanduser().absolute()),
        api_key=api_key,
        max_texts=max_texts,
        max_chars=max_chars,
        max_wait_ms=max_wait_ms,
        device=device,
        workers=workers,
        threads=threads,
    )
    classifier = None
    return_freed_memory()  # before the model loads; --workers processes do it in app_from_env
    if workers == 1:
        from fewintent.model import IntentClassifier

        set_threads(threads)  # before the load: an ONNX session fixes its thread count when it is created
        classifier = IntentClassifier.load(model_dir, device=device)  # a bad directory fails here, in one line
    elif not is_model_dir(model_dir):
        raise FewIntentError(f"{model_dir}: not a fewintent model directory (create one with `fewintent adapt`)")
    if not settings.api_key:
        who = "any user or process on this host" if _is_loopback(host) else f"anyone who can reach {host}"
        err_console.print(
            f"[yellow]warning:[/] no API key: {escape(who)} can add and remove intents. Set FEWINTENT_API_KEY.",
            highlight=False,
            soft_wrap=True,
        )
    run_server(settings, host=host, port=port, log_level=log_level.lower(), classifier=classifier)
