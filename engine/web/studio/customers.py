"""The studio's customer pages: the list with its search and filters (and the same list as CSV), one
customer with their timeline, and why a customer does or does not get a campaign now. Each page
presents what the command line prints (`lifecycle customers`, `lifecycle customer`, `lifecycle why`)
from the same functions, so the two never disagree."""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import anyio
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from engine.campaigns.language import RISKS, STAGES
from engine.clock import utcnow
from engine.customers.search import no_such_customer
from engine.delivery.why import explain
from engine.errors import LifecycleError, NotFound
from engine.insights.customers import COLUMNS, CustomerRow, Filters, count_customers, csv_cells, each_customer
from engine.insights.timeline import customer_view
from engine.web.studio.pages import page, render
from engine.web.studio.state import Studio

PAGE_SIZE = 50
CSV_CHUNK = 500  # rows written to the response at a time


def filters_of(request: Request) -> Filters:
    """The list's filters from the query: `q`, `stage`, `risk`, `topic` and `where=attr=value`."""
    q = request.query_params
    attributes: dict[str, str] = {}
    for pair in q.getlist("where"):
        if not pair.strip():
            continue
        name, equals, value = pair.partition("=")
        if not equals or not name.strip():
            raise HTTPException(400, f"attribute: '{pair}' is not attr=value, like plan=pro")
        attributes[name.strip()] = value
    return Filters(
        stage=q.get("stage") or None,
        risk=q.get("risk") or None,
        topic=q.get("topic") or None,
        attributes=attributes,
        search=(q.get("q") or "").strip() or None,
    )


def _page_number(request: Request) -> int:
    try:
        return max(1, int(request.query_params.get("page") or 1))
    except ValueError:
        raise HTTPException(400, "page: a page number like 2") from None


@page
async def customer_list(request: Request, s: Studio) -> Response:
    filters = filters_of(request)
    number = _page_number(request)
    config = s.current_config()
    now = utcnow()

    def read() -> tuple[list[CustomerRow], int]:
        rows = list(each_customer(s.engine, config, now, filters, limit=PAGE_SIZE, offset=(number - 1) * PAGE_SIZE))
        return rows, count_customers(s.engine, config, now, **vars(filters))

    try:
        rows, total = await anyio.to_thread.run_sync(read)
        problem = ""
    except LifecycleError as exc:
        rows, total, problem = [], 0, str(exc)
    query = [(k, v) for k, v in request.query_params.multi_items() if k != "page" and v]
    response = render(
        request,
        s,
        "customers.html",
        rows=rows,
        total=total,
        number=number,
        pages=max(1, -(-total // PAGE_SIZE)),
        filters=filters,
        where=request.query_params.getlist("where"),
        query=urlencode(query),
        problem=problem,
        stages=STAGES,
        risks=RISKS,
        page="customers",
    )
    if problem:
        response.status_code = 400
    return response


@page
async def customer_csv(request: Request, s: Studio) -> Response:
    """The filtered list as `lifecycle customers --format csv` writes it, streamed a chunk at a time."""
    filters = filters_of(request)
    config = s.current_config()
    rows = each_customer(s.engine, config, utcnow(), filters)
    try:
        first = await anyio.to_thread.run_sync(next, rows, None)  # a bad filter fails here, as a page
    except LifecycleError as exc:
        raise HTTPException(400, str(exc)) from None

    def chunks() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(COLUMNS)
        for i, row in enumerate(rows if first is None else itertools.chain([first], rows), 1):
            writer.writerow(csv_cells(row))
            if i % CSV_CHUNK == 0:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()

    return StreamingResponse(
        chunks(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": 'attachment; filename="customers.csv"'},
    )


@page
async def customer_page(request: Request, s: Studio) -> Response:
    customer_id = request.path_params["id"]
    config = s.current_config()

    def read() -> Any:
        campaigns, _ = s.checks.campaigns(config)
        view = customer_view(s.engine, config, customer_id, utcnow(), campaigns)
        if view is None:
            with s.engine.connect() as connection:
                raise no_such_customer(connection, customer_id)
        return view

    try:
        view = await anyio.to_thread.run_sync(read)
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    return render(request, s, "customer.html", title=customer_id, view=view, page="customers")


@page
async def why_page(request: Request, s: Studio) -> Response:
    config = s.current_config()
    campaign = request.query_params.get("campaign") or ""
    customer_id = (request.query_params.get("customer") or "").strip()
    campaigns, _ = await anyio.to_thread.run_sync(s.checks.campaigns, config)
    explanation, problem, status = None, "", 200
    if campaign and customer_id:
        try:
            explanation = await anyio.to_thread.run_sync(
                explain, s.engine, config, campaigns, campaign, customer_id, utcnow()
            )
        except LifecycleError as exc:
            problem, status = str(exc), 404 if isinstance(exc, NotFound) else 400
    response = render(
        request,
        s,
        "why.html",
        campaigns=campaigns,
        campaign=campaign,
        customer=customer_id,
        explanation=explanation,
        problem=problem,
        page="why",
    )
    response.status_code = status
    return response


routes = [
    Route("/customers", customer_list, methods=["GET"]),
    Route("/customers.csv", customer_csv, methods=["GET"]),
    Route("/customers/{id:path}", customer_page, methods=["GET"]),
    Route("/why", why_page, methods=["GET"]),
]
