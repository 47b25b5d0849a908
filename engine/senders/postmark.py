"""Sends through Postmark's batch API (`POST /email/batch`), up to 500 messages a call.

Postmark answers a batch it accepted with one result per message, in order, so one bad address
fails only itself. Marketing mail (the kind that carries List-Unsubscribe) goes to the broadcast
message stream, the rest to the transactional one: Postmark keeps their reputations apart.
The standard library's HTTP client is enough for one JSON POST, so no client library is added."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from typing import Any

from engine.config.settings import Config
from engine.mail.message import OutgoingEmail, mailbox, one_line
from engine.senders.base import Sender, SendResult, seconds_to_wait

MAX_BATCH = 500  # Postmark refuses a batch with more
TIMEOUT = 30.0  # seconds for one API call; a hung socket must not stall the scheduler
OK = 0
# Per-message error codes that say the address itself cannot be mailed: 300 an invalid address,
# 406 an inactive recipient (bounced, complained or unsubscribed before).
INVALID_ADDRESS = {300, 406}
# Postmark refuses these in `Headers`; From, To, Subject and Reply-To have fields of their own.
RESERVED_HEADERS = {"to", "from", "subject", "reply-to", "cc", "bcc", "content-type", "content-transfer-encoding"}


def message(email: OutgoingEmail, stream: str) -> dict[str, Any]:
    """One message of the batch; the send id rides in Metadata (returned by every webhook) and a header."""
    headers = [
        {"Name": one_line(name), "Value": one_line(value)}
        for name, value in email.headers.items()
        if name.lower() not in RESERVED_HEADERS
    ]
    headers.append({"Name": "Message-ID", "Value": one_line(email.message_id)})
    body: dict[str, Any] = {
        "From": mailbox(email.from_name, email.from_email),
        "To": mailbox(email.to_name, email.to),
        "Subject": one_line(email.subject),
        "Headers": headers,
        "MessageStream": stream,
        "Metadata": {"send_id": str(email.send_id)},
    }
    if email.html:
        body["HtmlBody"] = email.html
    if email.text or not email.html:  # Postmark refuses a message with neither body
        body["TextBody"] = email.text or " "
    if email.headers.get("Reply-To"):
        body["ReplyTo"] = one_line(email.headers["Reply-To"])
    return body


def error_text(status: int, body: bytes) -> str:
    """Postmark's own words from `{"ErrorCode", "Message"}`, else the raw body."""
    raw = body.decode("utf-8", "replace")
    try:
        answer = json.loads(raw)
        detail = f"{answer['ErrorCode']} {answer['Message']}"
    except (ValueError, KeyError, TypeError):
        detail = " ".join(raw.split())[:500]
    return f"postmark {status}: {detail}" if detail else f"postmark {status}"


def result(email: OutgoingEmail, answer: Any) -> SendResult:
    """One message's outcome from its entry in Postmark's answer."""
    if not isinstance(answer, dict) or not isinstance(answer.get("ErrorCode"), int):
        return SendResult(email.send_id, ok=False, error=f"postmark: no result for this message in {answer!r:.200}")
    code = answer["ErrorCode"]
    if code == OK:
        return SendResult(email.send_id, ok=True, message_id=str(answer.get("MessageID") or email.message_id))
    return SendResult(
        email.send_id,
        ok=False,
        error=f"postmark {code}: {answer.get('Message')}",
        invalid_address=code in INVALID_ADDRESS,
    )


class PostmarkSender(Sender):
    name = "postmark"
    acknowledges = MAX_BATCH

    def __init__(self, config: Config):
        super().__init__(config)
        settings = config.sender.postmark
        token = self._secret("server_token_env", settings.server_token_env, "Postmark server API token")
        if not settings.base_url.startswith(("https://", "http://")):
            raise self._problem(f"sender.postmark.base_url: '{settings.base_url}' is not an http(s) URL")
        self.token = token
        self.url = settings.base_url.rstrip("/") + "/email/batch"
        self.marketing_stream = settings.message_stream_marketing
        self.transactional_stream = settings.message_stream_transactional

    def stream(self, email: OutgoingEmail) -> str:
        return self.marketing_stream if "List-Unsubscribe" in email.headers else self.transactional_stream

    def deliver(self, emails: list[OutgoingEmail]) -> list[SendResult]:
        results: list[SendResult] = []
        for start in range(0, len(emails), MAX_BATCH):
            results.extend(self._post(emails[start : start + MAX_BATCH]))
        return results

    def _post(self, emails: list[OutgoingEmail]) -> list[SendResult]:
        """One API call; its answer is sorted out into a result for each email."""
        body = json.dumps([message(email, self.stream(email)) for email in emails]).encode()
        request = urllib.request.Request(self.url, data=body, method="POST", headers=self._headers())
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                answer = response.read()
        except urllib.error.HTTPError as exc:
            wait = seconds_to_wait(exc.headers.get("Retry-After"))  # the header's name in any case
            return self._refused(emails, exc.code, exc.read(), wait)
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, timed out, cut short
            error = f"postmark unreachable: {exc or type(exc).__name__}"
            return [SendResult(e.send_id, ok=False, error=error, transient=True) for e in emails]
        try:
            answers = json.loads(answer)
        except ValueError:
            answers = None
        if not isinstance(answers, list) or len(answers) != len(emails):
            # Some may have gone: failing them for good is safer than sending twice.
            error = f"postmark 200: an answer that is not one result a message: {answer[:200]!r}"
            return [SendResult(e.send_id, ok=False, error=error) for e in emails]
        return [result(email, entry) for email, entry in zip(emails, answers, strict=True)]

    def _headers(self) -> dict[str, str]:
        return {
            "Accept": "application/json",
            "Content-Type": "application/json",
            "X-Postmark-Server-Token": self.token,
        }

    def _refused(self, emails: list[OutgoingEmail], status: int, body: bytes, wait: float | None) -> list[SendResult]:
        """The whole call refused: throttling and server errors pass, the rest (a bad token, 422) do not."""
        error = error_text(status, body)
        if status == 429 or status >= 500:
            throttled = status == 429
            return [
                SendResult(e.send_id, ok=False, error=error, transient=True, retry_after=wait, throttled=throttled)
                for e in emails
            ]
        return [SendResult(e.send_id, ok=False, error=error) for e in emails]
