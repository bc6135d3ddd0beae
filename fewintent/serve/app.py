"""The HTTP API: a FastAPI app over one model directory (predict, list/add/remove intents, health, docs).

Example:
    >>> app = create_app("models/demo")  # doctest: +SKIP
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import unicodedata
import warnings
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fewintent.errors import EditConflictError, FewIntentError, UnknownIntentError
from fewintent.model.classifier import IntentClassifier
from fewintent.model.names import case_collision
from fewintent.serve.batching import MicroBatcher
from fewintent.serve.memory import return_freed_memory
from fewintent.serve.schemas import (
    AddIntentRequest,
    ErrorResponse,
    HealthResponse,
    IntentChange,
    IntentInfo,
    IntentsResponse,
    ParseRequest,
    ParseResponse,
    PredictRequest,
    PredictResponse,
)
from fewintent.serve.store import ModelStore, PersistError
from fewintent.version import __version__

logger = logging.getLogger("fewintent.serve")

API_KEY_ENV = "FEWINTENT_API_KEY"
SETTINGS_ENV = "FEWINTENT_SERVE_SETTINGS"
DEFAULT_TOP_K = 5  # the CLI's `predict --top-k` default, so /predict items match `predict --json` lines


@dataclass
class ServeSettings:
    """What ``fewintent serve`` options configure; also passed to ``--workers`` processes as JSON."""

    model_dir: str
    api_key: str | None = None
    """Bearer key mutating calls need; None = FEWINTENT_API_KEY from the environment, or no key."""
    max_texts: int = 256
    """Texts per /predict request and examples per POST /intents (more answers 413)."""
    max_chars: int = 2000
    """Characters per text (more answers 413)."""
    max_wait_ms: float = 2.0
    """Longest a request waits for others to share its encoder pass (only when requests arrive together)."""
    max_batch_texts: int = 256
    """Most texts merged into one encoder call."""
    device: str = "auto"
    workers: int = 1
    threads: int | None = None
    """Encoder threads per process; None = every CPU with one worker, an equal share of the CPUs with several."""

    def __post_init__(self) -> None:
        for name in ("max_texts", "max_chars", "max_batch_texts", "workers"):
            if int(getattr(self, name)) < 1:
                raise FewIntentError(f"{name} must be at least 1")
        if self.threads is not None and self.threads < 1:
            raise FewIntentError("threads must be at least 1")
        if self.max_wait_ms < 0:
            raise FewIntentError("max_wait_ms cannot be negative")
        self.model_dir = str(self.model_dir)
        self.api_key = self.api_key or None

    @property
    def max_body_bytes(self) -> int:
        # Worst case JSON: every character a 12-byte surrogate-pair escape, plus quotes and commas, plus the rest.
        return self.max_texts * (self.max_chars * 12 + 8) + 64 * 1024

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeSettings:
        return cls(**json.loads(text))


# ----------------------------------------------------------------- errors: one JSON shape for every status
def error_response(
    status: int, message: str, *, details: list[dict[str, Any]] | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """``{"error": {"status", "type", "message"[, "details"]}}``; ``type`` is a stable name for the status."""
    body: dict[str, Any] = {"status": status, "type": _status_type(status), "message": message}
    if details is not None:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status, headers=headers)


_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    422: "validation_error",
    500: "internal_error",
}


def _status_type(status: int) -> str:
    if status in _TYPES:
        return _TYPES[status]
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


def _install_error_handlers(app: FastAPI) -> None:
    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        message = str(exc.detail)
        if exc.status_code in (404, 405) and message == HTTPStatus(exc.status_code).phrase:
            message = f"{message}: {request.method} {request.url.path} (the API is listed at /docs)"
        return error_response(exc.status_code, message, headers=getattr(exc, "headers", None))

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        details = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]
        first = details[0] if details else {"loc": [], "msg": "invalid request", "type": ""}
        where = ".".join(str(x) for x in first["loc"])
        message = f"malformed request: {where}: {first['msg']}" if where else f"malformed request: {first['msg']}"
        if first["type"] == "json_invalid":
            at = first["loc"][-1] if first["loc"] and isinstance(first["loc"][-1], int) else None
            message = "malformed request: the body is not valid JSON" + (f" (error at character {at})" if at else "")
        elif first["loc"] == ["body"] and first["type"] in ("model_attributes_type", "dict_type"):
            content_type = request.headers.get("content-type", "")
            if "json" not in content_type.lower():
                got = f"'{content_type}'" if content_type else "none"
                return error_response(
                    415,
                    f"the request body must be JSON, sent with the header 'Content-Type: application/json' "
                    f"(Content-Type was {got})",
                    details=details,
                )
            like = {"/intents": '{"name": "...", "examples": ["..."]}', "/model/parse": '{"text": "..."}'}.get(
                request.url.path, '{"texts": ["..."]}'
            )
            message = f"malformed request: the body must be a JSON object, like {like}"
        return error_response(422, message, details=details)

    async def user_error(request: Request, exc: Exception) -> JSONResponse:
        status = 404 if isinstance(exc, UnknownIntentError) else 409 if isinstance(exc, EditConflictError) else 400
        return error_response(status, str(exc))

    async def persist_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, PersistError)
        return error_response(exc.status, str(exc))

    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal server error (details are in the server log)")

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(FewIntentError, user_error)
    app.add_exception_handler(PersistError, persist_error)
    app.add_exception_handler(Exception, internal_error)


class BodyLimitMiddleware:
    """Answers 413 before a body larger than ``max_bytes`` is read (by Content-Length, or while it streams)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"request body is larger than this server's {self.max_bytes} byte limit"
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await error_response(413, message)(scope, receive, send)
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    # FastAPI passes HTTPException through its body parsing; our handler renders it as JSON.
                    raise HTTPException(413, message)
            return msg

        await self.app(scope, counting_receive, send)


def _check_limits(texts: Sequence[str], what: str, settings: ServeSettings) -> None:
    if len(texts) > settings.max_texts:
        raise HTTPException(413, f"{len(texts)} {what} in one request; this server takes at most {settings.max_texts}")
    for i, t in enumerate(texts):
        if len(t) > settings.max_chars:
            raise HTTPException(
                413, f"{what}[{i}] has {len(t)} characters; this server takes at most {settings.max_chars} per text"
            )


_bearer = HTTPBearer(auto_error=False, description="The server's API key (FEWINTENT_API_KEY / --api-key).")


def require_key(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> None:
    """Mutating calls need ``Authorization: Bearer <key>`` when the server has a key."""
    key: str | None = request.app.state.api_key
    if key is None:
        return
    if credentials is None or not hmac.compare_digest(credentials.credentials.encode(), key.encode()):
        raise HTTPException(
            401,
            "this call changes the model: send the header 'Authorization: Bearer <key>' with the server's API key",
            headers={"WWW-Authenticate": "Bearer"},
        )


# ----------------------------------------------------------------- the app
_ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorResponse, "description": HTTPStatus(s).phrase} for s in (400, 413, 415, 422, 500)
}
_EDIT_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    **{s: {"model": ErrorResponse, "description": HTTPStatus(s).phrase} for s in (401, 404, 409, 503, 507)},
}


def create_app(settings: ServeSettings | str | Path, classifier: IntentClassifier | None = None) -> FastAPI:
    """Build the app; loads the model directory now (pass ``classifier`` when it is already in memory).

    The classifier is the one saved in ``settings.model_dir``: edits over HTTP are saved there atomically, and
    saves by other processes (other workers, ``fewintent adapt -o`` on the same directory) are picked up.
    """
    if not isinstance(settings, ServeSettings):
        settings = ServeSettings(model_dir=str(settings))
    store = ModelStore(settings.model_dir, classifier, device=settings.device)
    batcher = MicroBatcher(
        lambda: store.classifier, max_batch_texts=settings.max_batch_texts, max_wait_ms=settings.max_wait_ms
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        try:
            yield
        finally:
            await batcher.close()

    app = FastAPI(
        title="fewintent",
        version=__version__,
        summary="Few-shot intent classification with an out-of-scope fallback; add intents live.",
        lifespan=lifespan,
        # Swagger UI and ReDoc load their scripts from a CDN: blank pages offline. /docs is served from here.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.batcher = batcher
    app.state.api_key = settings.api_key or os.environ.get(API_KEY_ENV) or None
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    _install_error_handlers(app)

    @app.get("/docs", include_in_schema=False, response_class=HTMLResponse)
    async def docs() -> HTMLResponse:
        """The API reference as plain HTML (works offline); the machine-readable schema is /openapi.json."""
        return HTMLResponse(api_reference_html(app.openapi()))

    @app.get("/health", response_model=HealthResponse, tags=["model"])
    async def health() -> HealthResponse:
        """Liveness and what is being served."""
        clf = await store.current()
        return HealthResponse(
            status="degraded" if store.reload_error else "ok",
            model=clf.encoder.name,
            model_dir=str(store.model_dir),
            intents=len(clf.labels),
            oos_label=clf.oos_label,
            multi_label=clf.config.multi_label,
            version=__version__,
            batching=batcher.stats.to_dict(),
            reload_error=store.reload_error,
        )

    @app.post("/predict", response_model=PredictResponse, responses=_ERRORS, tags=["predict"])
    async def predict(body: PredictRequest) -> Any:
        """Classify messages; each prediction is exactly a `fewintent predict --json` line (a multi-label model's
        adds `intents`: every intent that passes, most confident first; empty when out of scope)."""
        _check_limits(body.texts, "texts", settings)
        await store.current()  # reload first if another worker saved an edit
        predictions = await batcher.predict(body.texts, top_k=body.top_k or DEFAULT_TOP_K)
        return JSONResponse({"predictions": [p.to_dict() for p in predictions]})

    @app.post("/model/parse", response_model=ParseResponse, responses=_ERRORS, tags=["predict"])
    async def parse(body: ParseRequest) -> Any:
        """Rasa-compatible: classify one message and answer as Rasa's `POST /model/parse` does (a bot built on
        Rasa's HTTP API can point at this server)."""
        _check_limits([body.text], "text", settings)
        await store.current()
        prediction = (await batcher.predict([body.text], top_k=DEFAULT_TOP_K))[0]
        ranking = [{"name": s.name, "confidence": s.confidence} for s in prediction.intent_ranking]
        intent = {"name": prediction.intent.name, "confidence": prediction.intent.confidence}
        if prediction.is_oos:  # as Rasa's FallbackClassifier: the fallback intent heads the ranking
            ranking = [intent, *ranking]
        answer: dict[str, Any] = {"text": body.text, "intent": intent, "entities": [], "intent_ranking": ranking}
        if prediction.intents is not None:  # multi-label: `intent` is the first that passes (or the OOS label)
            answer["intents"] = [{"name": s.name, "confidence": s.confidence} for s in prediction.intents]
        return JSONResponse(answer)

    @app.get("/intents", response_model=IntentsResponse, tags=["intents"])
    async def list_intents() -> IntentsResponse:
        """Intent names, how many examples each has, and whether tuning (adapt --tune) saw it."""
        clf = await store.current()
        tuned = set(clf.tuned_intents)
        intents = [IntentInfo(name=n, examples=c, tuned=n in tuned) for n, c in clf.counts().items()]
        return IntentsResponse(intents=intents, oos_label=clf.oos_label, multi_label=clf.config.multi_label)

    @app.post(
        "/intents",
        response_model=IntentChange,
        responses=_EDIT_ERRORS,
        dependencies=[Depends(require_key)],
        tags=["intents"],
    )
    async def add_intent(body: AddIntentRequest) -> IntentChange:
        """Add an intent, or replace one's examples; saved to the model directory before it answers."""
        _check_limits(body.examples, "examples", settings)
        name = unicodedata.normalize("NFC", body.name.strip())  # the spelling the classifier stores
        current = await store.current()
        if current.config.multi_label and "+" in name:  # files read 'a+b' as two intents: it could never match
            raise FewIntentError(
                f"intent name '{name[:40]}' contains '+', which joins intents in multi-label files (Rasa's a+b): "
                "give this multi-label model a name without '+'"
            )
        twin = case_collision(name, current.labels)
        clf, created = await store.add_intent(name, body.examples)
        if twin:
            logger.warning("%s", twin)
        return IntentChange(
            name=name,
            created=created,
            examples=clf.counts()[name],
            intents=len(clf.labels),
            warnings=[twin] if twin else [],
        )

    @app.delete(
        "/intents/{name:path}",
        response_model=IntentChange,
        responses=_EDIT_ERRORS,
        dependencies=[Depends(require_key)],
        tags=["intents"],
    )
    async def remove_intent(name: str) -> IntentChange:
        """Remove an intent; saved to the model directory before it answers."""
        clf = await store.remove_intent(name)
        return IntentChange(name=name, removed=True, intents=len(clf.labels))

    return app


# ----------------------------------------------------------------- running it
def _configure_logging(level: str) -> None:
    log = logging.getLogger("fewintent.serve")
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     [fewintent] %(message)s"))
        log.addHandler(handler)
    log.setLevel(level.upper())


def api_reference_html(schema: dict[str, Any]) -> str:
    """Every route of an OpenAPI schema with its summary and description, as a page with no scripts."""
    import html

    info = schema.get("info", {})
    rows = []
    for path, methods in schema.get("paths", {}).items():
        for method, op in methods.items():
            doc = html.escape(op.get("description") or "").replace("\n", "<br>")
            rows.append(
                f"<h3><code>{method.upper()} {html.escape(path)}</code></h3>"
                f"<p><b>{html.escape(op.get('summary', ''))}</b></p><p>{doc}</p>"
            )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(info.get('title', 'API'))}</title>"
        "</head><body style='font-family:sans-serif;max-width:60em;margin:auto'>"
        f"<h1>{html.escape(info.get('title', ''))} {html.escape(str(info.get('version', '')))}</h1>"
        f"<p>{html.escape(info.get('summary', ''))}</p>"
        "<p>This page lists every endpoint of this server with what it does: a plain page that works offline "
        "(the installed FastAPI loads Swagger UI from a CDN, so it is not served here). The full OpenAPI schema, "
        "request and response bodies included, is <a href='/openapi.json'>/openapi.json</a>: load it into any "
        "OpenAPI viewer or client generator.</p>" + "".join(rows) + "</body></html>"
    )


def app_from_env() -> FastAPI:
    """App factory for ``--workers`` processes: settings come as JSON in ``FEWINTENT_SERVE_SETTINGS``."""
    text = os.environ.get(SETTINGS_ENV)
    if not text:
        raise RuntimeError(f"{SETTINGS_ENV} is not set; start the server with `fewintent serve`")
    settings = ServeSettings.from_json(text)
    return_freed_memory()
    # worker processes start with fresh warning filters: keep library deprecation chatter out of the server log
    warnings.filterwarnings("ignore", category=FutureWarning)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    _configure_logging(os.environ.get("FEWINTENT_LOG_LEVEL", "info"))
    _set_threads(settings)
    return create_app(settings)


def _set_threads(settings: ServeSettings) -> None:
    """N processes each encoding on every core would thrash; give each its share (or what was asked)."""
    if settings.threads is None and settings.workers <= 1:
        return
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    IntentClassifier.set_threads(settings.threads or max(1, cpus // settings.workers))


def run_server(
    settings: ServeSettings,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    classifier: IntentClassifier | None = None,
) -> None:
    """Serve until interrupted. With ``settings.workers > 1`` each worker process loads its own classifier."""
    import uvicorn

    _configure_logging(log_level)
    if settings.workers == 1:
        _set_threads(settings)
        app = create_app(settings, classifier)
        uvicorn.run(app, host=host, port=port, log_level=log_level)
        return
    os.environ[SETTINGS_ENV] = settings.to_json()
    os.environ["FEWINTENT_LOG_LEVEL"] = log_level
    uvicorn.run(
        "fewintent.serve.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=settings.workers,
        log_level=log_level,
    )
