"""Sends through Mailgun's `messages.mime` API: the raw message every other sender emits, one call a
message (Mailgun takes no batch of raw messages) over one kept-alive connection per `with` block.

The send id rides as the user variable `send_id` (Mailgun returns it in `user-variables` of each
webhook event) and the campaign as the tag `o:tag`."""

from __future__ import annotations

import base64
import http.client
import json
import re
import secrets
from dataclasses import dataclass, replace
from urllib.parse import quote, urlsplit

from engine.config.settings import Config
from engine.mail.message import OutgoingEmail, one_line
from engine.senders.base import Sender, SendResult, Unreachable, seconds_to_wait

TIMEOUT = 30.0  # seconds for one API call; a hung socket must not stall the scheduler
MAX_TAG = 128  # Mailgun's limit on a tag's length
# Mailgun's words for a recipient it will not take, e.g. "'to' parameter is not a valid address".
INVALID_TO = re.compile(r"\bto'? parameter is not a valid address", re.IGNORECASE)
# A kept-alive connection the server has since closed fails like this before the request is read.
STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
ENDS_BATCH = {401, 403, 429}  # and every 5xx


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    retry_after: str | None


def form_data(email: OutgoingEmail, boundary: str) -> bytes:
    """multipart/form-data with the recipient, the raw message as a file, the send id and the tag."""
    fields = {"to": email.to, "v:send_id": str(email.send_id), "o:tag": email.campaign[:MAX_TAG]}
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{one_line(value)}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="message"; filename="message.mime"\r\n'
        "Content-Type: message/rfc822\r\n\r\n".encode()
        + email.raw
        + b"\r\n"
    )
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


def boundary_for(raw: bytes) -> str:
    """A boundary the message does not contain (a random one almost never does)."""
    while (boundary := f"lifecycle-{secrets.token_hex(16)}").encode() in raw:
        pass
    return boundary


def error_text(status: int, body: bytes) -> str:
    """Mailgun's own words from `{"message": ...}`, else the raw body."""
    raw = body.decode("utf-8", "replace")
    try:
        detail = str(json.loads(raw)["message"])
    except (ValueError, KeyError, TypeError):
        detail = raw
    detail = " ".join(detail.split())[:500]
    return f"mailgun {status}: {detail}" if detail else f"mailgun {status}"


def message_id(body: bytes, email: OutgoingEmail) -> str:
    """The id Mailgun queued the message under; the message's own when the answer lacks one."""
    try:
        return str(json.loads(body)["id"])
    except (ValueError, KeyError, TypeError):
        return email.message_id


def outcome(email: OutgoingEmail, answer: Answer) -> SendResult:
    if answer.status == 200:
        return SendResult(email.send_id, ok=True, message_id=message_id(answer.body, email))
    error = error_text(answer.status, answer.body)
    if answer.status == 429 or answer.status >= 500:
        wait = seconds_to_wait(answer.retry_after)
        throttled = answer.status == 429
        return SendResult(email.send_id, ok=False, error=error, transient=True, retry_after=wait, throttled=throttled)
    invalid = answer.status == 400 and bool(INVALID_TO.search(error))
    return SendResult(email.send_id, ok=False, error=error, invalid_address=invalid)


def unreachable(exc: Exception) -> Unreachable:
    """Refused, reset, timed out or cut short: no answer, so the message may go again later."""
    return Unreachable(f"mailgun unreachable: {exc or type(exc).__name__}")


class MailgunSender(Sender):
    name = "mailgun"

    def __init__(self, config: Config):
        super().__init__(config)
        settings = config.sender.mailgun
        api_key = self._secret("api_key_env", settings.api_key_env, "Mailgun API key")
        if not settings.domain:
            raise self._problem("sender.mailgun.domain: name the sending domain set up in Mailgun, like mg.example.com")
        url = urlsplit(settings.base_url)
        if url.scheme not in ("https", "http") or not url.hostname:
            raise self._problem(f"sender.mailgun.base_url: '{settings.base_url}' is not an http(s) URL")
        self.url = url
        self.path = f"{url.path.rstrip('/')}/v3/{quote(settings.domain, safe='')}/messages.mime"
        self.authorization = "Basic " + base64.b64encode(f"api:{api_key}".encode()).decode()
        self.connection: http.client.HTTPConnection | None = None

    def open(self) -> None:
        """Connect unless connected (the TCP and TLS handshakes happen at the first request)."""
        if self.connection is None:
            kind = http.client.HTTPSConnection if self.url.scheme == "https" else http.client.HTTPConnection
            self.connection = kind(self.url.hostname or "", self.url.port, timeout=TIMEOUT)

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def deliver(self, emails: list[OutgoingEmail]) -> list[SendResult]:
        """One call a message. An answer about the account or the service (a refused key, throttling,
        an outage) ends the batch with the same result for the rest: each further call would only be
        refused again or add to the load."""
        results: list[SendResult] = []
        for index, email in enumerate(emails):
            try:
                answer = self._post(email)
            except Unreachable as exc:
                return results + exc.results(emails[index:])
            result = outcome(email, answer)
            results.append(result)
            if answer.status in ENDS_BATCH or answer.status >= 500:
                return results + [replace(result, send_id=other.send_id) for other in emails[index + 1 :]]
        return results

    def _post(self, email: OutgoingEmail) -> Answer:
        """The call, tried again once on a fresh connection when the kept one turns out closed."""
        reused = self.connection is not None and self.connection.sock is not None
        try:
            return self._request(email)
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            if not (reused and isinstance(exc, STALE)):
                raise unreachable(exc) from exc
        try:
            return self._request(email)
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise unreachable(exc) from exc

    def _request(self, email: OutgoingEmail) -> Answer:
        self.open()
        assert self.connection is not None
        boundary = boundary_for(email.raw)
        self.connection.request(
            "POST",
            self.path,
            body=form_data(email, boundary),
            headers={
                "Authorization": self.authorization,
                "Content-Type": f"multipart/form-data; boundary={boundary}",
                "Accept": "application/json",
            },
        )
        response = self.connection.getresponse()
        return Answer(response.status, response.read(), response.getheader("Retry-After"))
