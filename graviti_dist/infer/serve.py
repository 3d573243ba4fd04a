"""``graviti serve``: the HTTP face of :class:`graviti_dist.infer.predictor.Predictor` (FastAPI on uvicorn).

FastAPI validates requests with the same pydantic models it publishes as OpenAPI
(``/openapi.json``; ``/docs`` lists the routes without fetching anything from the web); every
bad request is a 4xx with ``{"error": ...}`` naming the field, never a 500. Predictions are
looked up, not computed: the predictor holds every node's outputs, and each node's JSON is cached,
so /predict does no model work on the event loop (a request that needs per-task formatting of
many ids runs in a worker thread). Past ``max_pending`` requests in flight, /predict answers
503 with Retry-After.
With a token (``--token-file`` or ``GRAVITI_SERVE_TOKEN``) every route but /health needs
``Authorization: Bearer TOKEN``. Request bodies are capped before they are read whole, and a
client that does not finish sending its request in ``--read-timeout`` seconds is disconnected.
"""

from __future__ import annotations

import gc
import hmac
import json
import logging
import os
import socket
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from graviti_dist.errors import FieldError
from graviti_dist.infer.predictor import Predictor

log = logging.getLogger(__name__)

# Echoed back in answers and error messages: bounded so a request cannot make the answer huge.
_MAX_ID_CHARS, _MAX_NAME_CHARS, _MAX_TASKS = 256, 128, 64
Id = Annotated[StrictStr | StrictInt, Field(description="a raw crawl id, as in the crawl's id column")]
Name = Annotated[StrictStr, Field(max_length=_MAX_NAME_CHARS)]


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ids: list[Id] = Field(min_length=1, description="raw ids to predict for")
    tasks: list[Name] | None = Field(None, max_length=_MAX_TASKS, description="a subset of the model's node tasks (default: all)")
    node_type: Name | None = Field(None, description="needed only when an id exists under several node types")
    embedding: StrictBool = Field(False, description="also return each node's final embedding")
    explain: StrictInt = Field(0, ge=0, description="also return each node's this many most attended in-neighbours "
                               "(last-layer attention, heads averaged: raw id, node type, relation, weight, ts)")


class PredictResponse(BaseModel):
    predictions: dict[str, dict] = Field(description="per id: node_type and per-task predictions (and embedding)")
    unknown: dict[str, str] = Field(description="ids that could not be answered, with the reason")


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: Id
    k: StrictInt = Field(10, ge=1, le=1000)
    task: Name | None = Field(None, description="the link task to rank with (default: the model's first)")


def _body_cap(app, max_bytes: int):
    """ASGI middleware: a body beyond ``max_bytes`` gets 413 as soon as its size is known (the
    Content-Length header, or the bytes received so far), before more of it is read; the app
    gets the body (at most ``max_bytes``) replayed."""

    async def capped(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            return await _too_large(send, max_bytes)
        chunks, size, message = [], 0, {"more_body": True}
        while message.get("more_body", False):
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > max_bytes:
                return await _too_large(send, max_bytes)
        replayed = {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        async def replay():
            nonlocal replayed
            if replayed is None:
                return await receive()  # after the body: the client's disconnect, when it comes
            message, replayed = replayed, None
            return message

        await app(scope, replay, send)

    return capped


async def _too_large(send, max_bytes: int) -> None:
    body = json.dumps({"error": f"request body over {max_bytes:,} bytes"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _check_token(token: str | None):
    def check(request: Request) -> None:
        if token is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise HTTPException(401, "missing or wrong bearer token (Authorization: Bearer TOKEN)")
    return check


class _JsonAnswers:
    """/predict answers as JSON bytes. The common request (all tasks, no embedding) is a join of
    each node's cached JSON: 1024 ids take ~1 ms instead of the ~16 ms of building and encoding
    their dicts, which under 8 mixed clients held single-id requests behind them (p99 92 ms).
    With up to ``cached_nodes`` nodes every fragment is made at start-up; beyond, on first use
    (the newest ``cached_nodes`` kept)."""

    def __init__(self, predictor: Predictor, cached_nodes: int):
        self.predictor = predictor
        self.all_tasks = predictor.tasks_for(None)
        self.table: dict[tuple, bytes] = {}
        self.lazy = lru_cache(maxsize=cached_nodes)(self._fragment)
        if predictor.num_nodes <= cached_nodes:
            self._warm()

    def _fragment(self, raw: str, node_type: str, part: int, local: int) -> bytes:
        return orjson.dumps(self.predictor.entries([(raw, node_type, part, local)], self.all_tasks, False)[raw])

    def _warm(self, chunk: int = 8192) -> None:
        items = [(raw, node_type, *where) for (node_type, raw), where in self.predictor.index.items()]
        for start in range(0, len(items), chunk):
            found = items[start:start + chunk]
            entries = self.predictor.entries(found, self.all_tasks, False)
            self.table.update((item, orjson.dumps(entries[item[0]])) for item in found)

    def is_quick(self, tasks: list[str] | None, embedding: bool, explain: int = 0) -> bool:
        return tasks is None and not embedding and not explain

    def answer(self, ids: list[str], tasks: list[str] | None, node_type: str | None, embedding: bool,
               explain: int = 0) -> bytes:
        found, unknown = self.predictor.resolve(ids, node_type)
        if self.is_quick(tasks, embedding, explain):
            joined = b",".join(orjson.dumps(item[0]) + b":" + (self.table.get(item) or self.lazy(*item)) for item in found)
            return b'{"predictions":{' + joined + b'},"unknown":' + orjson.dumps(unknown) + b"}"
        entries = self.predictor.entries(found, self.predictor.tasks_for(tasks), embedding, explain)
        return orjson.dumps({"predictions": entries, "unknown": unknown})


def create_app(predictor: Predictor, max_ids: int = 1024, token: str | None = None, max_pending: int = 256,
               cached_nodes: int = 1 << 20):
    """The service's routes around a loaded ``predictor`` (an ASGI app)."""
    app = FastAPI(title="graviti-dist predictions", version="1", docs_url=None, redoc_url=None,
                  description="Multi-task predictions of a trained graviti-dist GAT over its partitions.")
    answers = _JsonAnswers(predictor, cached_nodes)
    pending = 0  # /predict requests in flight (the event loop is one thread: a plain counter)
    auth = [Depends(_check_token(token))]

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}" for e in exc.errors()]
        return JSONResponse(status_code=422, content={"error": "invalid request: " + "; ".join(problems)[:2000]})

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(status_code=exc.status_code, content={"error": exc.detail}, headers=exc.headers)

    @app.get("/health")
    def health() -> dict:
        """Liveness and what is loaded."""
        return {"status": "ok", "nodes": predictor.num_nodes, "tasks": sorted(predictor.tasks), "max_ids": max_ids,
                "explain_max": predictor.explain_max,
                "task_epochs": predictor.run.task_epoch}  # per-task selection: the epoch each task answers from

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        rows = "".join(f"<li><code>{', '.join(sorted(r.methods))} {r.path}</code>: {(r.endpoint.__doc__ or '').strip()}</li>"
                       for r in app.routes if getattr(r, "include_in_schema", False))
        return HTMLResponse(f"<h1>{app.title}</h1><ul>{rows}</ul><p>Schemas: <a href='/openapi.json'>/openapi.json</a></p>")

    @app.post("/predict", response_model=PredictResponse, dependencies=auth)
    async def predict(body: PredictRequest) -> dict:
        """Per-id, per-task predictions from each node's full neighbourhood."""
        if len(body.ids) > max_ids:
            raise HTTPException(413, f"{len(body.ids)} ids in one request; at most {max_ids} (split the batch)")
        too_long = next((i for i in body.ids if isinstance(i, str) and len(i) > _MAX_ID_CHARS), None)
        if too_long is not None:
            raise HTTPException(422, f"invalid request: ids: an id of {len(too_long)} characters; at most {_MAX_ID_CHARS}")
        nonlocal pending
        if pending >= max_pending:
            raise HTTPException(503, f"busy: {pending} requests in flight; retry shortly", headers={"Retry-After": "1"})
        ids, tasks = [str(i) for i in body.ids], body.tasks
        pending += 1
        try:
            if tasks is not None:
                predictor.tasks_for(tasks)  # unknown tasks: 422 before any work
            predictor.check_explain(body.explain)
            args = (ids, tasks, body.node_type, body.embedding, body.explain)
            if answers.is_quick(tasks, body.embedding, body.explain) or len(ids) <= 64:
                content = answers.answer(*args)
            else:
                content = await run_in_threadpool(answers.answer, *args)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        finally:
            pending -= 1
        return Response(content, media_type="application/json")

    @app.post("/recommend", dependencies=auth)
    def recommend(body: RecommendRequest) -> dict:
        """Top-k new items for a user by the trained link head, items already linked left out."""
        try:
            return predictor.recommend(str(body.user_id), body.k, body.task)
        except LookupError as exc:  # an unknown user, or a model without a link task
            raise HTTPException(404, str(exc)) from None
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None

    # 1024 ids of 256 characters in JSON stay under 1 MiB; the cap scales with --max-ids.
    return _body_cap(app, max(1 << 20, max_ids * (_MAX_ID_CHARS + 8)))


def server_config(app, read_timeout: float = 10.0, **options):
    """The uvicorn settings graviti serve runs with; ``options`` go to ``uvicorn.Config`` (host, port).
    Keep-alive connections idle over 5 s are closed, a request not read whole within
    ``read_timeout`` seconds has its connection closed (slow_clients.py), and beyond 512 open
    connections new ones get 503."""
    import uvicorn

    from graviti_dist.infer.slow_clients import deadline_protocol

    return uvicorn.Config(app, log_level="warning", http=deadline_protocol(read_timeout), timeout_keep_alive=5,
                          limit_concurrency=512, **options)


def run_server(run: str, partitions: str, *, host: str = "127.0.0.1", port: int = 8000, max_ids: int = 1024,
               device: str = "cpu", token_file: str | None = None, read_timeout: float = 10.0,
               select: str = "per_task", explain_max: int = 10) -> None:
    """Bind the port, load the run and partitions, then serve until interrupted. The port is taken
    first: a port in use or out of range is refused in a second, not after loading everything."""
    if max_ids < 1:
        raise FieldError("max_ids", f"must be at least 1, got {max_ids}")
    if not read_timeout > 0:
        raise FieldError("read_timeout", f"must be positive, got {read_timeout}")
    if explain_max < 0:
        raise FieldError("explain_max", f"must be 0 (no explanations) or more, got {explain_max}")
    token = _read_token(token_file)
    if token is None and host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s without a token: anyone who reaches it can query the model; pass --token-file "
                    "(or set GRAVITI_SERVE_TOKEN)", host)
    sock = _bind(host, port)
    predictor = Predictor(run, partitions, device, select, explain_max)
    app = create_app(predictor, max_ids, token)
    # What start-up built lives as long as the service: out of the collector's sight, a full
    # collection no longer walks it in the middle of a request (1024-id p99 fell from 330 to 36 ms).
    gc.collect()
    gc.freeze()
    print(f"serving {predictor.num_nodes:,} nodes, tasks {', '.join(sorted(predictor.tasks))} on http://{host}:{port} "
          f"(routes: /docs){' with a bearer token' if token else ''}", flush=True)
    import uvicorn

    server = uvicorn.Server(server_config(app, read_timeout))
    server.run(sockets=[sock])


def _read_token(token_file: str | None) -> str | None:
    if token_file is None:
        return os.environ.get("GRAVITI_SERVE_TOKEN") or None
    try:
        token = Path(token_file).read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise FieldError("token_file", f"{token_file}: cannot read ({exc})") from None
    if not token:
        raise FieldError("token_file", f"{token_file}: empty")
    return token


def _bind(host: str, port: int) -> socket.socket:
    if not 0 < port < 65536:
        raise FieldError("port", f"must be between 1 and 65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FieldError("host", f"{host!r} does not resolve: {exc.strerror}") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise FieldError("port", f"cannot listen on {host}:{port}: {exc.strerror} (another server there? choose "
                                 "another --port)") from None
    sock.listen(2048)
    return sock
