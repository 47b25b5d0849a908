"""The base class every sender extends (after django-anymail's backends).

`Sender.send_batch` runs every send the same way: open the provider's connection if it has one,
hand the batch to the backend's `deliver`, time the call under the backend's `name`. A backend only
says how to talk to its provider. Closing is left to the caller's `with` block, because a
connection is worth keeping across the batches of one tick."""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import ClassVar, Self

from engine.config.settings import Config
from engine.errors import ConfigError, Problem
from engine.mail.dkim import Signer
from engine.mail.message import OutgoingEmail
from engine.metrics import SENDER_SECONDS

# Not a send of the ledger (whose ids start at 1): an alert to the operator, such as the
# deliverability guard's (engine/delivery/guard.py).
ALERT_SEND_ID = -1


@dataclass
class SendResult:
    """The outcome for one message. `transient` failures are retried; others are final. A
    `throttled` one is the provider saying to slow down (HTTP 429, a throttling error, SMTP 421):
    every daemon holds off, and the message waits without the try counting against it."""

    send_id: int
    ok: bool
    message_id: str | None = None
    error: str | None = None
    transient: bool = False
    retry_after: float | None = None  # seconds, when the provider said how long to wait
    invalid_address: bool = False
    throttled: bool = False


def seconds_to_wait(retry_after: str | None) -> float | None:
    """Seconds to wait from an HTTP Retry-After value: a number of seconds or an HTTP date."""
    if not retry_after:
        return None
    try:
        return max(0.0, float(retry_after))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(retry_after).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class Unreachable(Exception):
    """The provider cannot be reached or refused us: no message of the batch can go now.
    `throttled` when it refused us to slow us down (an SMTP server's 421 greeting)."""

    def __init__(self, message: str, throttled: bool = False):
        super().__init__(message)
        self.throttled = throttled

    def results(self, emails: list[OutgoingEmail]) -> list[SendResult]:
        """A transient failure for each message, since trying each would only multiply the wait."""
        return [
            SendResult(email.send_id, ok=False, error=str(self), transient=True, throttled=self.throttled)
            for email in emails
        ]


class Sender(ABC):
    """Delivers a batch of rendered messages; one bad recipient never fails the rest."""

    name: ClassVar[str] = "custom"  # the backend's label in metrics; a backend from elsewhere may keep this one
    # A backend that emits `OutgoingEmail.raw` as it is sets this: each message is DKIM-signed with
    # `config.dkim`'s keys before `deliver` sees it. Providers whose API builds the message sign themselves.
    signs: ClassVar[bool] = False
    # The most messages the tick hands `send_batch` at once and records together once they are
    # acknowledged: a daemon killed mid-batch leaves at most this many `unknown`. A backend whose
    # API takes many messages in one call raises it to that call's size: its call is the unit in flight.
    acknowledges: ClassVar[int] = 50

    def __init__(self, config: Config):
        self.config = config
        self.signer = Signer.of(config) if self.signs else None  # a missing or bad key fails at start

    def _problem(self, message: str) -> ConfigError:
        """A mistake in config.yaml's sender settings, found when the sender starts."""
        return ConfigError([Problem(str(self.config.root / "config.yaml"), 1, 1, message)])

    def _secret(self, key: str, env: str, what: str) -> str:
        """The value of the environment variable `env` that `sender.<name>.<key>` names, or the problem."""
        value = os.environ.get(env)
        if not value:
            raise self._problem(
                f"sender.{self.name}.{key}: the environment variable {env} is not set; it holds the {what}"
            )
        return value

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def send_batch(self, emails: list[OutgoingEmail]) -> list[SendResult]:
        """Deliver each message; return one result per message, in any order."""
        if not emails:
            return []
        started = time.perf_counter()
        try:
            self.open()
        except Unreachable as exc:
            results = exc.results(emails)
        else:
            if self.signer is not None:
                for email in emails:
                    email.raw = self.signer.sign(email.raw)
            results = self.deliver(emails)
        SENDER_SECONDS.labels(self.name).observe(time.perf_counter() - started)
        return results

    @abstractmethod
    def deliver(self, emails: list[OutgoingEmail]) -> list[SendResult]:
        """The backend's own part of `send_batch`: talk to the provider, once the connection is open."""

    def open(self) -> None:  # noqa: B027 - a hook: most providers hold no connection
        """Connect unless connected; raise Unreachable when the provider cannot be reached."""

    def close(self) -> None:  # noqa: B027 - a hook: most providers hold no connection
        """Release the connection held across batches; harmless when there is none."""
