"""The studio's pages: the campaign list, a campaign with its flow, the email preview, and the
login of `lifecycle serve`. Every page works while a campaign or a template is broken: it shows
the problem with its `file:line` where the broken thing would be."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import anyio
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from engine.clock import utcnow
from engine.customers.search import find_customers
from engine.errors import LifecycleError
from engine.web.studio import flow, live, words
from engine.web.studio.access import safe_next, to_login
from engine.web.studio.overview import campaign_named, overview
from engine.web.studio.preview import show
from engine.web.studio.state import Studio, studio

# Scripts and styles of this site only; the preview's email is framed from this site too.
STUDIO_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
# The email itself: its own inline styles and images, no script, shown only inside the studio.
EMAIL_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data: https: http:; font-src data: https:; "
    "frame-ancestors 'self'; base-uri 'none'; form-action 'none'"
)
SEARCH_LIMIT = 10  # customers the preview's search box offers
Handler = Callable[[Request, Studio], Awaitable[Response]]


def page(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A studio route: behind the login in `lifecycle serve`, open in the local studio."""

    async def guarded(request: Request) -> Response:
        s = studio(request)
        if s.sessions is not None and not s.sessions.signed_in(request):
            return to_login(request)
        return await handler(request, s)

    return guarded


def render(request: Request, s: Studio, template: str, **context: Any) -> HTMLResponse:
    csrf, new_cookie = s.csrf.issue(request)
    config = s.current_config()
    response = s.templates.TemplateResponse(
        request,
        template,
        {
            "live": s.changes is not None,
            "login": s.sessions is not None,
            "config": config,
            "config_problems": s.config_problems,
            "csrf": csrf,
            "csrf_field": s.csrf.FIELD,
            "words": words,
            **context,
        },
        headers={"content-security-policy": STUDIO_CSP},
    )
    if new_cookie:
        s.csrf.set_cookie(response, new_cookie, request)
    return response


@page
async def campaigns(request: Request, s: Studio) -> Response:
    config = s.current_config()
    listed = await anyio.to_thread.run_sync(overview, config, s.engine, s.checks, s.counts, utcnow())
    return render(request, s, "campaigns.html", overview=listed, page="campaigns")


@page
async def campaign(request: Request, s: Studio) -> Response:
    config = s.current_config()
    name = request.path_params["name"]
    found, problems = await anyio.to_thread.run_sync(campaign_named, config, s.checks, name)
    if found is None and not problems:
        raise HTTPException(404, f"no campaign named '{name}'")
    svg = flow.flow_svg(found, config.default_locale) if found else ""
    return render(request, s, "campaign.html", title=name, campaign=found, problems=problems, svg=svg, page="campaigns")


@page
async def flow_file(request: Request, s: Studio) -> Response:
    config = s.current_config()
    found, _ = await anyio.to_thread.run_sync(campaign_named, config, s.checks, request.path_params["name"])
    if found is None:
        raise HTTPException(404)
    return Response(flow.flow_svg(found, config.default_locale), media_type="image/svg+xml")


def _choice(request: Request) -> dict[str, Any]:
    """What the preview shows, from the query: campaign, step, variant, locale, customer."""
    q = request.query_params
    try:
        step = int(q.get("step") or 1)
    except ValueError:
        raise HTTPException(400, "step: a step number like 1") from None
    return {
        "name": q.get("campaign") or "",
        "step": step,
        "variant": q.get("variant") or None,
        "locale": q.get("locale") or None,
        "customer": q.get("customer") or None,
    }


def _preview(s: Studio, chosen: dict[str, Any]) -> tuple[Any, Any]:
    config = s.current_config()
    campaigns, _ = s.checks.campaigns(config)
    if not chosen["name"] and campaigns:
        chosen["name"] = campaigns[0].name
    return campaigns, show(config, campaigns, s.engine, s.service_routes, **chosen)


@page
async def preview(request: Request, s: Studio) -> Response:
    chosen = _choice(request)
    campaigns, shown = await anyio.to_thread.run_sync(_preview, s, chosen)
    current = next((c for c in campaigns if c.name == chosen["name"]), None)
    query = {k: v for k, v in {**chosen, "campaign": chosen["name"]}.items() if v and k != "name"}
    return render(
        request,
        s,
        "preview.html",
        campaigns=campaigns,
        current=current,
        chosen=chosen,
        shown=shown,
        query=query,
        version=s.changes.version if s.changes else 0,
        page="preview",
    )


@page
async def email_html(request: Request, s: Studio) -> Response:
    """The HTML part alone, for the preview's frames."""
    _, shown = await anyio.to_thread.run_sync(_preview, s, _choice(request))
    if shown.email is None:
        raise HTTPException(404, shown.error or "; ".join(str(p) for p in shown.problems))
    return HTMLResponse(
        shown.email.html, headers={"content-security-policy": EMAIL_CSP, "x-frame-options": "SAMEORIGIN"}
    )


@page
async def customers_json(request: Request, s: Studio) -> Response:
    found = await anyio.to_thread.run_sync(find_customers, s.engine, request.query_params.get("q", ""), SEARCH_LIMIT)
    return JSONResponse([match.as_json() for match in found])


@page
async def send_test(request: Request, s: Studio) -> Response:
    """`lifecycle send-test` from the preview: one email to an address the marketer gives, through
    the configured sender; its links are the sample customer's, so nobody's choices change."""
    from engine.mail.previews import send_test as send_one
    from engine.senders import load_sender

    form = await request.form()
    if not s.csrf.valid(request, form.get(s.csrf.FIELD)):
        raise HTTPException(403, "the form expired: reload the page and send again")
    chosen = _choice(request)  # the form posts to the preview's own query
    to = str(form.get("to") or "").strip()
    config = s.current_config()

    def send() -> str:
        campaigns, _ = s.checks.campaigns(config)
        with load_sender(config) as sender:
            result, _ = send_one(
                config, campaigns, s.engine, sender, chosen["name"], to, chosen["customer"], chosen["step"]
            )
        return f"sent to {to}" if result.ok else f"not sent: {result.error}"

    try:
        outcome = await anyio.to_thread.run_sync(send)
    except LifecycleError as exc:
        outcome = f"not sent: {exc}"
    query = urlencode({**request.query_params, "sent": outcome})
    return RedirectResponse(f"{request.url.path.removesuffix('/send')}?{query}", status_code=303)


async def login_form(request: Request) -> Response:
    s = studio(request)
    if s.sessions is None:
        return RedirectResponse("/studio/", status_code=303)
    return render(request, s, "login.html", next=safe_next(request.query_params.get("next")), failed=False, page="")


async def login(request: Request) -> Response:
    s = studio(request)
    if s.sessions is None:
        return RedirectResponse("/studio/", status_code=303)
    form = await request.form()
    target = safe_next(str(form.get("next") or ""))
    key = str(form.get("key") or "")
    if not s.csrf.valid(request, form.get(s.csrf.FIELD)) or not key or not s.sessions.key_ok(key):
        refused = render(request, s, "login.html", next=target, failed=True, page="")
        refused.status_code = 401
        return refused
    response = RedirectResponse(target, status_code=303)
    s.sessions.open(response, key, request)
    return response


async def logout(request: Request) -> Response:
    s = studio(request)
    form = await request.form()
    if not s.csrf.valid(request, form.get(s.csrf.FIELD)):
        raise HTTPException(403, "the form expired: reload the page")
    response = RedirectResponse("/studio/login", status_code=303)
    if s.sessions is not None:
        s.sessions.close(response)
    return response


async def http_error(request: Request, exc: HTTPException) -> Response:
    """A studio page that says what went wrong: the studio's users wrote the files it reads."""
    s = studio(request)
    response = render(request, s, "error.html", status=exc.status_code, detail=exc.detail, page="")
    response.status_code = exc.status_code
    return response


async def events(request: Request) -> Response:
    s = studio(request)
    if s.changes is None:
        raise HTTPException(404)
    return await live.events(request, s.changes)


routes = [
    Route("/", campaigns, methods=["GET"]),
    Route("/campaigns/{name}", campaign, methods=["GET"]),
    Route("/campaigns/{name}/flow.svg", flow_file, methods=["GET"]),
    Route("/preview", preview, methods=["GET"]),
    Route("/preview/email", email_html, methods=["GET"]),
    Route("/preview/send", send_test, methods=["POST"]),
    Route("/customers.json", customers_json, methods=["GET"]),
    Route("/login", login_form, methods=["GET"]),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/events", events, methods=["GET"]),
]
