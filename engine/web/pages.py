"""The customer's pages: the preference centre, one-click unsubscribe (RFC 8058) and the double
opt-in confirmation. Server-rendered HTML without JavaScript, in the customer's language.

Every link carries a signed token; a forged, altered or foreign token, or one for a customer
that no longer exists, gets the same 404 page.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from engine.clock import utcnow
from engine.config.settings import Config
from engine.customers.preferences import FREQUENCIES, Choices
from engine.web.services import Services, services
from engine.web.texts import direction, language_name, texts

ANY_FREQUENCY = "any"  # the form's value for "no cap of my own"


def _customer(request: Request, purpose: str) -> tuple[int, str | None]:
    """The (customer id, topic) the URL's token was signed for, or 404."""
    signed_for = services(request).links.read(purpose, request.path_params["token"])
    if signed_for is None:
        raise HTTPException(404)
    return signed_for


async def found(choices: Awaitable[Choices | None]) -> Choices:
    """The customer's choices (from a Preferences method), or 404 if there is no such customer."""
    result = await choices
    if result is None:
        raise HTTPException(404)
    return result


def page_context(s: Services, locale: str, context: dict[str, Any]) -> dict[str, Any]:
    return {"t": texts(locale), "lang": locale, "dir": direction(locale), "brand": s.config.brand, **context}


def _render(request: Request, name: str, locale: str, status_code: int = 200, **context: Any) -> Response:
    s = services(request)
    return s.templates.TemplateResponse(request, name, page_context(s, locale, context), status_code=status_code)


def page_text(s: Services, name: str, locale: str, **context: Any) -> str:
    return s.templates.get_template(name).render(page_context(s, locale, context))


# -- the preference centre ---------------------------------------------------------------------


async def preference_page(request: Request) -> Response:
    s = services(request)
    customer_id, _ = _customer(request, "preferences")
    choices = await found(s.read(s.preferences.load, customer_id))
    csrf, new_cookie = s.csrf.issue(request)
    saved = request.query_params.get("saved") == "1"
    form = cached(
        s,
        ("preferences", choices.locale, choices.frequency, choices.unsubscribed, tuple(choices.topics.items()), saved),
        lambda: _preference_form(s, choices, saved),
    )
    response = HTMLResponse(filled(form, token=request.path_params["token"], csrf=csrf))
    if new_cookie:
        s.csrf.set_cookie(response, new_cookie, request)
    return response


def _preference_form(s: Services, choices: Choices, saved: bool) -> str:
    t = texts(choices.locale)
    return page_text(
        s,
        "preferences.html",
        choices.locale,
        token=mark("token"),
        csrf=mark("csrf"),
        choices=choices,
        saved=saved,
        topics=[
            (name, topic.title_in(choices.locale, s.config.default_locale), choices.topics[name])
            for name, topic in s.config.topics.items()
        ],
        frequencies=[(ANY_FREQUENCY, t["frequency_any"]), *((value, t[f"frequency_{value}"]) for value in FREQUENCIES)],
        frequency=choices.frequency or ANY_FREQUENCY,
        locales=[(code, language_name(code)) for code in s.config.locales],
    )


# The customer's pages differ from one customer to the next only by what they chose and by signed
# values (the link token, the CSRF field, the link to the preference centre), which are URL-safe
# and need no escaping. So each page is rendered once per set of choices with marks in place of
# the signed values, and served with the values put in: Jinja was a third of a page's cost
# (bench/web_latency.py).
PAGES_KEPT = 4096


def mark(name: str) -> str:
    """A placeholder for a signed value in a page rendered once: `filled` puts the value in per request."""
    return f"\ue000{name}\ue000"


def cached(s: Services, key: tuple[Any, ...], render: Callable[[], str]) -> str:
    """The page rendered once per key (language, choices, ...), its signed values left as marks."""
    page = s.page_cache.get(key)
    if page is None:
        if len(s.page_cache) >= PAGES_KEPT:
            s.page_cache.clear()
        page = s.page_cache[key] = render()
    return page


def filled(page: str, **values: str) -> str:
    for name, value in values.items():
        page = page.replace(mark(name), value)
    return page


async def checked_form(request: Request) -> FormData:
    """The posted form, once its CSRF field has been checked against the cookie (403 otherwise)."""
    s = services(request)
    form = await request.form()
    if not s.csrf.valid(request, form.get(s.csrf.FIELD)):
        raise HTTPException(403)
    return form


async def save_preferences(request: Request) -> Response:
    s = services(request)
    customer_id, _ = _customer(request, "preferences")
    form = await checked_form(request)
    wanted = parse_choices(form, s.config)
    await found(s.write(s.preferences.save, customer_id, wanted, "preference_centre", utcnow()))
    return RedirectResponse(f"/preferences/{request.path_params['token']}?saved=1", status_code=303)


def parse_choices(form: FormData, config: Config) -> Choices:
    """The submitted form as choices; a value the form never offers is a 400."""
    frequency = form.get("frequency", ANY_FREQUENCY)
    locale = form.get("locale", config.default_locale)
    if frequency not in (ANY_FREQUENCY, *FREQUENCIES) or locale not in config.locales:
        raise HTTPException(400)
    ticked = set(form.getlist("topic"))
    return Choices(
        topics={name: name in ticked for name in config.topics},
        frequency=None if frequency == ANY_FREQUENCY else frequency,
        locale=locale,
        unsubscribed=form.get("unsubscribe_all") == "yes",
    )


# -- unsubscribe and confirm -------------------------------------------------------------------


async def unsubscribe_page(request: Request) -> Response:
    """Asks; changes nothing (mail scanners follow GET links). Its button is the one-click POST."""
    s = services(request)
    customer_id, topic = _customer(request, "unsubscribe")
    choices = await found(s.read(s.preferences.load, customer_id))
    return _unsubscribe_response(s, customer_id, topic, choices.locale, done=False)


async def one_click_unsubscribe(request: Request) -> Response:
    """RFC 8058: `List-Unsubscribe=One-Click` in the body is all it takes; no cookie, no CSRF
    token, no login. Repeating it changes nothing more."""
    s = services(request)
    customer_id, topic = _customer(request, "unsubscribe")
    if not await _asks_one_click(request):
        raise HTTPException(400)
    choices = await found(s.write(s.preferences.unsubscribe, customer_id, topic, "one_click", utcnow()))
    return _unsubscribe_response(s, customer_id, topic, choices.locale, done=True)


async def _asks_one_click(request: Request) -> bool:
    """The body is `List-Unsubscribe=One-Click`, as a urlencoded or a multipart form (RFC 8058
    allows both). Mail providers send the short urlencoded one, read here without a form parser."""
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return parse_qs((await request.body()).decode("latin-1")).get("List-Unsubscribe") == ["One-Click"]
    return (await request.form()).get("List-Unsubscribe") == "One-Click"


def _unsubscribe_response(s: Services, customer_id: int, topic: str | None, locale: str, done: bool) -> Response:
    page = cached(s, ("unsubscribe", locale, topic, done), lambda: _unsubscribe_text(s, topic, locale, done))
    return HTMLResponse(filled(page, preferences=f"/preferences/{s.links.token('preferences', customer_id)}"))


def _unsubscribe_text(s: Services, topic: str | None, locale: str, done: bool) -> str:
    t = texts(locale)
    declared = s.config.topics.get(topic) if topic else None
    title = declared.title_in(locale, s.config.default_locale) if declared else topic
    key = ("unsubscribed_" if done else "unsubscribe_") + ("topic" if topic else "everything")
    return page_text(
        s, "unsubscribe.html", locale, done=done, message=t[key].format(topic=title), preferences=mark("preferences")
    )


async def confirm(request: Request) -> Response:
    """Double opt-in: records the consent once; a second click shows the same page."""
    s = services(request)
    customer_id, _ = _customer(request, "confirm")
    choices = await found(s.write(s.preferences.confirm, customer_id, "confirm_link", utcnow()))
    t = texts(choices.locale)
    return _render(
        request,
        "message.html",
        choices.locale,
        title=t["confirmed"],
        message=t["confirmed_text"],
        preferences=f"/preferences/{s.links.token('preferences', customer_id)}",
    )


# -- errors ------------------------------------------------------------------------------------


async def http_error(request: Request, exc: HTTPException) -> Response:
    """JSON for machines (/api, /webhooks), a short page in the default language for people.
    The 404 page is the same whether the token was forged or the customer does not exist."""
    if request.url.path.startswith(("/api/", "/webhooks/")):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)
    locale = services(request).config.default_locale
    t = texts(locale)
    return _render(
        request,
        "message.html",
        locale,
        status_code=exc.status_code,
        title=t["error"],
        message=t.get(f"error_{exc.status_code}", exc.detail),
        preferences=None,
    )


routes = [
    Route("/preferences/{token}", preference_page, methods=["GET"]),
    Route("/preferences/{token}", save_preferences, methods=["POST"]),
    Route("/unsubscribe/{token}", unsubscribe_page, methods=["GET"]),
    Route("/unsubscribe/{token}", one_click_unsubscribe, methods=["POST"]),
    Route("/confirm/{token}", confirm, methods=["GET"]),
]
