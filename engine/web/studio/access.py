"""Who may use the studio and the dashboard in `lifecycle serve`: an operator who gave one of the
API keys, on a login form, and so holds a session cookie; or a client sending the key in an
`Authorization: Bearer` header. The local `lifecycle studio` asks for neither: it listens on the
loopback address of the marketer's own machine.

The cookie holds no key: only a fingerprint of the one given, signed and dated with the link
secret (itsdangerous), so that removing a key from `LIFECYCLE_API_KEYS` ends its sessions, and a
cookie edited by hand, or older than `MAX_AGE`, is refused. It is HttpOnly (no script reads it) and
SameSite=Lax (another site's form cannot post with it; a link from a team email still opens the
page signed in)."""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import quote

from itsdangerous import BadSignature, TimestampSigner
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from engine.web.security import bearer_ok

COOKIE = "lifecycle_session"
MAX_AGE = 12 * 3600  # seconds a sign-in lasts
LOGIN_PATH = "/studio/login"


def fingerprint(key: str) -> str:
    """What a session remembers of the key it was opened with: never the key itself."""
    return hashlib.sha256(f"lifecycle.session:{key}".encode()).hexdigest()[:32]


class Sessions:
    def __init__(self, secrets: list[str], api_keys: set[str]):
        self.signer = TimestampSigner(secrets, salt="lifecycle.session")
        self.fingerprints = {fingerprint(key) for key in api_keys}
        self.api_keys = api_keys

    def key_ok(self, given: str) -> bool:
        """One of the API keys, compared in constant time."""
        return any(hmac.compare_digest(given.encode(), key.encode()) for key in self.api_keys)

    def open(self, response: Response, key: str, request: Request) -> None:
        response.set_cookie(
            COOKIE,
            self.signer.sign(fingerprint(key)).decode(),
            max_age=MAX_AGE,
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
            path="/",
        )

    def close(self, response: Response) -> None:
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="lax")

    def signed_in(self, request: Request) -> bool:
        cookie = request.cookies.get(COOKIE)
        if not cookie:
            return False
        try:
            remembered = self.signer.unsign(cookie, max_age=MAX_AGE).decode()
        except BadSignature:
            return False
        return remembered in self.fingerprints

    def allowed(self, request: Request) -> bool:
        """A session cookie, or the bearer header that scripts send."""
        return self.signed_in(request) or bearer_ok(request, self.api_keys)


def to_login(request: Request) -> Response:
    """Where a browser without a session goes: the login form, then back to the page it asked for."""
    wanted = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"{LOGIN_PATH}?next={quote(wanted, safe='/')}", status_code=303)


def safe_next(value: str | None) -> str:
    """Only a path of this site: never `//host` or `https://host` (an open redirect)."""
    if value and value.startswith("/") and not value.startswith(("//", "/\\")):
        return value
    return "/studio/"
