"""The ingest API: `POST /api/customers` and `POST /api/events`, one JSON object or a list, with a
bearer key. A list with any bad item is refused whole (422, each bad item's index and reason)
and nothing of it is stored; an event whose id is already stored is skipped, so a retried
request stores nothing twice."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from engine.clock import utcnow
from engine.customers.importing import Importer
from engine.web.security import bearer_ok
from engine.web.services import services


async def customers(request: Request) -> JSONResponse:
    return await ingest(request, "customers")


async def events(request: Request) -> JSONResponse:
    return await ingest(request, "events")


async def ingest(request: Request, kind: str) -> JSONResponse:
    s = services(request)
    if not bearer_ok(request, s.api_keys):
        raise HTTPException(
            401, "a valid 'Authorization: Bearer KEY' header is required", headers={"WWW-Authenticate": "Bearer"}
        )
    try:
        body = json.loads(await request.body())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HTTPException(400, f"the body is not valid JSON: {exc}") from None
    records = body if isinstance(body, list) else [body]
    importer = Importer(s.engine, s.config, utcnow(), source="api")
    result = await s.run(importer.all_or_nothing, kind, records, f"/api/{kind}")
    if result.problems:
        return JSONResponse(
            {
                "error": f"nothing stored: {len(result.problems)} bad items",
                "items": [{"index": p.line, "reason": p.message} for p in result.problems],
            },
            status_code=422,
        )
    return JSONResponse({"stored": result.stored, "skipped": result.skipped})


routes = [Route("/api/customers", customers, methods=["POST"]), Route("/api/events", events, methods=["POST"])]
