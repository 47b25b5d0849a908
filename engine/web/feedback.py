"""The feedback loop's pages: a rating from an email's button, and the team's alert about a low one.

Mail scanners open every link of an email, so a GET or HEAD records nothing: the rating page
posts the score by itself once a browser runs its script (one click in the email still rates),
and the alert page acknowledges only when its button is pressed. Every form is CSRF-protected,
and a forged, altered or foreign token, or a score outside the scale, gets the same 404 page.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from babel.dates import format_datetime
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from engine.clock import utcnow
from engine.customers import feedback
from engine.web.pages import cached, checked_form, filled, found, mark, page_context, page_text
from engine.web.security import HEADERS
from engine.web.services import Services, services
from engine.web.texts import texts

# The rating page runs one script of this site's own (static/feedback.js); nothing else changes.
CSP = b"content-security-policy"
RATING_CSP = dict(HEADERS)[CSP].decode() + "; script-src 'self'"


def _sent(request: Request, purpose: str) -> tuple[int, int]:
    """The (customer id, send id) the URL's token was signed for, or 404."""
    signed_for = services(request).links.read_send(purpose, request.path_params["token"])
    if signed_for is None:
        raise HTTPException(404)
    return signed_for


def _score(s: Services, value: object) -> int:
    """A score of the configured scale, or 404: a link with another number was altered."""
    if not isinstance(value, str) or not value.isdigit() or int(value) not in s.config.feedback.scores():
        raise HTTPException(404)
    return int(value)


# -- the rating page ---------------------------------------------------------------------------


async def rating_page(request: Request) -> Response:
    """Shows the chosen score and a comment box; records nothing (see the module's docstring)."""
    s = services(request)
    customer_id, _ = _sent(request, "rate")
    score = _score(s, request.path_params["score"])
    choices = await found(s.read(s.preferences.load, customer_id))
    saved = request.query_params.get("saved") == "1"
    page = cached(
        s, ("rating", choices.locale, score, saved), lambda: _rating_text(s, choices.locale, score, saved=saved)
    )
    return _rating_response(request, s, page)


def _rating_text(s: Services, locale: str, score: int, saved: bool, comment: str = "", error: str = "") -> str:
    scores = s.config.feedback.scores()
    return page_text(
        s,
        "feedback.html",
        locale,
        title=texts(locale)["rating"],
        question=texts(locale)[f"rating_question_{s.config.feedback.scale}"].format(low=scores[0], high=scores[-1]),
        scores=scores,
        score=score,
        saved=saved,
        comment=comment,
        error=error,
        limit=feedback.COMMENT_LIMIT,
        token=mark("token"),
        csrf=mark("csrf"),
    )


def _rating_response(request: Request, s: Services, page: str, status_code: int = 200) -> Response:
    csrf, new_cookie = s.csrf.issue(request)
    response = HTMLResponse(
        filled(page, token=request.path_params["token"], csrf=csrf),
        status_code=status_code,
        headers={CSP.decode(): RATING_CSP},
    )
    if new_cookie:
        s.csrf.set_cookie(response, new_cookie, request)
    return response


async def rate(request: Request) -> Response:
    """Records the rating (the page's own post, or the customer's with a comment)."""
    s = services(request)
    customer_id, send_id = _sent(request, "rate")
    form = await checked_form(request)
    score = _score(s, form.get("score"))
    comment = form.get("comment", "")
    if not isinstance(comment, str):
        raise HTTPException(400)
    comment = comment.strip()
    if len(comment) > feedback.COMMENT_LIMIT:
        choices = await found(s.read(s.preferences.load, customer_id))
        error = texts(choices.locale)["comment_too_long"].format(limit=feedback.COMMENT_LIMIT)
        page = _rating_text(s, choices.locale, score, saved=False, comment=comment, error=error)
        return _rating_response(request, s, page, status_code=400)
    rated = await s.write(feedback.rate, s.config, customer_id, send_id, score, comment, utcnow())
    if rated is None:
        raise HTTPException(404)
    return RedirectResponse(f"/feedback/{request.path_params['token']}/{score}?saved=1", status_code=303)


# -- the team's alert --------------------------------------------------------------------------


async def alert_page(request: Request) -> Response:
    """Shows the alert and its "I'm on it" button; acknowledges nothing."""
    s = services(request)
    customer_id, send_id = _sent(request, "alert")
    alert = await s.read(feedback.alert, customer_id, send_id)
    return _alert_response(request, s, alert)


async def acknowledge(request: Request) -> Response:
    """ "I'm on it": the first acknowledgement counts; a repeat records nothing and shows the first."""
    s = services(request)
    customer_id, send_id = _sent(request, "alert")
    await checked_form(request)
    if await s.write(feedback.acknowledge, customer_id, send_id, utcnow()) is None:
        raise HTTPException(404)
    return RedirectResponse(f"/alerts/{request.path_params['token']}", status_code=303)


def _alert_response(request: Request, s: Services, alert: feedback.Alert | None) -> Response:
    if alert is None:
        raise HTTPException(404)
    locale = s.config.team.locale or s.config.default_locale
    t = texts(locale)
    rating = alert.feedback
    csrf, new_cookie = s.csrf.issue(request)
    context: dict[str, Any] = {
        "title": t["alert"],
        "alert": alert,
        "token": request.path_params["token"],
        "csrf": csrf,
        "rated": t["alert_rated"].format(
            customer=alert.customer, score=rating.get("score"), scale=rating.get("scale", s.config.feedback.scale)
        ),
        "when": t["alert_when"].format(when=_when(s, rating.get("at") or alert.feedback_at, locale)),
        "about": t["alert_about"].format(campaign=rating["campaign"]) if rating.get("campaign") else "",
        "acknowledged": t["alert_acknowledged"].format(when=_when(s, alert.acknowledged_at, locale))
        if alert.acknowledged_at
        else "",
    }
    response = s.templates.TemplateResponse(request, "alert.html", page_context(s, locale, context))
    if new_cookie:
        s.csrf.set_cookie(response, new_cookie, request)
    return response


def _when(s: Services, at: datetime, locale: str) -> str:
    """A time as the team reads it: in the config's time zone and the team's language."""
    moment = at if at.tzinfo else at.replace(tzinfo=UTC)
    return format_datetime(moment, format="medium", tzinfo=ZoneInfo(s.config.timezone), locale=locale.replace("-", "_"))


routes = [
    Route("/feedback/{token}/{score}", rating_page, methods=["GET"]),
    Route("/feedback/{token}", rate, methods=["POST"]),
    Route("/alerts/{token}", alert_page, methods=["GET"]),
    Route("/alerts/{token}", acknowledge, methods=["POST"]),
]
