"""Sends over SMTP with smtplib: one connection, opened before a batch and kept across batches until `close`."""

from __future__ import annotations

import os
import re
import smtplib
import ssl
from dataclasses import replace

from engine.config.settings import Config
from engine.mail.message import OutgoingEmail
from engine.senders.base import Sender, SendResult, Unreachable
from engine.senders.verp import ReturnPaths

# Replies to RCPT that say the mailbox does not exist or cannot be named: suppress the address.
INVALID_ADDRESS_CODES = {550, 551, 553}

# A 4xx reply that asks us to slow down rather than saying one mailbox is busy: a policy code
# (4.7.x: "451 4.7.1 rate limit exceeded", Microsoft's "451 4.7.500 server busy") or its words.
SLOW_DOWN = re.compile(r"\b4\.7\.\d{1,3}\b|rate.?limit|too many|slow down|throttl", re.IGNORECASE)

# The connection broke under us (dropped, reset, timed out: all OSError); a fresh one may well
# deliver the same message.
Disconnected = (smtplib.SMTPServerDisconnected, OSError)


def tls_context() -> ssl.SSLContext:
    """The system's trusted CAs with hostname checks (a function so tests can trust their own CA)."""
    return ssl.create_default_context()


def decode(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return " ".join(text.split())


class Closing(smtplib.SMTPServerDisconnected):
    """The server answered 421: it is closing the channel, idle too long or asking us to slow down."""


def reply_result(send_id: int, code: int, reply: bytes | str, *, recipient: bool) -> SendResult:
    """5xx is final, anything else (4xx, garbled) is worth another try later; a 4xx that asks
    us to slow down is throttling."""
    error = f"smtp {code} {decode(reply)}"
    if 500 <= code < 600:
        return SendResult(send_id, ok=False, error=error, invalid_address=recipient and code in INVALID_ADDRESS_CODES)
    throttled = 400 <= code < 500 and bool(SLOW_DOWN.search(error))
    return SendResult(send_id, ok=False, error=error, transient=True, throttled=throttled)


def needs_smtputf8(email: OutgoingEmail, mail_from: str) -> bool:
    return not (mail_from.isascii() and email.to.isascii())


class SmtpSender(Sender):
    name = "smtp"
    signs = True

    def __init__(self, config: Config):
        super().__init__(config)
        self.settings = config.sender.smtp
        self.password = self._password()  # a missing secret fails at start, not mid-batch
        self.return_paths = ReturnPaths(config)
        self.connection: smtplib.SMTP | None = None

    def _password(self) -> str | None:
        if not self.settings.username:
            return None
        if not self.settings.password_env:
            raise self._problem(
                "sender.smtp.username is set but sender.smtp.password_env is not: "
                "name the environment variable that holds the SMTP password"
            )
        password = os.environ.get(self.settings.password_env)
        if password is None:
            raise self._problem(
                f"sender.smtp.password_env: the environment variable "
                f"{self.settings.password_env} is not set; it holds the SMTP password "
                f"for {self.settings.username}"
            )
        return password

    def open(self) -> None:
        self._connect()

    def deliver(self, emails: list[OutgoingEmail]) -> list[SendResult]:
        """Each message in turn; once the server says to slow down, the rest are not tried."""
        results: list[SendResult] = []
        for index, email in enumerate(emails):
            try:
                result = self._send_with_retry(email)
            except Unreachable as exc:  # a reconnection failed mid-batch
                results.extend(exc.results(emails[index:]))
                break
            results.append(result)
            if result.throttled:
                results.extend(replace(result, send_id=other.send_id) for other in emails[index + 1 :])
                break
        return results

    def close(self) -> None:
        """Say QUIT politely; a connection that is already gone is simply dropped."""
        if self.connection is None:
            return
        try:
            self.connection.quit()
        except (smtplib.SMTPException, OSError):
            self.connection.close()
        self.connection = None

    def _send_with_retry(self, email: OutgoingEmail) -> SendResult:
        """Servers drop idle or long-lived connections: reconnect once and try the message again.
        A fresh connection closed with 421 at once is the server asking us to slow down."""
        try:
            return self._send(email)
        except Disconnected:
            self._drop()
        try:
            return self._send(email)
        except Disconnected as exc:
            self._drop()
            if isinstance(exc, Closing):
                return SendResult(email.send_id, ok=False, transient=True, throttled=True, error=str(exc))
            return SendResult(
                email.send_id, ok=False, transient=True, error=f"smtp connection lost: {exc or type(exc).__name__}"
            )

    def _send(self, email: OutgoingEmail) -> SendResult:
        """One message; every reply the server can give maps to a result, broken links propagate."""
        connection = self._connect()
        # Bounces go to the envelope sender: the bounce address when one is configured, else From.
        mail_from = self.return_paths.for_send(email.send_id) or email.from_email
        options = ["SMTPUTF8"] if needs_smtputf8(email, mail_from) and connection.has_extn("smtputf8") else []
        try:
            connection.sendmail(mail_from, [email.to], email.raw, mail_options=options)
        except smtplib.SMTPRecipientsRefused as exc:
            code, reply = exc.recipients.get(email.to) or next(iter(exc.recipients.values()))
            return reply_result(email.send_id, code, reply, recipient=True)
        except smtplib.SMTPResponseException as exc:
            if exc.smtp_code == 421:  # "closing channel", often an idle timeout: a broken link
                self._drop()
                raise Closing(f"smtp 421 {decode(exc.smtp_error)}") from exc
            return reply_result(email.send_id, exc.smtp_code, exc.smtp_error, recipient=False)
        except smtplib.SMTPServerDisconnected:
            raise
        except (smtplib.SMTPException, UnicodeEncodeError) as exc:
            # The session may be mid-transaction: start the next message on a fresh connection.
            self._drop()
            return self._unsendable(email, exc)
        return SendResult(email.send_id, ok=True, message_id=email.message_id)

    def _unsendable(self, email: OutgoingEmail, exc: Exception) -> SendResult:
        if isinstance(exc, UnicodeEncodeError):
            return SendResult(
                email.send_id, ok=False, error=f"smtp: {email.to} needs SMTPUTF8, which the server does not offer"
            )
        return SendResult(email.send_id, ok=False, transient=True, error=f"smtp: {exc}")

    def _connect(self) -> smtplib.SMTP:
        """Reuse the open connection, or open, secure and log in to a new one."""
        if self.connection is not None:
            return self.connection
        host, port = self.settings.host, self.settings.port
        try:
            self.connection = self._open(host, port)
        except smtplib.SMTPAuthenticationError as exc:
            raise Unreachable(
                f"smtp login as {self.settings.username} refused by {host}:{port}: "
                f"{exc.smtp_code} {decode(exc.smtp_error)}"
            ) from exc
        except smtplib.SMTPNotSupportedError as exc:
            raise Unreachable(f"smtp server {host}:{port}: {exc}") from exc
        except smtplib.SMTPConnectError as exc:  # its greeting refused us; 421: too many connections or mail
            raise Unreachable(
                f"smtp server {host}:{port}: {exc.smtp_code} {decode(exc.smtp_error)}", throttled=exc.smtp_code == 421
            ) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise Unreachable(f"cannot connect to smtp server {host}:{port}: {exc or type(exc).__name__}") from exc
        return self.connection

    def _open(self, host: str, port: int) -> smtplib.SMTP:
        timeout = self.settings.timeout
        if self.settings.ssl:
            connection: smtplib.SMTP = smtplib.SMTP_SSL(host, port, timeout=timeout, context=tls_context())
        else:
            connection = smtplib.SMTP(host, port, timeout=timeout)
        try:
            connection.ehlo_or_helo_if_needed()
            if self.settings.starttls and not self.settings.ssl:
                connection.starttls(context=tls_context())
                connection.ehlo()
            if self.settings.username:
                connection.login(self.settings.username, self.password or "")
        except BaseException:
            connection.close()
            raise
        return connection

    def _drop(self) -> None:
        """Forget a connection that can no longer be trusted, without talking to it."""
        if self.connection is not None:
            self.connection.close()
            self.connection = None
