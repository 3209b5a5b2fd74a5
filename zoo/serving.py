"""``zoo serve``: an OpenAI-compatible HTTP server over a zoo model's inference form (BitNet b1.58
packed ternary weights, arXiv 2402.17764; Q-Sparse top-K inputs, arXiv 2407.10969; the compiled
decode step), on FastAPI and uvicorn (the ``serve`` extra).

Why FastAPI + uvicorn rather than LitServe: the OpenAI routes are four small handlers here, the
request schemas are pydantic models that answer malformed input with a 4xx by themselves, and
LitServe itself runs on FastAPI + uvicorn with worker processes that would each load a copy of the
model; one process with one model is what a CPU machine with two cores can hold and feed.

Routes: ``GET /v1/models``, ``POST /v1/completions``, ``POST /v1/chat/completions`` (a plain
"role: content" template, since the zoo's models are base models), each streamed as server-sent
events with ``"stream": true``. Requests are served one at a time, in arrival order: every piece
of model work runs on one worker thread, so no two requests ever share the model's buffers or
caches, and the event loop stays free to accept and queue the next ones. Errors come back as
OpenAI's ``{"error": {"message", "type"}}`` with a 4xx status, never a crash.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from zoo.text import DEFAULT_SAMPLING, stream_text

MAX_TOKENS_LIMIT = 4096
CHAT_STOP = "\nuser:"  # a base model continuing the template would write the user's next turn


class Sampling(BaseModel):
    """The fields OpenAI's completion and chat requests share; defaults as ``zoo generate``'s,
    except ``max_tokens``, whose default is OpenAI's."""

    model: str | None = None
    max_tokens: int = Field(16, ge=1, le=MAX_TOKENS_LIMIT)  # OpenAI's default
    temperature: float = Field(DEFAULT_SAMPLING["temperature"], ge=0.0)
    top_p: float | None = Field(DEFAULT_SAMPLING["top_p"], gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    n: int = Field(1, ge=1, le=1)


class CompletionRequest(Sampling):
    prompt: str | list[str]


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)


def chat_prompt(messages: list[dict]) -> str:
    """The plain template for base models: one "role: content" line a message, then "assistant:"."""
    lines = [f"{m['role']}: {m['content']}" for m in messages]
    return "\n".join(lines) + "\nassistant:"


def build_app(model, name: str):
    """The FastAPI application serving ``model`` (inference form, tokenizer attached) as ``name``."""
    app = FastAPI(title=f"moezoo: {name}")
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zoo-model")
    turn = asyncio.Lock()

    def error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
        return JSONResponse(status_code=status, content={"error": {"message": message, "type": kind}})

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        if first.get("type") == "json_invalid":
            return error(400, "the request body is not valid JSON")
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        return error(400, f"{where or 'body'}: {first.get('msg', 'invalid')}")

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail), "not_found_error" if exc.status_code == 404 else "invalid_request_error")

    @app.exception_handler(Exception)
    async def server_error(_: Request, exc: Exception) -> JSONResponse:  # the model failed, not the request
        return error(500, f"the model failed on this request: {type(exc).__name__}: {exc}", "server_error")

    def check(request: Sampling, prompt: str) -> dict:
        if request.model not in (None, name):
            raise HTTPException(404, f"model {request.model!r} is not served here; this server has {name!r}")
        if not prompt:
            raise HTTPException(400, "prompt is empty: give at least one character to continue")
        stops = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
        if any(not s for s in stops):
            raise HTTPException(400, "stop: each stop string must be non-empty")
        sampling = {"temperature": request.temperature, "top_k": request.top_k, "top_p": request.top_p, "seed": request.seed}
        return {"max_new_tokens": request.max_tokens, "stop": stops, **sampling}

    async def run(prompt: str, options: dict, report: dict) -> AsyncIterator[str]:
        """The continuation's pieces, each computed on the model's one worker thread, one request at a time."""
        loop = asyncio.get_running_loop()
        max_new_tokens = options.pop("max_new_tokens")
        async with turn:
            pieces: Iterator[str] = await loop.run_in_executor(
                worker, lambda: stream_text(model, prompt, max_new_tokens, report=report, **options)
            )
            try:
                while (piece := await loop.run_in_executor(worker, next, pieces, None)) is not None:
                    yield piece
            finally:  # also when the client went away: the stream is closed on the model's thread
                await asyncio.shield(loop.run_in_executor(worker, pieces.close))

    def respond(request: Sampling, prompt: str, kind: str, wrap):
        """A JSON response, or a server-sent-event stream of chunks, of ``prompt``'s continuation."""
        options, report = check(request, prompt), {}
        prefix = "chatcmpl" if kind == "chat.completion" else "cmpl"  # OpenAI's id prefixes
        ident, created = f"{prefix}-{uuid.uuid4().hex[:24]}", int(time.time())
        envelope = {"id": ident, "created": created, "model": name}

        def usage() -> dict:
            done = report.get("prompt_tokens", 0), report.get("completion_tokens", 0)
            return {"prompt_tokens": done[0], "completion_tokens": done[1], "total_tokens": sum(done)}

        if not request.stream:

            async def whole() -> JSONResponse:
                text = "".join([piece async for piece in run(prompt, options, report)])
                choice = {"index": 0, **wrap(text, final=True), "finish_reason": report["finish_reason"]}
                return JSONResponse({**envelope, "object": kind, "choices": [choice], "usage": usage()})

            return whole()

        async def events() -> AsyncIterator[str]:
            chunk_kind = f"{kind}.chunk" if kind == "chat.completion" else kind
            try:
                async for piece in run(prompt, options, report):
                    choice = {"index": 0, **wrap(piece, final=False), "finish_reason": None}
                    yield f"data: {json.dumps({**envelope, 'object': chunk_kind, 'choices': [choice]})}\n\n"
            except Exception as exc:  # the status line has gone out: the error travels as an event
                failure = {"message": f"the model failed on this request: {type(exc).__name__}: {exc}", "type": "server_error"}
                yield f"data: {json.dumps({'error': failure})}\n\n"
                return
            last = {"index": 0, **wrap("", final=False), "finish_reason": report["finish_reason"]}
            yield f"data: {json.dumps({**envelope, 'object': chunk_kind, 'choices': [last], 'usage': usage()})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "moezoo"}]}

    @app.post("/v1/completions")
    async def completions(request: CompletionRequest):
        prompts = [request.prompt] if isinstance(request.prompt, str) else request.prompt
        if len(prompts) != 1:
            raise HTTPException(400, f"prompt: one prompt a request, got {len(prompts)}")
        response = respond(request, prompts[0], "text_completion", lambda text, final: {"text": text, "logprobs": None})
        return response if request.stream else await response

    @app.post("/v1/chat/completions")
    async def chat(request: ChatRequest):
        if request.messages[-1].role == "assistant":
            raise HTTPException(400, "messages: the last message must be the user's or the system's, not the assistant's")
        request.stop = [CHAT_STOP, *([request.stop] if isinstance(request.stop, str) else request.stop or [])]

        def wrap(text: str, final: bool) -> dict:
            message = {"role": "assistant", "content": text}
            return {"message": message} if final else {"delta": message}

        prompt = chat_prompt([m.model_dump() for m in request.messages])
        response = respond(request, prompt, "chat.completion", wrap)
        return response if request.stream else await response

    return app


def serve(model, *, name: str, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Runs the server until interrupted (Ctrl-C)."""
    import uvicorn

    print(f"serving {name} on http://{host}:{port}/v1 (OpenAI-compatible; Ctrl-C stops)", flush=True)
    uvicorn.run(build_app(model, name), host=host, port=port, log_level="warning")
