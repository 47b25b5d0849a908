"""Sends through SendGrid's v3 Mail Send API, sharing one request between identical messages."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import Any

import sendgrid
from python_http_client.exceptions import HTTPError

from engine.config.settings import Config
from engine.mail.message import OutgoingEmail, one_line
from engine.senders.base import Sender, SendResult, seconds_to_wait

MAX_PERSONALIZATIONS = 1000  # SendGrid refuses a request with more
TIMEOUT = 30.0  # seconds for one API call; a hung socket must not stall the scheduler
PAYLOAD_TOO_LARGE = 413

# SendGrid refuses these in `headers`; From, To, Subject and Reply-To have fields of their own.
RESERVED_HEADERS = {
    "x-sg-id",
    "x-sg-eid",
    "received",
    "dkim-signature",
    "content-type",
    "content-transfer-encoding",
    "to",
    "from",
    "subject",
    "reply-to",
    "cc",
    "bcc",
}


@dataclass
class Chunk:
    """Emails that will share one request: same content, at most 1000, each address once."""

    emails: list[OutgoingEmail] = field(default_factory=list)
    addresses: set[str] = field(default_factory=set)

    def takes(self, email: OutgoingEmail) -> bool:
        return len(self.emails) < MAX_PERSONALIZATIONS and email.to.lower() not in self.addresses

    def add(self, email: OutgoingEmail) -> None:
        self.emails.append(email)
        self.addresses.add(email.to.lower())


ContentKey = tuple[str | None, ...]


def content_key(email: OutgoingEmail) -> ContentKey:
    """What must be equal for two emails to share a request; headers may differ per recipient."""
    return (email.from_email, email.from_name, email.subject, email.html, email.text, email.headers.get("Reply-To"))


def plan_requests(emails: list[OutgoingEmail]) -> list[list[OutgoingEmail]]:
    """Group identical content into requests of up to 1000 personalizations."""
    groups: dict[ContentKey, list[Chunk]] = {}
    for email in emails:
        chunks = groups.setdefault(content_key(email), [])
        chunk = next((c for c in chunks if c.takes(email)), None)
        if chunk is None:
            chunk = Chunk()
            chunks.append(chunk)
        chunk.add(email)
    return [chunk.emails for chunks in groups.values() for chunk in chunks]


def clean_headers(email: OutgoingEmail) -> dict[str, str]:
    """The email's custom headers and Message-ID, each on one line (no CR/LF can reach SendGrid)."""
    headers = {
        one_line(name): one_line(value) for name, value in email.headers.items() if name.lower() not in RESERVED_HEADERS
    }
    headers["Message-ID"] = one_line(email.message_id)
    return headers


def recipient(email: OutgoingEmail) -> dict[str, str]:
    """The To address, with the display name the raw message carries."""
    return address(email.to, email.to_name)


def address(email: str, name: str | None) -> dict[str, str]:
    return {"email": email, "name": one_line(name)} if name else {"email": email}


def request_body(emails: list[OutgoingEmail], sandbox: bool) -> dict[str, Any]:
    """A v3 mail/send body; headers equal for all recipients go once, the rest per personalization."""
    first = emails[0]
    per_email = [clean_headers(email) for email in emails]
    shared = {
        name: value
        for name, value in per_email[0].items()
        if all(headers.get(name) == value for headers in per_email[1:])
    }
    body: dict[str, Any] = {
        "personalizations": [
            personalization(email, headers, shared) for email, headers in zip(emails, per_email, strict=True)
        ],
        "from": address(first.from_email, first.from_name),
        "subject": one_line(first.subject),
        "content": content(first),
        "mail_settings": {"sandbox_mode": {"enable": sandbox}},
    }
    if shared:
        body["headers"] = shared
    if first.headers.get("Reply-To"):
        name, email = parseaddr(one_line(first.headers["Reply-To"]))
        body["reply_to"] = address(email or one_line(first.headers["Reply-To"]), name)
    return body


def personalization(email: OutgoingEmail, headers: dict[str, str], shared: dict[str, str]) -> dict[str, Any]:
    own = {name: value for name, value in headers.items() if name not in shared}
    entry: dict[str, Any] = {"to": [recipient(email)], "custom_args": {"send_id": str(email.send_id)}}
    if own:
        entry["headers"] = own
    return entry


def content(email: OutgoingEmail) -> list[dict[str, str]]:
    """text/plain must come before text/html; SendGrid refuses an empty part."""
    parts = [{"type": "text/plain", "value": email.text}, {"type": "text/html", "value": email.html}]
    return [part for part in parts if part["value"]] or [{"type": "text/plain", "value": " "}]


def error_text(status: int, body: bytes | str | None) -> str:
    """SendGrid's own words from `{"errors": [{"message", "field"}]}`, else the raw body."""
    raw = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
    try:
        errors = json.loads(raw)["errors"]
        detail = "; ".join(
            f"{e.get('field')}: {e.get('message')}" if e.get("field") else str(e.get("message")) for e in errors
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        detail = " ".join(raw.split())[:500]
    return f"sendgrid {status}: {detail}" if detail else f"sendgrid {status}"


def bad_personalizations(body: bytes | str | None) -> dict[int, tuple[str, str]] | None:
    """Which personalizations a 400 blames (`personalizations.N...`), with the field and message;
    None when any error is about the request as a whole."""
    try:
        errors = json.loads(body or b"")["errors"]
        blamed: dict[int, tuple[str, str]] = {}
        for error in errors:
            path = str(error.get("field") or "")
            parts = path.split(".")
            if parts[0] != "personalizations" or len(parts) < 2 or not parts[1].isdigit():
                return None
            blamed[int(parts[1])] = (path, str(error.get("message")))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return blamed or None


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait: X-RateLimit-Reset is an epoch time, Retry-After seconds or an HTTP date."""
    if not headers:
        return None
    reset = headers.get("X-RateLimit-Reset")
    if reset:
        try:
            return max(0.0, float(reset) - time.time())
        except ValueError:
            pass
    return seconds_to_wait(headers.get("Retry-After"))


class SendgridSender(Sender):
    name = "sendgrid"
    acknowledges = MAX_PERSONALIZATIONS

    def __init__(self, config: Config):
        super().__init__(config)
        settings = config.sender.sendgrid
        api_key = self._secret("api_key_env", settings.api_key_env, "SendGrid API key")
        if not settings.base_url.startswith(("https://", "http://")):
            raise self._problem(f"sender.sendgrid.base_url: '{settings.base_url}' is not an http(s) URL")
        self.sandbox = settings.sandbox
        self.client = sendgrid.SendGridAPIClient(api_key, host=settings.base_url.rstrip("/"))

    def deliver(self, emails: list[OutgoingEmail]) -> list[SendResult]:
        results: list[SendResult] = []
        for request in plan_requests(emails):
            results.extend(self._post(request))
        return results

    def _post(self, emails: list[OutgoingEmail]) -> list[SendResult]:
        """One API call; a failure is sorted out from its status into results for each email."""
        try:
            response = self.client.client.mail.send.post(
                request_body=request_body(emails, self.sandbox), timeout=TIMEOUT
            )
        except HTTPError as exc:
            return self._refused(emails, exc)
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, timed out, cut short
            error = f"sendgrid unreachable: {exc or type(exc).__name__}"
            return [SendResult(e.send_id, ok=False, error=error, transient=True) for e in emails]
        message_id = response.headers.get("X-Message-Id") if response.headers else None
        return [
            SendResult(e.send_id, ok=True, message_id=f"{message_id}.{e.send_id}" if message_id else e.message_id)
            for e in emails
        ]

    def _refused(self, emails: list[OutgoingEmail], exc: HTTPError) -> list[SendResult]:
        status, body, headers = exc.status_code, exc.body, exc.headers
        if status == PAYLOAD_TOO_LARGE and len(emails) > 1:
            half = len(emails) // 2
            return self._post(emails[:half]) + self._post(emails[half:])
        if status == 400 and len(emails) > 1:
            blamed = bad_personalizations(body)
            if blamed and all(0 <= i < len(emails) for i in blamed):
                return self._without_blamed(emails, blamed)
        error = error_text(status, body)
        if status == 429 or status >= 500:
            wait, throttled = retry_after(headers), status == 429
            return [
                SendResult(e.send_id, ok=False, error=error, transient=True, retry_after=wait, throttled=throttled)
                for e in emails
            ]
        return [SendResult(e.send_id, ok=False, error=error) for e in emails]

    def _without_blamed(self, emails: list[OutgoingEmail], blamed: dict[int, tuple[str, str]]) -> list[SendResult]:
        """One bad address must not fail the other 999: fail those SendGrid named, resend the rest."""
        failed = [
            SendResult(
                emails[i].send_id,
                ok=False,
                error=f"sendgrid 400: {path}: {message}",
                invalid_address=path.endswith(".email") and ".to." in path,
            )
            for i, (path, message) in blamed.items()
        ]
        rest = [email for i, email in enumerate(emails) if i not in blamed]
        return failed + (self._post(rest) if rest else [])
