"""``graviti serve``: the HTTP face of :class:`graviti_dist.infer.predictor.Predictor` (FastAPI on uvicorn).

FastAPI validates requests with the same pydantic models it publishes as
OpenAPI (``/openapi.json``, ``/docs``); every bad request is a 4xx with a
message that names the field, never a 500.
"""

from __future__ import annotations

import socket
from typing import Annotated

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from graviti_dist.errors import FieldError
from graviti_dist.infer.predictor import Predictor

Id = Annotated[StrictStr | StrictInt, Field(description="a raw crawl id, as in the crawl's id column")]


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ids: list[Id] = Field(min_length=1, description="raw ids to predict for")
    tasks: list[str] | None = Field(None, description="a subset of the model's node tasks (default: all)")
    node_type: str | None = Field(None, description="needed only when an id exists under several node types")
    embedding: bool = Field(False, description="also return each node's final embedding")


class PredictResponse(BaseModel):
    predictions: dict[str, dict] = Field(description="per id: node_type and per-task predictions (and embedding)")
    unknown: dict[str, str] = Field(description="ids that could not be answered, with the reason")


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: Id
    k: int = Field(10, ge=1, le=1000)
    task: str | None = Field(None, description="the link task to rank with (default: the model's first)")


def create_app(predictor: Predictor, max_ids: int = 1024) -> FastAPI:
    """The service's routes around a loaded ``predictor``."""
    app = FastAPI(title="graviti-dist predictions", version="1",
                  description="Multi-task predictions of a trained graviti-dist GAT over its partitions.")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}" for e in exc.errors()]
        return JSONResponse(status_code=422, content={"error": "invalid request: " + "; ".join(problems)})

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(status_code=exc.status_code, content={"error": exc.detail})

    @app.get("/health")
    def health() -> dict:
        """Liveness and what is loaded."""
        return {"status": "ok", "nodes": predictor.num_nodes, "tasks": sorted(predictor.tasks),
                "run": str(predictor.run.source), "max_ids": max_ids}

    @app.post("/predict", response_model=PredictResponse)
    def predict(body: PredictRequest) -> dict:
        """Per-id, per-task predictions from each node's full neighbourhood."""
        if len(body.ids) > max_ids:
            raise HTTPException(413, f"{len(body.ids)} ids in one request; at most {max_ids} (split the batch)")
        try:
            return predictor.predict([str(i) for i in body.ids], body.tasks, body.node_type, body.embedding)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None

    @app.post("/recommend")
    def recommend(body: RecommendRequest) -> dict:
        """Top-k new items for a user by the trained link head, items already linked left out."""
        try:
            return predictor.recommend(str(body.user_id), body.k, body.task)
        except LookupError as exc:  # an unknown user, or a model without a link task
            raise HTTPException(404, str(exc)) from None
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None

    return app


def run_server(run: str, partitions: str, *, host: str = "127.0.0.1", port: int = 8000, max_ids: int = 1024,
               device: str = "cpu") -> None:
    """Bind the port, load the run and partitions, then serve until interrupted. The port is taken
    first: a port in use or out of range is refused in a second, not after loading everything."""
    import uvicorn

    if max_ids < 1:
        raise FieldError("max_ids", f"must be at least 1, got {max_ids}")
    sock = _bind(host, port)
    predictor = Predictor(run, partitions, device)
    print(f"serving {predictor.num_nodes:,} nodes, tasks {', '.join(sorted(predictor.tasks))} on http://{host}:{port} "
          f"(OpenAPI: /docs)", flush=True)
    server = uvicorn.Server(uvicorn.Config(create_app(predictor, max_ids), log_level="warning"))
    server.run(sockets=[sock])


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
