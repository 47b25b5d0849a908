"""What guards every request: security headers, request body limits, CSRF tokens for forms and
bearer keys for the API. The header and body guards are plain ASGI middleware, so they cost
nothing per request beyond what they check."""

from __future__ import annotations

import base64
import hmac
import secrets
from collections.abc import Callable

from itsdangerous import BadSignature, TimestampSigner
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# No script, no frames, styles and forms only from this site; tokens in URLs never leak
# through Referer.
HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        b"frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]
HSTS = (b"strict-transport-security", b"max-age=31536000")
NO_STORE = (b"cache-control", b"no-store")

API_BODY_LIMIT = 5 * 1024 * 1024  # a batch of thousands of events, or a SendGrid webhook post
PAGE_BODY_LIMIT = 16 * 1024  # a preference form is a few hundred bytes


# The methods the service answers; any other gets 405 before routing, and is "other" in metrics.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class SecurityHeaders:
    """Adds HEADERS to every response, HSTS over https, and `Cache-Control: no-store` unless the
    response set its own: pages reached by a personal link must not be cached. An error nothing
    handled (a bug) is answered here, as a bare 500 with the same headers and no traceback, then
    raised on for the server to log."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        started = False

        async def with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in HEADERS if h[0] not in present)
                if NO_STORE[0] not in present:
                    headers.append(NO_STORE)
                if scope.get("scheme") == "https":
                    headers.append(HSTS)
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, with_headers)
        except Exception:
            if not started:
                await PlainTextResponse("internal error\n", status_code=500)(scope, receive, with_headers)
            raise


class KnownMethods:
    """Refuses a method outside METHODS with 405, so a made-up method reaches no route."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in METHODS:
            allow = ", ".join(sorted(METHODS))
            response = PlainTextResponse("method not allowed\n", status_code=405, headers={"Allow": allow})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def body_limit_for(path: str) -> int:
    return API_BODY_LIMIT if path.startswith(("/api/", "/v1/", "/webhooks/")) else PAGE_BODY_LIMIT


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """Refuses a request body over the limit for its path with 413: at once when Content-Length
    says so, otherwise as soon as the streamed body passes it (nothing is read past the limit)."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int] = body_limit_for):
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await too_large(limit)(scope, receive, send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await too_large(limit)(scope, receive, send)


def too_large(limit: int) -> Response:
    return PlainTextResponse(f"request body too large: at most {limit} bytes\n", status_code=413)


class Csrf:
    """Signed double submit: a random value in a SameSite=Strict cookie, and the same value,
    signed and dated, in a hidden form field. Another site can neither read the cookie nor sign a
    value, so it cannot make a browser post a form that passes."""

    COOKIE = "lifecycle_csrf"
    MAX_AGE = 12 * 3600  # seconds a form stays good
    FIELD = "csrf"

    def __init__(self, keys: list[str]):
        # The cookie is already URL-safe text: a timestamp signer is all it takes (no JSON, no zlib).
        self.signer = TimestampSigner(keys, salt="lifecycle.csrf")

    def issue(self, request: Request) -> tuple[str, str | None]:
        """(form field value, a new cookie to give the browser, or None when it has one)."""
        cookie = request.cookies.get(self.COOKIE)
        if cookie:
            return self.signer.sign(cookie).decode(), None
        new = secrets.token_urlsafe(32)
        return self.signer.sign(new).decode(), new

    def set_cookie(self, response: Response, cookie: str, request: Request) -> None:
        response.set_cookie(
            self.COOKIE,
            cookie,
            max_age=self.MAX_AGE,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )

    def valid(self, request: Request, field: object) -> bool:
        cookie = request.cookies.get(self.COOKIE)
        if not cookie or not isinstance(field, str):
            return False
        try:
            signed = self.signer.unsign(field, max_age=self.MAX_AGE).decode()
        except BadSignature:
            return False
        return hmac.compare_digest(signed, cookie)


def bearer_ok(request: Request, keys: set[str]) -> bool:
    """`Authorization: Bearer KEY` with one of the configured keys."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and key_ok(given.strip(), keys)


def basic_user_ok(request: Request, keys: set[str]) -> bool:
    """`Authorization: Basic` whose user is one of the configured keys (Segment's write key)."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    try:
        user = base64.b64decode(given.strip(), validate=True).decode().partition(":")[0]
    except (ValueError, UnicodeDecodeError):
        return False
    return scheme.lower() == "basic" and key_ok(user, keys)


def key_ok(given: str, keys: set[str]) -> bool:
    """`given` is one of the configured keys, compared in constant time."""
    token = given.encode()
    return any(hmac.compare_digest(token, key.encode()) for key in keys)
