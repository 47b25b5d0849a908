"""Sends through Amazon SES's API v2 (boto3's `sesv2` client), one SendEmail call a message.

The content goes as Raw: the very bytes every other sender emits, headers and all, so the
`X-Lifecycle-Send-Id` header SES hands back in its events finds the send; a `send_id` message tag
says it again. boto3's own retries are off: a throttled or failed call comes back at once as a
transient result, and the engine's retry schedule decides when to try again.
"""

from __future__ import annotations

import os
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from engine.config.settings import Config
from engine.mail.message import OutgoingEmail
from engine.senders.base import Sender, SendResult

TIMEOUT = 30.0  # seconds to connect and to read; a hung socket must not stall the scheduler

# SES's error codes for "slow down", and those for a passing fault on its side.
THROTTLE_CODES = {
    "TooManyRequestsException",
    "Throttling",
    "ThrottlingException",
    "LimitExceededException",  # the daily quota or the sending rate: it passes
}
TRANSIENT_CODES = THROTTLE_CODES | {"ServiceUnavailable", "InternalFailure"}
# Codes SES uses for a malformed request; an address that is not one is among them.
BAD_REQUEST_CODES = {"BadRequestException", "InvalidParameterValue"}
ADDRESS_WORDS = ("address", "domain")


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def refused(email: OutgoingEmail, exc: ClientError) -> SendResult:
    """The result for a call SES answered with an error: transient when it may pass, else final."""
    code = error_code(exc)
    message = str(exc.response.get("Error", {}).get("Message", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    error = f"ses {code}: {message}" if message else f"ses {code}"
    if code in TRANSIENT_CODES or status == 429 or status >= 500:
        throttled = code in THROTTLE_CODES or status == 429
        return SendResult(email.send_id, ok=False, error=error, transient=True, throttled=throttled)
    invalid = code in BAD_REQUEST_CODES and any(word in message.lower() for word in ADDRESS_WORDS)
    return SendResult(email.send_id, ok=False, error=error, invalid_address=invalid)


class SesSender(Sender):
    name = "ses"

    def __init__(self, config: Config):
        super().__init__(config)
        settings = config.sender.ses
        key_id = os.environ.get(settings.access_key_id_env)
        secret = os.environ.get(settings.secret_access_key_env)
        for env, value in ((settings.access_key_id_env, key_id), (settings.secret_access_key_env, secret)):
            if not value:
                raise self._problem(
                    f"sender.ses: the environment variable {env} is not set; it holds the AWS credentials for SES"
                )
        if settings.endpoint_url and not settings.endpoint_url.startswith(("https://", "http://")):
            raise self._problem(f"sender.ses.endpoint_url: '{settings.endpoint_url}' is not an http(s) URL")
        self.configuration_set = settings.configuration_set
        self.client: Any = boto3.client(
            "sesv2",
            region_name=settings.region,
            endpoint_url=settings.endpoint_url,
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            config=BotoConfig(
                retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=TIMEOUT, read_timeout=TIMEOUT
            ),
        )

    def deliver(self, emails: list[OutgoingEmail]) -> list[SendResult]:
        return [self._send(email) for email in emails]

    def request(self, email: OutgoingEmail) -> dict[str, Any]:
        """SendEmail's parameters: the raw message, its envelope and the send id as a tag."""
        params: dict[str, Any] = {
            "FromEmailAddress": email.from_email,
            "Destination": {"ToAddresses": [email.to]},
            "Content": {"Raw": {"Data": email.raw}},
            "EmailTags": [
                {"Name": "send_id", "Value": str(email.send_id)},
                {"Name": "campaign", "Value": tag_value(email.campaign)},
            ],
        }
        if self.configuration_set:
            params["ConfigurationSetName"] = self.configuration_set
        return params

    def _send(self, email: OutgoingEmail) -> SendResult:
        try:
            response = self.client.send_email(**self.request(email))
        except ClientError as exc:
            return refused(email, exc)
        except BotoCoreError as exc:  # refused, reset, timed out: nothing SES said
            return SendResult(email.send_id, ok=False, error=f"ses unreachable: {exc}", transient=True)
        return SendResult(email.send_id, ok=True, message_id=response.get("MessageId") or email.message_id)


def tag_value(value: str) -> str:
    """SES allows only ASCII letters, digits, `_` and `-` in a tag (at most 256)."""
    cleaned = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "_-") else "_" for ch in value)
    return cleaned[:256] or "_"
