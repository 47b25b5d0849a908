"""The ingest API: `POST /api/customers` and `POST /api/events`, one JSON object or a list, with a
bearer key. A list with any bad item is refused whole (422, each bad item's index and reason)
and nothing of it is stored; an event whose id is already stored is skipped, so a retried
request stores nothing twice."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from engine.clock import utcnow
from engine.customers.importing import Importer
from engine.web.bodies import item_problem, parse_json
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
    body = parse_json(await request.body())
    records = body if isinstance(body, list) else [body]
    unreadable = {i: why for i, r in enumerate(records) if (why := item_problem(kind, r, s.config.timezone))}
    # an unreadable item reaches the importer as a non-object, so it refuses the list and still
    # names the other bad items; the reason given for it is ours
    checked = [None if i in unreadable else r for i, r in enumerate(records)]
    importer = Importer(s.engine, s.config, utcnow(), source="api")
    result = await s.run(importer.all_or_nothing, kind, checked, f"/api/{kind}")
    if result.problems:
        reasons = {p.line: p.message for p in result.problems} | unreadable
        return refused([{"index": index, "reason": reasons[index]} for index in sorted(reasons)])
    return JSONResponse({"stored": result.stored, "skipped": result.skipped})


def refused(items: list[dict[str, object]]) -> JSONResponse:
    return JSONResponse({"error": f"nothing stored: {len(items)} bad items", "items": items}, status_code=422)


routes = [Route("/api/customers", customers, methods=["POST"]), Route("/api/events", events, methods=["POST"])]
