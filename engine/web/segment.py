"""Segment's HTTP tracking API (`/v1/batch`, `/v1/track`, `/v1/identify`), so that the official
Segment and RudderStack client libraries feed the engine unchanged: the write key is one of the
API keys, given as the HTTP Basic user (or as `writeKey` in the body, as the clients also send it).

Unlike `/api/*`, a batch is not refused whole for one bad call: the clients do not retry a 4xx,
so refusing would lose the good calls with the bad. The good calls are stored, each bad one is
answered with its index and reason (and logged), and the answer is 200. A body that cannot be
read at all, or a missing key, is a 4xx with Segment's `{"code", "message"}`.
"""

from __future__ import annotations

import logging
import zlib
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from engine.clock import utcnow
from engine.config.settings import Config
from engine.customers.importing import Importer
from engine.customers.segment import Call, calls
from engine.customers.tracking import store_events
from engine.web.bodies import BadJson, loads
from engine.web.security import API_BODY_LIMIT, basic_user_ok, bearer_ok, key_ok
from engine.web.services import services

log = logging.getLogger("lifecycle.segment")


class Refused(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.response = JSONResponse({"code": code, "message": message}, status_code=status)


async def batch(request: Request) -> JSONResponse:
    return await ingest(request, None)


async def track(request: Request) -> JSONResponse:
    return await ingest(request, "track")


async def identify(request: Request) -> JSONResponse:
    return await ingest(request, "identify")


async def ingest(request: Request, single: str | None) -> JSONResponse:
    """One call (`single` is its type) or a batch of them, each judged alone and stored together."""
    s = services(request)
    try:
        body = _body(await request.body(), request.headers.get("content-encoding", ""))
        if not (basic_user_ok(request, s.api_keys) or bearer_ok(request, s.api_keys) or _body_key(body, s.api_keys)):
            raise Refused(401, "unauthorized", "a write key is required: one of the API keys, as the Basic user")
        messages = _messages(body, single)
    except Refused as refused:
        return refused.response
    read = calls(messages, s.config)
    stored, skipped, rejected = await s.run(store, s.engine, s.config, read)
    for item in rejected:
        log.warning("segment call %s not stored: %s", item["index"], item["reason"])
    ignored = sum(1 for call in read if call.kind is None)
    return JSONResponse(
        {"success": True, "stored": stored, "skipped": skipped, "ignored": ignored, "rejected": rejected}
    )


def store(engine: Any, config: Config, read: list[Call]) -> tuple[int, int, list[dict[str, Any]]]:
    """The identifies, then the tracks (set-wise: engine/customers/tracking.py), each good one
    stored and each bad one named."""
    importer = Importer(engine, config, utcnow(), source="segment")
    results = []
    customers = [(call.position, call.record) for call in read if call.kind == "customers"]
    if customers:
        results.append(importer.customers(customers, "/v1"))
    events = [(call.position, call.record) for call in read if call.kind == "events"]
    if events:
        results.append(store_events(engine, config, events, "/v1", importer))
    rejected = [{"index": p.line, "reason": p.message} for result in results for p in result.problems]
    stored, skipped = sum(result.stored for result in results), sum(result.skipped for result in results)
    return stored, skipped, sorted(rejected, key=lambda item: item["index"])


def _body(raw: bytes, encoding: str) -> Any:
    if encoding.strip().lower() == "gzip":
        raw = _gunzipped(raw)
    elif encoding.strip():
        raise Refused(415, "unsupported_encoding", f"Content-Encoding {encoding!r}: send gzip or nothing")
    try:
        return loads(raw)
    except BadJson as exc:
        raise Refused(400, "invalid_json", str(exc)) from None


def _gunzipped(raw: bytes) -> bytes:
    """The body unzipped, at most the API's body limit: a small zip cannot unfold into gigabytes."""
    unzip = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
    try:
        data = unzip.decompress(raw, API_BODY_LIMIT)
    except zlib.error as exc:
        raise Refused(400, "invalid_gzip", f"the body is not gzip: {exc}") from None
    if unzip.unconsumed_tail:
        raise Refused(413, "too_large", f"the body unzips to more than {API_BODY_LIMIT} bytes")
    return data


def _body_key(body: Any, keys: set[str]) -> bool:
    return isinstance(body, dict) and isinstance(body.get("writeKey"), str) and key_ok(body["writeKey"], keys)


def _messages(body: Any, single: str | None) -> list[Any]:
    if not isinstance(body, dict):
        raise Refused(400, "invalid_request", "the body must be a JSON object")
    if single is not None:
        return [{**body, "type": body.get("type", single)}]
    if not isinstance(body.get("batch"), list):
        raise Refused(400, "invalid_request", "'batch' must be a list of calls")
    context = body.get("context")
    if isinstance(context, dict):  # a batch's context applies to each call without its own
        return [{"context": context, **m} if isinstance(m, dict) else m for m in body["batch"]]
    return list(body["batch"])


routes = [
    Route("/v1/batch", batch, methods=["POST"]),
    Route("/v1/track", track, methods=["POST"]),
    Route("/v1/identify", identify, methods=["POST"]),
]
